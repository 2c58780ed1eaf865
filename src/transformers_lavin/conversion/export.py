"""This package's MMA adapter -> a reference LaVIN adapter checkpoint, so the reference code can evaluate it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from peft import PeftModel, get_peft_model_state_dict
from safetensors.torch import load_file

from ..mma import MMAConfig
from .base import read_json_file
from .key_mapping import peft_to_reference
from .reference_format import LavinConversionError, parse_reference_adapter
from .staging import apply_umask, check_target

# The reference builds every router adapter with groups=2 and cannot be told otherwise.
REFERENCE_GROUPS = 2


def export_to_reference(
    adapter: str | Path | PeftModel, output_path: str | Path, adapter_name: str = "default", overwrite: bool = False
) -> str:
    """
    Write an MMA adapter of a LaVIN model as a reference LaVIN checkpoint: `torch.save({"model": tensors})` with the
    reference's key names and Conv1d shapes, fp32, plain tensors only (the reference's `eval.py` reads
    `checkpoint["model"]`).

    Args:
        adapter: An adapter directory (as `save_pretrained` writes it) or a `PeftModel` holding MMA adapters.
        output_path: The `.pth` to write.
        adapter_name: Which adapter of a `PeftModel` to export.
        overwrite: Replace an existing file.

    Returns:
        The reference `eval.py` flags that describe the adapter (`--adapter_type ... --temperature ...`).
    """
    config, state = _read_adapter(adapter, adapter_name)
    not_float = sorted(name for name, tensor in state.items() if not tensor.is_floating_point())
    if not_float:  # the export casts to fp32, which would turn damaged integer weights into a valid-looking file
        raise LavinConversionError(
            f"The adapter holds {len(not_float)} tensor(s) that are not floating point (e.g. {not_float[0]}: "
            f"{str(state[not_float[0]].dtype).removeprefix('torch.')}): its weights are damaged; save the adapter again."
        )
    if config.vision_adapter_type == "normal":
        raise LavinConversionError(
            "MMA's 'normal' CLIP adapter computes x + s*B(A(x)); the reference's plain RepAdapter feeds B(A(x)) "
            "alone, so it cannot be exported exactly. Only 'router', 'router_block' and 'none' export."
        )
    if config.groups != REFERENCE_GROUPS:
        raise LavinConversionError(
            f"The reference hard-codes groups={REFERENCE_GROUPS} in its adapters; this adapter has groups={config.groups}."
        )
    tensors = peft_to_reference(state)
    parse_reference_adapter(tensors)  # the same checks an import runs: complete and consistent
    output_path = Path(output_path)
    if output_path.is_dir():  # --overwrite replaces a file, never a folder
        raise LavinConversionError(
            f"--output {str(output_path)!r} is a directory; give the path of the .pth file to write, e.g. "
            f"{str(output_path / 'adapter.pth')!r}."
        )
    check_target(output_path, overwrite)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{output_path.name}.partial-", dir=output_path.parent)
    os.close(handle)
    try:
        torch.save({"model": tensors}, temporary)
        apply_umask(temporary)  # mkstemp creates 0600
        os.replace(temporary, output_path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return reference_flags(config)


def reference_flags(config: MMAConfig) -> str:
    """The reference's command-line flags for an adapter with these settings."""
    # A model without CLIP adapters matches the reference's zero-initialised routers (whose output is x).
    vision = "router" if config.vision_adapter_type == "none" else config.vision_adapter_type
    return (
        f"--adapter_type {config.adapter_type} --adapter_dim {config.adapter_hidden_size} "
        f"--adapter_scale {config.scale:g} --temperature {config.temperature:g} --visual_adapter_type {vision}"
    )


def _read_adapter(adapter, adapter_name: str) -> tuple[MMAConfig, dict[str, torch.Tensor]]:
    if isinstance(adapter, PeftModel):
        config = adapter.peft_config.get(adapter_name)
        if not isinstance(config, MMAConfig):
            raise LavinConversionError(f"Adapter {adapter_name!r} of this model is not an MMA adapter.")
        return config, get_peft_model_state_dict(adapter, adapter_name=adapter_name)
    directory = Path(adapter)
    config_path = directory / "adapter_config.json"
    weights_path = directory / "adapter_model.safetensors"
    if not config_path.is_file() or not weights_path.is_file():
        raise LavinConversionError(
            f"{str(directory)!r} is not an adapter directory: expected adapter_config.json and "
            "adapter_model.safetensors, as PeftModel.save_pretrained writes them."
        )
    raw = read_json_file(config_path, "The adapter config")
    if not isinstance(raw, dict) or raw.get("peft_type") != "MMA":
        raise LavinConversionError(
            f"{str(directory)!r} holds a {raw.get('peft_type') if isinstance(raw, dict) else raw!r} adapter; only MMA "
            "adapters export to LaVIN."
        )
    return MMAConfig.from_pretrained(directory), load_file(str(weights_path))
