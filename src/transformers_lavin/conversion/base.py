"""The LaVIN base model from a LLaMA checkpoint and a CLIP checkpoint in Hugging Face format, built from state dicts.

The checkpoints are renamed onto LaVIN's layout and loaded with `load_state_dict(strict=True, assign=True)` into a
model built on the meta device, so the weights are never copied; the model is then saved as safetensors shards.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoTokenizer, CLIPVisionConfig, PreTrainedConfig

from ..assembly import lavin_config_and_processor
from ..configuration_lavin import LavinConfig
from ..modeling_lavin import LavinForConditionalGeneration
from ..processing_lavin import LavinProcessor
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
            state: dict[str, torch.Tensor] = {}
            for shard in _shard_names(index):
                state.update(_read(directory / shard, loader))
            return state
    for name, loader in (("model.safetensors", load_file), ("pytorch_model.bin", _load_bin)):
        if (directory / name).is_file():
            return _read(directory / name, loader)
    raise LavinConversionError(
        f"No weights in {str(directory)!r}: expected model.safetensors, a sharded model.safetensors.index.json, or "
        "pytorch_model.bin (the layout save_pretrained writes)."
    )


def read_json_file(path: Path, what: str) -> Any:
    """A JSON file's content, or a `LavinConversionError` saying why it cannot be read."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LavinConversionError(f"{what} {str(path)!r} is not valid JSON ({error}); save it again.") from None
    except RecursionError:
        raise LavinConversionError(f"{what} {str(path)!r} is nested too deeply to be a real one.") from None


def _shard_names(index: Path) -> list[str]:
    """The shard files an index names, each a plain file name beside the index (never a path elsewhere)."""
    weight_map = read_json_file(index, "The shard index")
    weight_map = weight_map.get("weight_map") if isinstance(weight_map, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(name, str) for name in weight_map.values()):
        raise LavinConversionError(
            f"The shard index {str(index)!r} has no 'weight_map' of tensor names to shard file names; save the model "
            "again with save_pretrained."
        )
    shards = sorted(set(weight_map.values()))
    outside = [name for name in shards if Path(name).name != name or name in ("", ".", "..")]
    if outside:
        raise LavinConversionError(
            f"The shard index {str(index)!r} names shards outside its directory ({outside[:3]}); shard names must be "
            "plain file names beside the index."
        )
    return shards


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
def load_tokenizer(llama_path: str | Path):
    try:
        return AutoTokenizer.from_pretrained(llama_path)
    except (ValueError, OSError) as error:
        raise LavinConversionError(f"Could not load the tokenizer from {str(llama_path)!r}: {error}") from None


def build_lavin_config(
    text_config: PreTrainedConfig, vision_config: CLIPVisionConfig, adapter: ReferenceAdapter, tokenizer
) -> tuple[LavinConfig, LavinProcessor]:
    """LaVIN's config and processor for the given LLM and CLIP, with the projector width of the adapter."""
    config, processor = lavin_config_and_processor(
        vision_config,
        text_config,
        tokenizer,
        image_token=IMAGE_TOKEN,
        # The reference takes the [CLS] token after every 4th CLIP block.
        vision_feature_layers=list(range(4, vision_config.num_hidden_layers + 1, 4)),
        projector_hidden_size=adapter.projector_hidden_size,
    )
    dtype = getattr(text_config, "dtype", None)
    if dtype is not None:
        config.dtype = dtype
    return config, processor


def lavin_base_state_dict(
    config: LavinConfig,
    llama_state: dict[str, torch.Tensor],
    clip_state: dict[str, torch.Tensor],
    adapter: ReferenceAdapter,
) -> dict[str, torch.Tensor]:
    """
    Rename the LLaMA (`LlamaForCausalLM`) and CLIP (`CLIPModel` / `CLIPVisionModel`) weights onto LaVIN's layout
    and add the adapter's projector and modality embedding.
    """
    with torch.device("meta"):
        keys = list(LavinForConditionalGeneration(config).state_dict())
    vision_prefix = _prefix_of(keys, "embeddings.patch_embedding.weight")
    text_prefix = _prefix_of(keys, "embed_tokens.weight")
    state: dict[str, torch.Tensor] = {}
    for key, tensor in llama_state.items():
        if key.endswith("rotary_emb.inv_freq"):  # a buffer some older checkpoints saved
            continue
        state[text_prefix + key.removeprefix("model.") if key != "lm_head.weight" else key] = tensor
    if "lm_head.weight" not in state and config.tie_word_embeddings:
        state["lm_head.weight"] = state.get(text_prefix + "embed_tokens.weight")
    for key, tensor in clip_state.items():
        if key.startswith(_CLIP_UNUSED_PREFIXES) or key.endswith("position_ids"):
            continue
        state[vision_prefix + key.removeprefix("vision_model.")] = tensor
    projector = _prefix_of(keys, "multi_modal_projector.linear_1.weight") + "multi_modal_projector."
    state[projector + "linear_1.weight"] = adapter.projector["conv_A.weight"]
    state[projector + "linear_1.bias"] = adapter.projector["conv_A.bias"]
    state[projector + "linear_2.weight"] = adapter.projector["conv_B.weight"]
    state[projector + "linear_2.bias"] = adapter.projector["conv_B.bias"]
    state[_prefix_of(keys, "modality_embedding.weight") + "modality_embedding.weight"] = adapter.modality_embedding
    return state


def build_base_model(config: LavinConfig, state: dict[str, torch.Tensor]) -> LavinForConditionalGeneration:
    """
    The LaVIN base model holding `state`, as transformers' own conversion scripts build one: a model on the meta
    device, then `load_state_dict(strict=True, assign=True)`, so the checkpoint tensors are used without a copy.

    Raises:
        LavinConversionError: when keys are missing or unexpected, or a shape does not fit the configs.
    """
    with torch.device("meta"):
        model = LavinForConditionalGeneration(config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as error:
        raise LavinConversionError(
            f"The LLaMA + CLIP checkpoints do not match the LaVIN model their configs describe: {error}"
        ) from None
    model.tie_weights()
    return model.eval()


def write_base(
    directory: Path, model: LavinForConditionalGeneration, processor: LavinProcessor, max_shard_size: str = "5GB"
) -> None:
    """Save the base model (config, code files with `auto_map`, safetensors shards) and its processor."""
    model.save_pretrained(directory, max_shard_size=max_shard_size)
    processor.save_pretrained(directory)


def _prefix_of(keys: list[str], suffix: str) -> str:
    matches = [key[: -len(suffix)] for key in keys if key.endswith(suffix)]
    if len(matches) != 1:
        raise LavinConversionError(f"The LaVIN layout has {len(matches)} keys ending in {suffix!r}; expected one.")
    return matches[0]
