"""Names and layouts: reference LaVIN adapter tensors <-> this package's MMA adapter (PEFT) state dict.

    reference                                        PEFT adapter (as `save_pretrained` writes it)
    layers.{i}.adapter_attn.conv_A  (h, D, 1)      -> <decoder>.layers.{i}.self_attn.mma_down   (h, D)
    layers.{i}.adapter_attn.conv_B  (D, h/g, 1)    -> <decoder>.layers.{i}.self_attn.mma_up_0   (D, h/g)
    layers.{i}.adapter_attn.conv_D  (D, h/g, 1)    -> <decoder>.layers.{i}.self_attn.mma_up_1   (D, h/g)
    layers.{i}.adapter_attn.expert_weights (2, D)  -> <decoder>.layers.{i}.self_attn.mma_router (2, D)
    layers.{i}.adapter_mlp.*                       -> <decoder>.layers.{i}.mlp.*
    backbone.visual.transformer.resblocks.{i}.adapter_attn/adapter_mlp.* -> <vision>.layers.{i}.self_attn/mlp.*
    adapter_proj.conv_A / conv_B (nn.Linear)       -> multi_modal_projector.linear_1 / linear_2
    adapter_modality_embedding                     -> modality_embedding

A kernel-1 Conv1d is a Linear once its kernel axis is dropped; grouped Conv1d weights keep the (out, in / groups)
layout that `GroupedLinear` uses, so no reordering is needed.
"""

from __future__ import annotations

import re

import torch
from peft import get_peft_model, get_peft_model_state_dict

from ..configuration_lavin import LavinConfig
from ..mma import MMAConfig
from .reference_format import (
    LLM_PREFIX,
    MODALITY_KEY,
    PROJECTOR_PREFIX,
    VISION_PREFIX,
    LavinConversionError,
    ReferenceAdapter,
)

REFERENCE_TO_MMA = {"conv_A": "mma_down", "conv_B": "mma_up_0", "conv_D": "mma_up_1", "expert_weights": "mma_router"}
MMA_TO_REFERENCE = {value: key for key, value in REFERENCE_TO_MMA.items()}
REFERENCE_TO_PROJECTOR = {"conv_A": "linear_1", "conv_B": "linear_2"}
PROJECTOR_TO_REFERENCE = {value: key for key, value in REFERENCE_TO_PROJECTOR.items()}
SITE_TO_MODULE = {"attn": "self_attn", "mlp": "mlp"}
MODULE_TO_SITE = {value: key for key, value in SITE_TO_MODULE.items()}
CONV_PARAMS = {"conv_A.weight", "conv_B.weight", "conv_D.weight"}

_SAVED_ADAPTER_KEY = re.compile(
    r"^(?P<module>.+\.layers\.(?P<index>\d+)\.(?P<site>self_attn|mlp))\.(?P<param>mma_down|mma_up_0|mma_up_1|mma_router)"
    r"\.(?P<kind>weight|bias)$"
)


def mma_config_for(adapter: ReferenceAdapter, scale: float, temperature: float) -> MMAConfig:
    """The `MMAConfig` that reproduces a reference adapter's architecture."""
    return MMAConfig(
        adapter_hidden_size=adapter.hidden_size,
        groups=adapter.groups,
        scale=scale,
        temperature=temperature,
        adapter_type=adapter.adapter_type,
        vision_adapter_type=adapter.vision_adapter_type,
    )


def expected_adapter_state(config: LavinConfig, mma_config: MMAConfig) -> tuple[dict[str, torch.Size], str]:
    """
    The keys and shapes `get_peft_model(LavinForConditionalGeneration(config), mma_config).save_pretrained` writes,
    read from a model built on the meta device (no memory), and the saved-key prefix of the vision tower.
    """
    from ..modeling_lavin import LavinForConditionalGeneration

    with torch.device("meta"):
        model = get_peft_model(LavinForConditionalGeneration(config), mma_config)
    state = get_peft_model_state_dict(model)
    vision_prefix = f"base_model.model.{model.base_model._vision_name}."
    return {key: value.shape for key, value in state.items()}, vision_prefix


