"""
Checks on an adapter directory (`adapter_config.json` + `adapter_model.safetensors`) before any layer is built.

PEFT builds every adapter layer from the config and only then reads the weights, so a config asking for sizes its
weights do not have allocates them first (`adapter_hidden_size=2**28` asks for tens of GiB on a tiny model). The
weights' shapes are in the safetensors header: they are compared with the config here, reading no tensor data.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_WEIGHTS_NAME = "adapter_model.bin"


def read_adapter_config(directory: str | Path) -> dict[str, Any]:
    """`adapter_config.json` of a local adapter directory as a dict, with a clear error when it is not one."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"No {CONFIG_NAME} in {directory}: give a directory written by PeftModel.save_pretrained."
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); rewrite it with PeftModel.save_pretrained.") from error
    if not isinstance(config, dict):
        raise ValueError(f"{path} holds a JSON {type(config).__name__}, not an object of adapter settings.")
    return config


def adapter_weight_shapes(directory: str | Path) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor in `adapter_model.safetensors`, read from its header alone."""
    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        if (Path(directory) / PICKLE_WEIGHTS_NAME).is_file():
            raise ValueError(
                f"{directory} holds only {PICKLE_WEIGHTS_NAME}, a pickle, which is never loaded (it can run code). "
                f"Convert it to {WEIGHTS_NAME} where you trust it, or ask its author for safetensors weights."
            )
        raise FileNotFoundError(f"No {WEIGHTS_NAME} in {directory}: give a directory written by save_pretrained.")
    try:
        with safe_open(str(path), framework="pt") as weights:
            return {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as error:
        raise ValueError(
            f"{path.resolve()} is not a complete safetensors file ({error}); the download or copy may have been cut "
            "short: fetch or save the adapter again."
        ) from error


def _mismatch(field: str, asked: int, found: int, tensor: str, path: Path) -> ValueError:
    return ValueError(
        f"{path / CONFIG_NAME}: {field}={asked} does not match the weights ({tensor} in {WEIGHTS_NAME} has {found}); "
        "the config or the weights were changed after saving: save the adapter again."
    )


def _positive_int(config: dict[str, Any], field: str, default: int, path: Path) -> int:
    value = config.get(field, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{path / CONFIG_NAME}: {field} must be a positive integer, got {value!r}.")
    return value


def _lora_rank_for(module: str, rank_pattern: dict[str, Any], r: int, path: Path) -> tuple[str, int]:
    """The config field that sets `module`'s rank (PEFT's `rank_pattern` match, else `r`) and its value."""
    from peft.utils.other import get_pattern_key

    try:
        key = get_pattern_key(list(rank_pattern), module)
    except re.error as error:
        raise ValueError(f"{path / CONFIG_NAME}: a rank_pattern key is not a valid pattern ({error}).") from error
    if key not in rank_pattern:
        return "r", r
    field = f"rank_pattern[{key!r}]"
    value = rank_pattern[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{path / CONFIG_NAME}: {field} must be a positive integer, got {value!r}.")
    return field, value


def check_adapter_sizes(config: dict[str, Any], shapes: dict[str, tuple[int, ...]], directory: str | Path) -> None:
    """
    Refuses a config whose layer sizes differ from the weights' (MMA's `adapter_hidden_size` and `groups`, LoRA's
    `r` and `rank_pattern`), so that PEFT never allocates layers the weights cannot fill.
    """
    directory = Path(directory)
    peft_type = str(config.get("peft_type", "")).upper()
    marker = {"MMA": ".mma_", "LORA": ".lora_"}.get(peft_type)
    if marker and shapes and not any(marker in name for name in shapes):
        raise ValueError(
            f"{directory / CONFIG_NAME} says peft_type {peft_type}, but {WEIGHTS_NAME} holds no {marker.strip('.')}* "
            "tensors: the config belongs to another adapter. Save the adapter again."
        )
    if peft_type == "MMA":
        hidden = _positive_int(config, "adapter_hidden_size", 8, directory)
        groups = _positive_int(config, "groups", 2, directory)
        for name, shape in shapes.items():
            if name.endswith("mma_down.weight") and shape[0] != hidden:
                raise _mismatch("adapter_hidden_size", hidden, shape[0], name, directory)
            if ".mma_up_" in name and name.endswith(".weight") and len(shape) == 2 and shape[1] * groups != hidden:
                raise _mismatch("adapter_hidden_size / groups", hidden // groups, shape[1], name, directory)
    elif peft_type == "LORA":
        r = _positive_int(config, "r", 8, directory)
        rank_pattern = config.get("rank_pattern") or {}
        if not isinstance(rank_pattern, dict):
            raise ValueError(f"{directory / CONFIG_NAME}: rank_pattern must be an object (module pattern -> rank).")
        # Each layer gets the rank PEFT will give it (its rank_pattern entry, else r): that of its lora_A weight.
        for name, shape in shapes.items():
            if ".lora_A" in name and name.endswith(".weight"):
                module = name.split(".lora_A")[0].removeprefix("base_model.model.")
                field, rank = _lora_rank_for(module, rank_pattern, r, directory)
                if shape[0] != rank:
                    raise _mismatch(field, rank, shape[0], name, directory)


def check_adapter_directory(directory: str | Path) -> dict[str, Any]:
    """
    Checks a local adapter directory before PEFT builds anything from it: a readable config, safetensors weights
    with a complete header, and sizes that match. Returns the config.
    """
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    config = read_adapter_config(directory)
    peft_type = config.get("peft_type")
    if not isinstance(peft_type, str) or peft_type not in PEFT_TYPE_TO_CONFIG_MAPPING:
        raise ValueError(
            f"{Path(directory) / CONFIG_NAME}: unknown peft_type {peft_type!r}; this installation knows "
            f"{', '.join(sorted(name.value for name in PEFT_TYPE_TO_CONFIG_MAPPING))}."
        )
    check_adapter_sizes(config, adapter_weight_shapes(directory), directory)
    return config
