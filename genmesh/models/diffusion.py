"""Tiny diffusion models built from configs with seeded random weights.

Each builder writes a complete diffusers directory (``model_index.json``, safetensors, tokenizer
files) that loads back through ``DiffusionPipeline.from_pretrained`` exactly like real weights, so
offline machines and tests exercise the same code path as production. Outputs are noise, shapes
and plumbing are real. Same builder -> same weights, byte for byte.
"""
from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from transformers.convert_slow_tokenizer import bytes_to_unicode  # GPT-2's byte <-> char table

SEED = 0

# Tokens the tiny tokenizer merges beyond single bytes, so common words take one or two ids the
# way they do with the real CLIP vocabulary. Order is merge priority.
_MERGES: tuple[tuple[str, str], ...] = (
    ("t", "h"), ("th", "e</w>"), ("a", "n"), ("an", "d</w>"), ("i", "n"), ("in", "g</w>"),
    ("o", "f</w>"), ("o", "n</w>"), ("e", "r</w>"), ("c", "a"), ("ca", "t</w>"), ("d", "o"),
    ("do", "g</w>"), ("r", "e"), ("e", "d</w>"), ("a", "t</w>"),
)



def _write_tokenizer_files(directory: Path) -> int:
    """Write a CLIP-style byte-level BPE vocabulary; return its size."""
    symbols = sorted(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in symbols + [s + "</w>" for s in symbols] + [a + b for a, b in _MERGES]:
        vocab.setdefault(token, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in _MERGES)
    (directory / "merges.txt").write_text(merges, encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
    }), encoding="utf-8")
    return len(vocab)


def _text_components() -> tuple[object, object]:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        vocab_size = _write_tokenizer_files(Path(tmp))
        tokenizer = CLIPTokenizer.from_pretrained(tmp)
    torch.manual_seed(SEED)
    config = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config).eval(), tokenizer


def _vae() -> object:
    from diffusers import AutoencoderKL

    torch.manual_seed(SEED)
    # Four levels like SD's VAE, so one latent pixel covers 8x8 image pixels as with real weights.
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16), norm_num_groups=8, layers_per_block=1, sample_size=64,
    ).eval()


def _unet() -> object:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(SEED)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
        attention_head_dim=8, norm_num_groups=32,
    ).eval()


def _sd_scheduler_config() -> dict[str, object]:
    # Stable Diffusion 1.x's training schedule; samplers are swapped per request from this config.
    return {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "timestep_spacing": "leading", "steps_offset": 1}


def build_tiny_sd(directory: Path) -> None:
    """A Stable Diffusion 1.x-shaped text-to-image pipeline (~4.5 MB), saved as safetensors."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    text_encoder, tokenizer = _text_components()
    pipe = StableDiffusionPipeline(
        vae=_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=_unet(),
        scheduler=EulerDiscreteScheduler.from_config(_sd_scheduler_config()),
        safety_checker=None, feature_extractor=None, image_encoder=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(directory, safe_serialization=True)


def build_tiny_t2v(directory: Path) -> None:
    """An AnimateDiff text-to-video pipeline: the tiny SD components plus a tiny motion adapter.

    AnimateDiff (not the deprecated TextToVideoSDPipeline) is diffusers' maintained UNet video
    pipeline; it shares SD's VAE latent space, so image previews and decoding carry over.
    """
    from diffusers import AnimateDiffPipeline, DDIMScheduler, MotionAdapter

    text_encoder, tokenizer = _text_components()
    unet = _unet()
    torch.manual_seed(SEED)
    adapter = MotionAdapter(
        block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=2,
        motion_norm_num_groups=32, motion_max_seq_length=32,  # as released adapters
    ).eval()
    # AnimateDiff's recommended sampler: DDIM on a linear beta schedule with linspace spacing.
    scheduler = DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="linear",
        clip_sample=False, timestep_spacing="linspace", steps_offset=1,
    )
    pipe = AnimateDiffPipeline(
        vae=_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        motion_adapter=adapter, scheduler=scheduler,
    )
    pipe.save_pretrained(directory, safe_serialization=True)


BUILDERS: dict[str, Callable[[Path], None]] = {
    "genmesh/tiny-sd": build_tiny_sd,
    "genmesh/tiny-t2v": build_tiny_t2v,
}
