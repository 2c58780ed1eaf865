"""Assemble a LaVIN from a pretrained CLIP vision checkpoint and a pretrained causal LM."""

from __future__ import annotations

import os

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPVisionModel,
    PreTrainedConfig,
    PreTrainedTokenizerBase,
)

from .configuration_lavin import LavinConfig
from .modeling_lavin import LavinForConditionalGeneration, LavinMultiModalProjector
from .processing_lavin import LavinProcessor, lavin_image_processor


def lavin_processor(config: LavinConfig, tokenizer, image_token: str = "<image>") -> LavinProcessor:
    """LaVIN's processor for `config`: its image preprocessing at the vision tower's size and `tokenizer`."""
    return LavinProcessor(
        image_processor=lavin_image_processor(config.vision_config.image_size),
        tokenizer=tokenizer,
        image_token=image_token,
        num_image_tokens=config.num_image_tokens,
        image_prefix=config.image_prefix,
        no_image_text=config.no_image_text,
    )


def lavin_config_and_processor(
    vision_config: PreTrainedConfig,
    text_config: PreTrainedConfig,
    tokenizer: PreTrainedTokenizerBase,
    *,
    image_token: str = "<image>",
    vision_feature_layers: list[int] | None = None,
    projector_hidden_size: int = 128,
) -> tuple[LavinConfig, LavinProcessor]:
    """
    The one place where a CLIP vision config, a causal LM's config and its tokenizer become a LaVIN config and
    processor. Assembly from pretrained parts, the converter of reference checkpoints and the tiny test models all
    go through it, so they agree on the image token, the special token ids and the preprocessing.

    The tokenizer is updated in place: `image_token` is added when missing, and a missing pad token becomes the unk
    (else eos) token; LLaMA ships without one, batching needs it, and padding never gets a loss.

    Args:
        vision_config: The vision tower's config (`CLIPVisionConfig`).
        text_config: The language model's config.
        tokenizer: The language model's tokenizer.
        image_token: Placeholder token the processor writes where the visual tokens go.
        vision_feature_layers: Hidden states whose [CLS] tokens become the visual tokens (default: every 4th block).
        projector_hidden_size: Bottleneck of the projector (128 in LaVIN).

    Returns:
        `(config, processor)`.
    """
    if image_token not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [image_token]})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    config = LavinConfig(
        vision_config=vision_config,
        text_config=text_config,
        vision_feature_layers=vision_feature_layers,
        projector_hidden_size=projector_hidden_size,
        image_token_id=tokenizer.convert_tokens_to_ids(image_token),
        tie_word_embeddings=bool(getattr(text_config, "tie_word_embeddings", False)),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return config, lavin_processor(config, tokenizer, image_token)


def build_lavin_from_parts(
    vision_model: str | os.PathLike,
    language_model: str | os.PathLike,
    *,
    dtype: torch.dtype | str | None = None,
    vision_feature_layers: list[int] | None = None,
    projector_hidden_size: int = 128,
    image_token: str = "<image>",
    seed: int = 0,
    **from_pretrained_kwargs,
) -> tuple[LavinForConditionalGeneration, LavinProcessor]:
    """
    Build a LaVIN from pretrained parts: the vision tower and the LLM keep their weights, the projector and the
    modality embedding are freshly initialised (as the reference does before training).

    Args:
        vision_model: Hub id or local directory of a CLIP checkpoint (a full `CLIPModel` or a `CLIPVisionModel`),
            e.g. `"openai/clip-vit-large-patch14"`.
        language_model: Hub id or local directory of a causal LM with its tokenizer, e.g. a LLaMA in HF format.
        dtype: dtype for the pretrained parts (e.g. `torch.bfloat16`); the new parts follow it.
        vision_feature_layers: Hidden states whose [CLS] tokens become the visual tokens (default: every 4th block).
        projector_hidden_size: Bottleneck of the projector (128 in LaVIN).
        image_token: Placeholder token added to the tokenizer.
        seed: Seed for the new parts.
        from_pretrained_kwargs: Passed to both `from_pretrained` calls (e.g. `revision`, `token`, `cache_dir`).

    Returns:
        `(model, processor)`: a [`LavinForConditionalGeneration`] and a [`LavinProcessor`] ready to save.
    """
    vision = CLIPVisionModel.from_pretrained(vision_model, dtype=dtype, **from_pretrained_kwargs)
    causal_lm = AutoModelForCausalLM.from_pretrained(language_model, dtype=dtype, **from_pretrained_kwargs)
    tokenizer = AutoTokenizer.from_pretrained(language_model, **from_pretrained_kwargs)
    config, processor = lavin_config_and_processor(
        vision.config,
        causal_lm.config,
        tokenizer,
        image_token=image_token,
        vision_feature_layers=vision_feature_layers,
        projector_hidden_size=projector_hidden_size,
    )
    # Build the shell on the meta device and move the pretrained modules in: no second copy of the weights.
    with torch.device("meta"):
        model = LavinForConditionalGeneration(config)
    model.model.vision_tower = vision
    model.model.language_model = causal_lm.get_decoder()
    model.lm_head = causal_lm.get_output_embeddings()
    new_dtype = causal_lm.get_output_embeddings().weight.dtype
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    projector = LavinMultiModalProjector(config)
    for linear in (projector.linear_1, projector.linear_2):
        nn.init.xavier_uniform_(linear.weight)
        nn.init.zeros_(linear.bias)
    modality_embedding = nn.Embedding(2, config.text_config.hidden_size)
    nn.init.normal_(modality_embedding.weight)
    torch.random.set_rng_state(generator_state)
    model.model.multi_modal_projector = projector.to(new_dtype)
    model.model.modality_embedding = modality_embedding.to(new_dtype)
    meta = [name for name, param in model.named_parameters() if param.is_meta]
    if meta:
        raise RuntimeError(f"Assembly left parameters uninitialised: {meta[:5]}")
    model.eval()
    return model, processor


__all__ = ["build_lavin_from_parts", "lavin_config_and_processor", "lavin_processor"]
