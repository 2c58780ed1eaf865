"""How a merged model saves: so that it reloads exactly, or not at all.

Routed vision adapters mix their up-projections per token (each token routes on its own input), which no linear layer
can express, so `merge_and_unload` leaves them in place. Saved as they are, their wrapped modules' weights would be
named `...self_attn.base_layer.q_proj...` and a reload would leave q/k/v re-initialised. Instead, the merged model
saves two things into its directory:

- the model itself, under the base architecture's own key names (the LLM folded, the vision tower's base weights);
- the kept adapters, as a PEFT adapter (`adapter_config.json` + `adapter_model.safetensors`) of an `MMAConfig` that
  adapts the vision tower only.

A directory holding both a model and an adapter is what transformers calls a model with an embedded adapter:
`from_pretrained(directory)` loads the model from it and then the adapter (`model.load_adapter(directory)`).

A merged model whose config cannot declare the biases merging gave it (Gemma 3's MLPs) refuses to save, with the
reason, instead of writing a checkpoint that reloads without them.
"""

from __future__ import annotations

import dataclasses
import os
import types

import torch
from peft.utils.constants import SAFETENSORS_WEIGHTS_NAME
from safetensors.torch import save_file
from torch import nn

from .config import MMAConfig
from .layer import MMALayer

_KEPT_ATTRIBUTE = "_mma_kept_adapter"


def keep_unfolded_adapters(model: nn.Module, adapter_name: str, config: MMAConfig) -> None:
    """
    Make `model` (merged, with routed vision [`MMALayer`]s still in place) save and reload exactly.

    Each kept layer holds `adapter_name` only; `model.save_pretrained` writes the base model under its own key names
    and the kept layers as an adapter of a vision-only copy of `config`.
    """
    for layer in (m for m in model.modules() if isinstance(m, MMALayer)):
        for other in set(layer._all_available_adapter_names()) - {adapter_name}:
            layer.delete_adapter(other)
        layer.set_adapter(adapter_name, inference_mode=True)
    # No LLM target (`attn` adds no MLP), nothing else to save in full: the projector is part of the model now.
    vision_only = dataclasses.replace(
        config, target_modules=[], adapter_type="attn", modules_to_save=None, merge_modality=None, inference_mode=True
    )
    object.__setattr__(model, _KEPT_ATTRIBUTE, (adapter_name, vision_only))
    # On the instance: the model stays of its own class (a plain LaVIN, LLaVA, ...), only its saving changes.
    model.save_pretrained = types.MethodType(_save_pretrained_with_kept_adapters, model)


def split_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor], adapter_name: str) -> tuple[dict, dict]:
    """
    Split `model`'s `state_dict` into the base model's (the kept layers' `base_layer.` dropped from the names) and
    the kept adapter's, in PEFT's saved format (`base_model.model.` + the name without the adapter name).
    """
    layer_names = [name for name, m in model.named_modules() if isinstance(m, MMALayer)]
    base, adapter = {}, {}
    for key, value in state_dict.items():
        layer = next((name for name in layer_names if key.startswith(name + ".")), None)
        if layer is None:
            base[key] = value
            continue
        rest = key[len(layer) + 1 :]
        if rest.startswith("base_layer."):
            base[f"{layer}.{rest.removeprefix('base_layer.')}"] = value
        else:  # e.g. mma_down.<adapter>.weight
            attribute, name, tensor = rest.split(".", 2)
            if name == adapter_name:
                adapter[f"base_model.model.{layer}.{attribute}.{tensor}"] = value
    return base, adapter


def _save_pretrained_with_kept_adapters(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
    # Bound to a merged model by `keep_unfolded_adapters`; takes transformers' `save_pretrained` arguments.
    adapter_name, config = getattr(self, _KEPT_ATTRIBUTE)
    state_dict = kwargs.pop("state_dict", None)
    base, adapter = split_state_dict(self, self.state_dict() if state_dict is None else state_dict, adapter_name)
    if kwargs.get("is_main_process", True):
        # Before the model: with push_to_hub=True, transformers uploads the directory at the end of its own save.
        os.makedirs(save_directory, exist_ok=True)
        dataclasses.replace(config, base_model_name_or_path=str(save_directory)).save_pretrained(save_directory)
        adapter = {key: value.detach().contiguous() for key, value in adapter.items()}
        save_file(adapter, os.path.join(save_directory, SAFETENSORS_WEIGHTS_NAME), metadata={"format": "pt"})
    type(self).save_pretrained(self, save_directory, *args, state_dict=base, **kwargs)


def refuse_saving(model: nn.Module, reason: str) -> None:
    """Make `model.save_pretrained` raise `ValueError(reason)`: what it would write would not reload as it is."""

    def save_pretrained(*args, **kwargs) -> None:
        raise ValueError(reason)

    model.save_pretrained = save_pretrained