def reference_to_peft(
    adapter: ReferenceAdapter, expected: dict[str, torch.Size], vision_prefix: str
) -> dict[str, torch.Tensor]:
    """
    Map a parsed reference adapter onto the PEFT adapter keys in `expected` (see `expected_adapter_state`).

    Raises:
        LavinConversionError: when a tensor has no place in the target model, the target expects a tensor the
            checkpoint lacks, or a shape differs (e.g. a 13B adapter on a 7B base).
    """
    sites = _site_paths(expected, vision_prefix)
    converted: dict[str, torch.Tensor] = {}
    for tower_name, tower, reference_prefix in (
        ("llm", adapter.llm, LLM_PREFIX),
        ("vision", adapter.vision, VISION_PREFIX),
    ):
        for (index, site), adapter_site in tower.items():
            path = sites.get((tower_name, index, site))
            if path is None:
                raise LavinConversionError(
                    f"{reference_prefix}.{index}.adapter_{site} has no counterpart in the target model, which has "
                    f"{_count(sites, tower_name)} adapted {tower_name} layers. The base model does not match this "
                    "adapter (e.g. a 13B adapter on a 7B LLaMA, or a different CLIP)."
                )
            for param, tensor in adapter_site.tensors.items():
                layer, kind = param.split(".")
                value = tensor.squeeze(-1) if param in CONV_PARAMS else tensor
                converted[f"{path}.{REFERENCE_TO_MMA[layer]}.{kind}"] = value
    projector_path = _single_module(expected, ".multi_modal_projector.")
    for param, tensor in adapter.projector.items():
        layer, kind = param.split(".")
        converted[f"{projector_path}.{REFERENCE_TO_PROJECTOR[layer]}.{kind}"] = tensor
    modality_key = next((key for key in expected if key.endswith(".modality_embedding.weight")), None)
    if modality_key is None:
        raise LavinConversionError("The target model has no modality_embedding; it is not a LaVIN model.")
    converted[modality_key] = adapter.modality_embedding
    check_against(converted, expected, "the converted adapter", "the target model")
    return {key: value.detach().clone().contiguous() for key, value in converted.items()}


def peft_to_reference(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """
    Map a saved MMA adapter state dict of a LaVIN model back to the reference's names and Conv1d shapes.

    Raises:
        LavinConversionError: for keys the reference model has no place for (e.g. a plain-LLM adapter's own
            modality embedding, or modules_to_save other than the projector and the modality embedding).
    """
    result: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in state.items():
        if match := _SAVED_ADAPTER_KEY.match(key):
            in_vision = ".vision_tower." in match["module"]
            prefix = VISION_PREFIX if in_vision else LLM_PREFIX
            layer = MMA_TO_REFERENCE[match["param"]]
            name = f"{prefix}.{match['index']}.adapter_{MODULE_TO_SITE[match['site']]}.{layer}.{match['kind']}"
            result[name] = tensor.unsqueeze(-1) if f"{layer}.{match['kind']}" in CONV_PARAMS else tensor
        elif match := re.match(r"^.+\.multi_modal_projector\.(linear_1|linear_2)\.(weight|bias)$", key):
            result[f"{PROJECTOR_PREFIX}.{PROJECTOR_TO_REFERENCE[match[1]]}.{match[2]}"] = tensor
        elif re.match(r"^.+\.modality_embedding\.weight$", key) and "mma_modality_embedding" not in key:
            result[MODALITY_KEY] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise LavinConversionError(
            f"These adapter tensors have no place in the reference LaVIN model: {sorted(unknown)[:6]}"
            f"{' ...' if len(unknown) > 6 else ''}. Only MMA adapters of a LaVIN model (LLM and CLIP adapters, the "
            "projector and the modality embedding) can be exported."
        )
    return {key: value.detach().to("cpu", torch.float32).clone().contiguous() for key, value in result.items()}


def check_against(found: dict[str, torch.Tensor], expected: dict[str, torch.Size], what: str, target: str) -> None:
    """Raise a `LavinConversionError` naming missing keys, unexpected keys and shape mismatches."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(
        f"{key}: {tuple(found[key].shape)} vs {tuple(expected[key])}"
        for key in set(found) & set(expected)
        if tuple(found[key].shape) != tuple(expected[key])
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[:3]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    if wrong:
        problems.append(f"{len(wrong)} with another shape (e.g. {wrong[:3]})")
    if problems:
        raise LavinConversionError(
            f"{what} does not fit {target}: "
            + "; ".join(problems)
            + ". Check that the LLaMA and CLIP checkpoints are "
            "the ones the adapter was trained on (same sizes), and that the adapter options match the checkpoint."
        )


def _site_paths(expected: dict[str, torch.Size], vision_prefix: str) -> dict[tuple[str, int, str], str]:
    sites = {}
    for key in expected:
        if match := _SAVED_ADAPTER_KEY.match(key):
            tower = "vision" if key.startswith(vision_prefix) else "llm"
            sites[(tower, int(match["index"]), MODULE_TO_SITE[match["site"]])] = match["module"]
    return sites


def _single_module(expected: dict[str, torch.Size], marker: str) -> str:
    paths = {key.split(marker)[0] + marker.rstrip(".") for key in expected if marker in key}
    if len(paths) != 1:
        raise LavinConversionError(
            f"The target model has {len(paths)} modules named {marker.strip('.')!r}; expected 1."
        )
    return paths.pop()


def _count(sites: dict[tuple[str, int, str], str], tower: str) -> int:
    return len({index for name, index, _ in sites if name == tower})
