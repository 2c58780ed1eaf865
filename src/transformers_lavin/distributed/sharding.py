"""FSDP2 (`torch.distributed.fsdp.fully_shard`) for a LaVIN with MMA adapters.

One FSDP unit per LLM decoder layer, then the root. An MMA adapter wraps the attention (or MLP) inside a decoder
layer, so it lives in that layer's unit: one all-gather brings the frozen weights and the adapter together, and each
parameter (frozen or trainable) is sharded on its own (FSDP2 shards per parameter, so mixing `requires_grad` in a
unit is fine). The routing pass runs the decoder on the modality embeddings inside the forward: each layer is then
called twice per step, and FSDP2 all-gathers and reduce-scatters it for each call (the gradients add up).

One thing FSDP2 cannot see by itself: the routing pass hands its result (the routing weights) out of a layer as a
side value, not as the layer's output. FSDP2 re-gathers a layer for the backward when a gradient reaches the
layer's *outputs*; the gradient of the routing weights reaches the routers without passing through them (in the
last layer, never), and would find the layer's weights already freed. `shard_lavin` therefore registers FSDP's
pre-backward hook on every router's output as well, so that gradient gathers the layer first.

The vision tower stays in the root unit on purpose: a batch of text-only rows skips it, and a per-layer CLIP unit
that one rank runs and another does not would leave the ranks' reduce-scatters out of step (a hang). In the root
unit its adapters are reduced at the end of every backward on every rank, with zeros where a rank had no image
(`set_reduce_scatter_unused_params`, FSDP2's counterpart of DDP's `find_unused_parameters`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from ..mma.layer import MMALayer

DECODER_LAYER_CLASSES = ("LlamaDecoderLayer",)


def decoder_layers(model: nn.Module, class_names: tuple[str, ...] | None = None) -> list[nn.Module]:
    """The LLM's decoder layers inside `model` (a LaVIN or a PEFT model around one), in order."""
    names = set(class_names or DECODER_LAYER_CLASSES)
    base = getattr(model, "get_base_model", lambda: model)()
    names.update(n for n in getattr(base, "_no_split_modules", None) or () if "Decoder" in n)
    return [module for module in model.modules() if type(module).__name__ in names]


def shard_lavin(
    model: nn.Module,
    mesh=None,
    param_dtype: torch.dtype | None = None,
    reshard_after_forward: bool = True,
) -> FSDPModule:
    """
    Shard `model` with FSDP2, in place: one unit per decoder layer (with its MMA adapters), then the root.

    Args:
        model: A LaVIN (or a `PeftModel` around one) with its adapters already injected.
        mesh: A 1-D `DeviceMesh`; the default process group's world when `None`.
        param_dtype: Compute dtype of the gathered weights (e.g. `torch.bfloat16`); gradients are reduced in fp32.
        reshard_after_forward: Free each layer's gathered weights after its forward (ZeRO-3-like); `False` keeps
            them until the backward (ZeRO-2-like, more memory, fewer all-gathers).

    Returns:
        The same module, now an `FSDPModule`.
    """
    layers = decoder_layers(model)
    if not layers:
        raise ValueError("No decoder layer found to shard: FSDP needs the LLM's decoder layer class.")
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    for layer in layers:
        fully_shard(layer, mesh=mesh, reshard_after_forward=reshard_after_forward, mp_policy=policy)
        _gather_for_routing_gradients(layer)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard_after_forward, mp_policy=policy)
    model.set_reduce_scatter_unused_params(True, recurse=False)
    return model


def _gather_for_routing_gradients(layer: FSDPModule) -> None:
    """Make a gradient arriving at any router of `layer` gather the layer's weights first (see the module doc)."""
    state = layer._get_fsdp_state()
    for module in layer.modules():
        if isinstance(module, MMALayer):
            for router in module.mma_router.values():
                router.register_forward_hook(lambda _module, _args, output: state._register_pre_backward_hook(output))
