"""The LaVIN base model from a LLaMA checkpoint and a CLIP checkpoint in Hugging Face format, built from state dicts.

No model is instantiated with real weights: the configs give the target layout (a model on the meta device), the
checkpoints are renamed onto it and checked key by key, and the result is written as safetensors shards.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from huggingface_hub import save_torch_state_dict
from safetensors.torch import load_file
from transformers import AutoConfig, AutoTokenizer, CLIPVisionConfig, GenerationConfig, PreTrainedConfig
from transformers.dynamic_module_utils import custom_object_save

from ..configuration_lavin import LavinConfig
from ..modeling_lavin import LavinForConditionalGeneration
from ..processing_lavin import LavinProcessor, lavin_image_processor
from .key_mapping import check_against
from .reference_format import LavinConversionError, ReferenceAdapter

IMAGE_TOKEN = "<image>"
# Entries of a full CLIPModel checkpoint that LaVIN does not use (it keeps the vision tower only).
_CLIP_UNUSED_PREFIXES = ("text_model.", "visual_projection.", "text_projection.", "logit_scale")


# ------------------------------------------------------------------------------------------------------ reading
def load_hf_state_dict(directory: str | Path) -> dict[str, torch.Tensor]:
    """
    All weights of a Hugging Face checkpoint directory (`model.safetensors`, sharded safetensors, or
    `pytorch_model.bin` files, the latter loaded with `weights_only=True`).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise LavinConversionError(f"{str(directory)!r} is not a directory; give a checkpoint directory in HF format.")
    for index_name, loader in (
        ("model.safetensors.index.json", load_file),
        ("pytorch_model.bin.index.json", _load_bin),
    ):
        index = directory / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(_read(directory / shard, loader))
            return state
    for name, loader in (("model.safetensors", load_file), ("pytorch_model.bin", _load_bin)):
        if (directory / name).is_file():
            return _read(directory / name, loader)
    raise LavinConversionError(
        f"No weights in {str(directory)!r}: expected model.safetensors, a sharded model.safetensors.index.json, or "
        "pytorch_model.bin (the layout save_pretrained writes)."
    )


