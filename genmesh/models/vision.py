"""Builders for tiny vision-language models with seeded random weights, for offline machines and tests.

Each builder writes a directory that `from_pretrained(dir)` loads exactly like a downloaded
checkpoint (safetensors weights, processor, tokenizer, chat template), so the serving code path
is the one real LLaVA weights (e.g. llava-hf/llava-1.5-7b-hf) take.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration,
                          LlavaProcessor, PreTrainedTokenizerFast)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

SEED = 0
IMAGE_TOKEN = "<image>"
PAD_TOKEN = "<|endoftext|>"
BOS_TOKEN = "<|im_start|>"
EOS_TOKEN = "<|im_end|>"

# Tiny geometry: a 32x32 image in 8x8 patches gives 16 patch features (+1 CLS that the "default"
# strategy drops), so every image costs 16 prompt tokens, like 576 for llava-1.5 at 336/14.
IMAGE_SIZE = 32
PATCH_SIZE = 8
IMAGE_SEQ_LENGTH = (IMAGE_SIZE // PATCH_SIZE) ** 2
CONTEXT_LENGTH = 1024

# ChatML with images placed where their content part sits. Content is always a list of parts
# here (the serving code normalises strings), as the llava-hf templates also expect.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# A small corpus so the byte-level BPE learns real merges (prompts tokenise to words, not bytes).
_CORPUS = [
    "Describe this image in detail.",
    "What is in the picture? There is a red square on a white background.",
    "A photo of a cat sitting on a wooden chair next to the window.",
    "The dog runs across the green field under a blue sky.",
    "Please answer the question about the image in one short sentence.",
    "You are a helpful assistant that looks at images and answers questions.",
    "How many objects can you see? I can see three objects on the table.",
    "The quick brown fox jumps over the lazy dog.",
    "A city street at night with cars, lights and people walking.",
    "What colour is the car? The car is yellow and parked near a tree.",
]


def build_tiny_llava(out_dir: Path) -> None:
    """A LLaVA (tiny CLIP vision tower + tiny Llama) with a CLIP image processor and BPE tokenizer."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer()
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                           crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=CHAT_TEMPLATE, image_token=IMAGE_TOKEN)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=32)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=CONTEXT_LENGTH,
                       bos_token_id=tokenizer.convert_tokens_to_ids(BOS_TOKEN),
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                         image_seq_length=IMAGE_SEQ_LENGTH, vision_feature_select_strategy="default",
                         vision_feature_layer=-2)
    # Seeded on a private generator state so building never disturbs (or depends on) the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = LlavaForConditionalGeneration(config).eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)


def _build_tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, show_progress=False,
                                  special_tokens=[PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, IMAGE_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(_CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=None, eos_token=EOS_TOKEN,
                                   pad_token=PAD_TOKEN, extra_special_tokens={"image_token": IMAGE_TOKEN},
                                   model_max_length=CONTEXT_LENGTH)


BUILDERS: dict[str, Callable[[Path], None]] = {
    "genmesh/tiny-llava": build_tiny_llava,
}
