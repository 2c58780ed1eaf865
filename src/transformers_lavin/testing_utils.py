"""Tiny, download-free LaVIN models and tokenizers for tests, the demo and examples."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import CLIPVisionConfig, LlamaConfig, PreTrainedTokenizerFast

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
