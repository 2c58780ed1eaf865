"""Tiny, download-free LaVIN models (and other vision-language models) and tokenizers for tests, the demo and
examples."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForImageTextToText,
    CLIPVisionConfig,
    Gemma3Config,
    Gemma3TextConfig,
    LlamaConfig,
    LlavaConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    SiglipVisionConfig,
)

from .assembly import lavin_config_and_processor, lavin_processor
from .configuration_lavin import LavinConfig
from .modeling_lavin import LavinForConditionalGeneration
from .processing_lavin import LavinProcessor

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]


def _as_lavin_tokenizer(backend: Tokenizer, model_max_length: int) -> PreTrainedTokenizerFast:
    """Wrap a byte-level `tokenizers` backend with LaVIN's special tokens, `<image>` added last."""
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=model_max_length,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return tokenizer


def build_byte_tokenizer(model_max_length: int = 2048) -> PreTrainedTokenizerFast:
    """
    A byte-level tokenizer (every byte is a token, no merges) that needs no download: ids 0-3 are `<unk>`, `<s>`,
    `</s>`, `<pad>`, ids 4-259 the bytes, and `<image>` is added last as a special token.
    """
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for symbol in sorted(alphabet):
        vocab[symbol] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    return _as_lavin_tokenizer(backend, model_max_length)


def build_word_tokenizer(
    texts: Iterable[str], vocab_size: int = 1500, model_max_length: int = 2048
) -> PreTrainedTokenizerFast:
    """
    A byte-level BPE tokenizer trained on `texts` in well under a second, with the special tokens of
    [`build_byte_tokenizer`]: frequent words become single tokens, as in a real LLM's vocabulary, and any text still
    encodes (every byte is in the alphabet).
    """
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    return _as_lavin_tokenizer(backend, model_max_length)


def tiny_lavin_config(
    text_hidden_size: int = 32,
    text_layers: int = 2,
    vision_hidden_size: int = 32,
    vision_layers: int = 4,
    image_size: int = 30,
    patch_size: int = 6,
    vision_feature_layers: list[int] | None = None,
    projector_hidden_size: int = 16,
    vocab_size: int | None = None,
    tokenizer: PreTrainedTokenizerFast | None = None,
    **text_overrides,
) -> LavinConfig:
    """A LaVIN config small enough for CPU tests, with `tokenizer`'s vocabulary (the byte tokenizer's by default)."""
    tokenizer = tokenizer or build_byte_tokenizer()
    text_config = LlamaConfig(
        vocab_size=vocab_size or len(tokenizer) - 1,  # the image token stays outside the LLM's vocabulary
        hidden_size=text_hidden_size,
        intermediate_size=text_hidden_size * 2,
        num_hidden_layers=text_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **text_overrides,
    )
    vision_config = CLIPVisionConfig(
        hidden_size=vision_hidden_size,
        intermediate_size=vision_hidden_size * 2,
        num_hidden_layers=vision_layers,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
    )
    config, _ = lavin_config_and_processor(
        vision_config,
        text_config,
        tokenizer,
        vision_feature_layers=vision_feature_layers or [2, 4],
        projector_hidden_size=projector_hidden_size,
    )
    return config


def build_tiny_lavin(
    seed: int = 0,
    config: LavinConfig | None = None,
    tokenizer: PreTrainedTokenizerFast | None = None,
    **config_kwargs,
) -> tuple[LavinForConditionalGeneration, LavinProcessor]:
    """A randomly initialised tiny LaVIN and its processor (byte tokenizer by default), deterministic for a seed."""
    tokenizer = tokenizer or build_byte_tokenizer()
    config = config or tiny_lavin_config(tokenizer=tokenizer, **config_kwargs)
    torch.manual_seed(seed)
    model = LavinForConditionalGeneration(config).eval()
    return model, lavin_processor(config, tokenizer)


# The tiny vision-language models MMA is tested on, besides LaVIN. Their image token is the vocabulary's last id.
TINY_VLM_TYPES = ("llava", "gemma3")


def tiny_vlm_config(
    model_type: str,
    hidden_size: int = 32,
    layers: int = 2,
    image_size: int = 30,
    patch_size: int = 6,
    vocab_size: int = 100,
) -> PretrainedConfig:
    """
    The config of a tiny `AutoModelForImageTextToText` for CPU tests: `"llava"` (CLIP vision tower, LLaMA LLM, one
    token per image patch) or `"gemma3"` (SigLIP vision tower, Gemma 3 LLM, the patches pooled to 4 tokens).

    Ids 0, 1, 2 are padding, BOS and EOS; the image token is `vocab_size - 1` (`config.image_token_id`).
    """
    common = {"hidden_size": hidden_size, "intermediate_size": 2 * hidden_size, "num_attention_heads": 4}
    vision = {**common, "num_hidden_layers": layers, "image_size": image_size, "patch_size": patch_size}
    text = {**common, "num_hidden_layers": layers, "num_key_value_heads": 2, "vocab_size": vocab_size}
    text.update(pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if model_type == "llava":
        return LlavaConfig(
            vision_config=CLIPVisionConfig(**vision),
            text_config=LlamaConfig(**text),
            image_token_index=vocab_size - 1,
            vision_feature_layer=-1,
            vision_feature_select_strategy="default",
        )
    if model_type == "gemma3":
        return Gemma3Config(
            vision_config=SiglipVisionConfig(**vision, vision_use_head=False),
            text_config=Gemma3TextConfig(**text, head_dim=hidden_size // 4),
            mm_tokens_per_image=4,
            image_token_index=vocab_size - 1,
            boi_token_index=vocab_size - 3,
            eoi_token_index=vocab_size - 2,
        )
    raise ValueError(f"Unknown tiny VLM type {model_type!r}; use one of {TINY_VLM_TYPES}.")


def tiny_vlm_image_tokens(config: PretrainedConfig) -> int:
    """How many image tokens a prompt holds per image for a [`tiny_vlm_config`] model."""
    if config.model_type == "gemma3":
        return config.mm_tokens_per_image
    return (config.vision_config.image_size // config.vision_config.patch_size) ** 2


def build_tiny_vlm(model_type: str, seed: int = 0, **config_kwargs) -> PreTrainedModel:
    """A randomly initialised tiny VLM of [`tiny_vlm_config`], in eval mode, deterministic for a seed."""
    config = tiny_vlm_config(model_type, **config_kwargs)
    torch.manual_seed(seed)
    return AutoModelForImageTextToText.from_config(config).eval()