def _load_bin(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _read(path: Path, loader) -> dict[str, torch.Tensor]:
    try:
        return dict(loader(str(path)))
    except Exception as error:  # any reader error means a damaged or foreign file
        raise LavinConversionError(
            f"Could not read weights from {str(path)!r} ({error}). Is the file complete?"
        ) from None


def load_text_config(llama_path: str | Path) -> PreTrainedConfig:
    """The LLM's config; it must be a decoder-only model transformers knows."""
    config = _load_config(llama_path, "LLaMA")
    if getattr(config, "model_type", None) in ("clip", "clip_vision_model", "lavin"):
        raise LavinConversionError(f"{str(llama_path)!r} holds a {config.model_type!r} model, not a LLaMA checkpoint.")
    if not hasattr(config, "num_hidden_layers") or not hasattr(config, "hidden_size"):
        raise LavinConversionError(f"{str(llama_path)!r} does not hold a decoder-only language model config.")
    return config


def load_vision_config(clip_path: str | Path) -> CLIPVisionConfig:
    """The vision config of a CLIPModel or CLIPVisionModel checkpoint."""
    config = _load_config(clip_path, "CLIP")
    if config.model_type == "clip":
        return config.vision_config
    if config.model_type != "clip_vision_model":
        raise LavinConversionError(
            f"{str(clip_path)!r} holds a {config.model_type!r} model; LaVIN needs a CLIP checkpoint (CLIPModel or "
            "CLIPVisionModel, e.g. openai/clip-vit-large-patch14)."
        )
    return config


def _load_config(path: str | Path, what: str) -> PreTrainedConfig:
    if not (Path(path) / "config.json").is_file():
        raise LavinConversionError(
            f"{str(path)!r} has no config.json; give the {what} checkpoint as a directory in Hugging Face format."
        )
    try:
        return AutoConfig.from_pretrained(path)
    except (ValueError, OSError, KeyError) as error:
        raise LavinConversionError(f"Could not read the {what} config in {str(path)!r}: {error}") from None


# ----------------------------------------------------------------------------------------------------- building
def build_processor(llama_path: str | Path, vision_config: CLIPVisionConfig, num_image_tokens: int) -> LavinProcessor:
    """The LLaMA tokenizer with `<image>` added, and LaVIN's image preprocessing at the CLIP image size."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(llama_path)
    except (ValueError, OSError) as error:
        raise LavinConversionError(f"Could not load the tokenizer from {str(llama_path)!r}: {error}") from None
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    return LavinProcessor(
        image_processor=lavin_image_processor(vision_config.image_size),
        tokenizer=tokenizer,
        image_token=IMAGE_TOKEN,
        num_image_tokens=num_image_tokens,
    )


def build_lavin_config(
    text_config: PreTrainedConfig, vision_config: CLIPVisionConfig, adapter: ReferenceAdapter, tokenizer
) -> LavinConfig:
    """LaVIN's config: the given LLM and CLIP, the projector width of the adapter, visual tokens from every 4th block."""
    config = LavinConfig(
        vision_config=vision_config,
        text_config=text_config,
        # The reference takes the [CLS] token after every 4th CLIP block.
        vision_feature_layers=list(range(4, vision_config.num_hidden_layers + 1, 4)),
        projector_hidden_size=adapter.projector_hidden_size,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        tie_word_embeddings=bool(getattr(text_config, "tie_word_embeddings", False)),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    dtype = getattr(text_config, "dtype", None)
    if dtype is not None:
        config.dtype = dtype
    return config


def expected_base_state(config: LavinConfig) -> dict[str, torch.Size]:
    """Keys and shapes of a `LavinForConditionalGeneration` state dict, from a model on the meta device."""
    with torch.device("meta"):
        model = LavinForConditionalGeneration(config)
    return {key: value.shape for key, value in model.state_dict().items()}


def lavin_base_state_dict(
    expected: dict[str, torch.Size],
    llama_state: dict[str, torch.Tensor],
    clip_state: dict[str, torch.Tensor],
    adapter: ReferenceAdapter,
    tie_word_embeddings: bool,
) -> dict[str, torch.Tensor]:
    """
    Rename the LLaMA (`LlamaForCausalLM`) and CLIP (`CLIPModel` / `CLIPVisionModel`) weights onto LaVIN's layout,
    add the adapter's projector and modality embedding, and check every key and shape against `expected`.
    """
    vision_prefix = _prefix_of(expected, "embeddings.patch_embedding.weight")
    text_prefix = _prefix_of(expected, "embed_tokens.weight")
    state: dict[str, torch.Tensor] = {}
    for key, tensor in llama_state.items():
        if key.endswith("rotary_emb.inv_freq"):  # a buffer some older checkpoints saved
            continue
        state[text_prefix + key.removeprefix("model.") if key != "lm_head.weight" else key] = tensor
    if "lm_head.weight" not in state and tie_word_embeddings:
        state["lm_head.weight"] = state.get(text_prefix + "embed_tokens.weight")
    for key, tensor in clip_state.items():
        if key.startswith(_CLIP_UNUSED_PREFIXES) or key.endswith("position_ids"):
            continue
        state[vision_prefix + key.removeprefix("vision_model.")] = tensor
    projector = _prefix_of(expected, "multi_modal_projector.linear_1.weight") + "multi_modal_projector."
    state[projector + "linear_1.weight"] = adapter.projector["conv_A.weight"]
    state[projector + "linear_1.bias"] = adapter.projector["conv_A.bias"]
    state[projector + "linear_2.weight"] = adapter.projector["conv_B.weight"]
    state[projector + "linear_2.bias"] = adapter.projector["conv_B.bias"]
    state[_prefix_of(expected, "modality_embedding.weight") + "modality_embedding.weight"] = adapter.modality_embedding
    check_against(state, expected, "The LLaMA + CLIP checkpoints", "the LaVIN model their configs describe")
    return state


def write_base(
    directory: Path,
    config: LavinConfig,
    state: dict[str, torch.Tensor],
    processor: LavinProcessor,
    max_shard_size: str = "5GB",
) -> None:
    """Write what `model.save_pretrained` + `processor.save_pretrained` would, without building the model."""
    config.save_pretrained(directory)
    with torch.device("meta"):
        # Copies the modeling code beside the weights (auto_map), for users without this package.
        custom_object_save(LavinForConditionalGeneration(config), directory, config=config)
    GenerationConfig.from_model_config(config).save_pretrained(directory)
    save_torch_state_dict(state, directory, max_shard_size=max_shard_size)
    processor.save_pretrained(directory)


def _prefix_of(expected: dict[str, torch.Size], suffix: str) -> str:
    matches = [key[: -len(suffix)] for key in expected if key.endswith(suffix)]
    if len(matches) != 1:
        raise LavinConversionError(f"The LaVIN layout has {len(matches)} keys ending in {suffix!r}; expected one.")
    return matches[0]
