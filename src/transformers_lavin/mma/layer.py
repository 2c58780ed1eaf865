"""The MMA adapter: LaVIN's routed RepAdapter, wrapped around the module whose input it adapts.

For the normed input x of an attention (or MLP) module, one adapter computes

    h = dropout(A x)                       A: width -> hidden, with bias
    w = softmax(R x_route / t)             R: width -> 2, the router; x_route is the modality token's normed input
    y = x + s * (w0 * U0 h + w1 * U1 h)    U0, U1: hidden -> width, grouped (block-diagonal), with bias

and the wrapped module receives y. `U0`/`U1` are the reference's `conv_B`/`conv_D` (kernel-1 Conv1d = Linear).
LLM adapters take `w` per row from the routing table (see `routing.py`); vision adapters route every token on its
own input. The `normal` variant has no router: y = x + s * U0 h.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from torch import nn

from .folding import fold, input_projections, unfold
from .routing import MODALITIES, ROUTING_KWARG, RouteOnFirstToken


class GroupedLinear(nn.Module):
    """A Linear whose weight is block-diagonal in `groups` blocks: the reference's grouped kernel-1 Conv1d."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        groups: int,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        if in_features % groups or out_features % groups:
            raise ValueError(f"in ({in_features}) and out ({out_features}) features must be divisible by {groups}.")
        self.in_features, self.out_features, self.groups = in_features, out_features, groups
        # Same layout as Conv1d's weight without the kernel axis: (out, in // groups). Created in place (never moved
        # with `.to`), so that PEFT's `low_cpu_mem_usage` can create it on the meta device.
        self.weight = nn.Parameter(torch.zeros(out_features, in_features // groups, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype))

    def reset_parameters(self) -> None:
        """PyTorch's default Linear initialisation (per group fan-in), instead of the zeros of a new adapter."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(self.weight.shape[1])
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One dense matmul with the block-diagonal weight: far fewer operators than a grouped einsum, and the
        # hidden size (8) keeps the zeros' cost negligible.
        return F.linear(x, self.dense_weight(), self.bias)

    def dense_weight(self) -> torch.Tensor:
        """The equivalent (out, in) dense weight."""
        g = self.groups
        blocks = self.weight.view(g, self.out_features // g, self.in_features // g)
        return torch.block_diag(*blocks.unbind(0))


def add_mixed_per_token(
    x: torch.Tensor, h: torch.Tensor, weights: torch.Tensor, up_0: GroupedLinear, up_1: GroupedLinear, scale: float
) -> torch.Tensor:
    """
    `x + s * (w0 * U0 h + w1 * U1 h)` (biases included) with one routing weight pair per token (`weights`: (..., 2)).

    One matmul, residual included, instead of two up-projections and a mix: the inputs `[w0 h, w1 h, w0, w1]` times
    `[U0 | U1 | b0 | b1]`.
    """
    mixed_inputs = torch.cat([(weights.unsqueeze(-1) * h.unsqueeze(-2)).flatten(-2), weights], dim=-1)
    weight = torch.cat([up_0.dense_weight(), up_1.dense_weight(), up_0.bias[:, None], up_1.bias[:, None]], dim=1)
    return torch.addmm(x.flatten(0, -2), mixed_inputs.flatten(0, -2), weight.T, alpha=scale).view_as(x)


class MMALayer(nn.Module, BaseTunerLayer):
    """
    Wraps a module (an attention or an MLP) and adapts its input with MMA.

    Args:
        base_layer: The wrapped module; it receives the adapted input and every other argument unchanged.
        adapter_name: PEFT adapter name.
        width: Feature width of the input.
        routed: Whether the adapter has a router (`False` for the `normal` variant).
        routing_key: Name of this adapter in the routing table (its module path); `None` for per-token routing.
        init_weights: `True` starts the adapter as the identity (zero up-projections); `False` draws them at random.
    """

    adapter_layer_names = ("mma_down", "mma_up_0", "mma_up_1", "mma_router")
    other_param_names = ("mma_dropout", "mma_scale", "mma_temperature", "mma_merged_routing")

    def __init__(
        self,
        base_layer: nn.Module,
        adapter_name: str,
        width: int,
        hidden_size: int,
        groups: int,
        scale: float,
        temperature: float,
        dropout: float,
        routed: bool,
        routing_key: str | None,
        init_weights: bool = True,
    ):
        super().__init__()
        self.base_layer = base_layer
        self.in_features = self.out_features = self.width = width
        self.routed = routed
        self.routing_key = routing_key
        self.mma_down = nn.ModuleDict()
        self.mma_up_0 = nn.ModuleDict()
        self.mma_up_1 = nn.ModuleDict()
        self.mma_router = nn.ModuleDict()
        self.mma_dropout = nn.ModuleDict()
        self.mma_scale: dict[str, float] = {}
        self.mma_temperature: dict[str, float] = {}
        self.mma_merged_routing: dict[str, torch.Tensor | None] = {}
        self.merged_adapters: list[str] = []
        self.merged_modality: str | None = None
        self._created_biases: dict[str, list[str]] = {}
        self._disable_adapters = False
        self._call_routing = None
        self._routing_hooks = []
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, hidden_size, groups, scale, temperature, dropout, init_weights)

    def update_layer(
        self,
        adapter_name: str,
        hidden_size: int,
        groups: int,
        scale: float,
        temperature: float,
        dropout: float,
        init_weights: bool = True,
    ) -> None:
        """
        Add (or replace) the adapter `adapter_name` with these settings, as LoRA's `update_layer` does. Every tensor
        is created where it lives (never moved with `.to`), so that PEFT's `low_cpu_mem_usage` can create it on the
        meta device.
        """
        device, dtype = self._base_device_and_dtype()
        down = nn.Linear(self.width, hidden_size, device=device, dtype=dtype)
        nn.init.xavier_uniform_(down.weight)
        nn.init.zeros_(down.bias)
        self.mma_down[adapter_name] = down
        up_projections = [GroupedLinear(hidden_size, self.width, groups, device, dtype)]  # zeros: the identity
        if self.routed:
            up_projections.append(GroupedLinear(hidden_size, self.width, groups, device, dtype))
        if not init_weights:  # a non-identity adapter from the start (PEFT's `init_weights=False`, for tests)
            for up in up_projections:
                up.reset_parameters()
        self.mma_up_0[adapter_name] = up_projections[0]
        if self.routed:
            self.mma_up_1[adapter_name] = up_projections[1]
            router = nn.Linear(self.width, 2, device=device, dtype=dtype)
            # PyTorch's default Linear init, as the reference's nn.Linear router.
            nn.init.kaiming_uniform_(router.weight, a=math.sqrt(5))
            bound = 1 / math.sqrt(self.width)
            nn.init.uniform_(router.bias, -bound, bound)
            self.mma_router[adapter_name] = router
        self.mma_dropout[adapter_name] = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.mma_scale[adapter_name] = scale
        self.mma_temperature[adapter_name] = temperature
        self.set_adapter(self.active_adapters)

    def _base_device_and_dtype(self) -> tuple[torch.device | None, torch.dtype | None]:
        """Device and compute dtype of the wrapped module (of its first input projection when quantised)."""
        base = self.get_base_layer()
        for name in ("q_proj", "qkv_proj", "gate_proj", "up_proj", "fc1", "out_proj"):
            linear = getattr(base, name, None)
            if isinstance(linear, nn.Module):
                device, dtype = self._get_base_layer_device_and_dtype(linear)
                if device is not None:
                    return device, dtype if dtype is not None and dtype.is_floating_point else None
        floating = next((p for p in base.parameters() if p.is_floating_point()), None)
        return (floating.device, floating.dtype) if floating is not None else (None, None)

    # ---------------------------------------------------------------------------------------------------- routing
    def route(self, adapter_name: str, x: torch.Tensor) -> torch.Tensor:
        """Routing weights `softmax(R x / t)` over the last axis of `x` (softmax in fp32, returned in x's dtype)."""
        router = self.mma_router[adapter_name]
        logits = router(x.to(router.weight.dtype)).float()
        return torch.softmax(logits / self.mma_temperature[adapter_name], dim=-1).to(x.dtype)

    def routes_now(self) -> bool:
        """Whether a forward now runs this LLM adapter and so needs its routing weights."""
        return not self.disable_adapters and not self.merged and self._active_adapter_here() is not None

    def take_routing_from(self, attention: nn.Module) -> None:
        """
        For an MLP adapter (the `block` variant): the decoder calls the MLP without keyword arguments, but calls the
        attention of the same layer with the routing, just before. A hook of this adapter's own on that attention
        reads the routing of each call. It sits inside the decoder layer's forward, so under gradient checkpointing
        the recompute reads it again.
        """
        if not self._routing_hooks:
            self._routing_hooks.append(attention.register_forward_pre_hook(self._take_call_routing, with_kwargs=True))

    def _take_call_routing(self, module, args, kwargs) -> None:
        self._call_routing = kwargs.get(ROUTING_KWARG)

    def remove_routing_hooks(self) -> None:
        for handle in self._routing_hooks:
            handle.remove()
        self._routing_hooks = []

    # ---------------------------------------------------------------------------------------------------- forward
    def adapt(self, x: torch.Tensor, routing=None, adapter_name: str | None = None) -> torch.Tensor:
        """
        Apply the adapter `adapter_name` (the active one by default) to `x` (batch, seq, width):
        `x + s * (w0 * U0 h + w1 * U1 h)`, `h = dropout(A x)`.
        """
        name = adapter_name or self._active_adapter_here()
        down = self.mma_down[name]
        xa = x.to(down.weight.dtype)
        h = down(xa)
        if self.training:  # dropout is the identity otherwise; skipping its call matters in small decode steps
            h = self.mma_dropout[name](h)
        if not self.routed:
            y = xa + self.mma_scale[name] * self.mma_up_0[name](h)
        elif self.routing_key is None:  # vision: every token routes on its own input
            weights = self.route(name, xa)
            y = add_mixed_per_token(xa, h, weights, self.mma_up_0[name], self.mma_up_1[name], self.mma_scale[name])
        else:  # LLM: each row's mixed up-projection s (w0 U0 + w1 U1) and bias, from the routing table
            routing = routing if routing is not None else RouteOnFirstToken()
            up, bias = routing.up_projections(self, name, xa)
            y = torch.baddbmm(xa + bias.unsqueeze(1), h, up)
        return y.to(x.dtype)

    def mixed_up_projection(self, adapter_name: str, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        The up-projection `s (w0 U0 + w1 U1)` and its bias `s (w0 b0 + w1 b1)` for each pair of routing `weights`
        (n, 2): shapes (n, hidden, width), transposed for `baddbmm`, and (n, width).
        """
        up_0, up_1 = self.mma_up_0[adapter_name], self.mma_up_1[adapter_name]
        scale = self.mma_scale[adapter_name]
        weights = weights.to(up_0.weight.dtype)
        dense = torch.stack((up_0.dense_weight(), up_1.dense_weight()))
        up = scale * torch.einsum("np,pwi->niw", weights, dense)
        bias = scale * (weights @ torch.stack((up_0.bias, up_1.bias)))
        return up, bias

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        routing = kwargs.pop(ROUTING_KWARG, None)
        routing = routing if routing is not None else self._call_routing
        self._call_routing = None  # used once: the next call of the layer brings its own
        if self.disable_adapters and self.merged:
            self.unmerge()  # as LoRA does: a disabled adapter acts on nothing, merged or not
        name = self._adapter_to_run(routing)
        if name is None:
            return self.base_layer(hidden_states, *args, **kwargs)
        return self.base_layer(self.adapt(hidden_states, routing, name), *args, **kwargs)

    def _adapter_to_run(self, routing) -> str | None:
        """The adapter this call runs: the one a routing pass names (to merge an inactive one), else the active one."""
        named = getattr(routing, "adapter_name", None)
        if named is not None:
            return named if named in self.mma_down else None
        return self._active_adapter_here() if self.routes_now() else None

    def _active_adapter_here(self) -> str | None:
        active = [name for name in self.active_adapters if name in self.mma_down]
        if len(active) > 1:
            raise ValueError(
                f"MMA runs exactly one active adapter per layer (each routes on its own); active here: {active}. "
                "Use set_adapter(name)."
            )
        return active[0] if active else None

    # ------------------------------------------------------------------------------------------------------ merge
    def folded_affine(self, adapter_name: str, weights: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """
        The adapter as an affine map `y = (I + U V) x + c` for fixed routing `weights` (2,), dropout off.

        With M = w0 U0 + w1 U1 (dense) and A x + a the down-projection: U = s M, V = A, c = s (M a + w0 b0 + w1 b1)
        (for the `normal` variant, M = U0 and no routing weights).

        Returns:
            `(U, V, c)`.
        """
        down = self.mma_down[adapter_name]
        if self.routed:
            up, bias = self.mixed_up_projection(adapter_name, weights.reshape(1, 2))
            mix, mix_bias = up[0].T, bias[0]
        else:
            scale, up_0 = self.mma_scale[adapter_name], self.mma_up_0[adapter_name]
            mix, mix_bias = scale * up_0.dense_weight(), scale * up_0.bias
        return mix, down.weight, mix @ down.bias + mix_bias

    def get_delta_weight(self, adapter_name: str, routing_weights: torch.Tensor | None = None) -> dict:
        """
        What merging adds to each input projection `W x + b` of the wrapped module: `{name: (dW, db)}` with
        `dW = W U V` and `db = W c` (see [`folded_affine`]).
        """
        up, down, shift = self.folded_affine(adapter_name, routing_weights)
        return {
            name: (
                linear.weight @ up.to(linear.weight) @ down.to(linear.weight),
                linear.weight @ shift.to(linear.weight),
            )
            for name, linear in input_projections(self.get_base_layer()).items()
        }

    @property
    def created_biases(self) -> bool:
        """Whether a merge gave one of the wrapped module's input projections a bias it did not have."""
        return any(self._created_biases.values())

    def can_merge(self) -> bool:
        """Routed vision adapters mix per token, which is not linear: they cannot fold into weights."""
        return not (self.routed and self.routing_key is None)

    def merge(
        self,
        safe_merge: bool = False,
        adapter_names: list[str] | None = None,
        routing_weights: dict[str, torch.Tensor] | None = None,
        modality: str | None = None,
    ) -> None:
        """
        Fold the adapters into the wrapped module's input projections, exactly, each for its fixed routing weights
        `routing_weights[name]` (2,) (those of `modality`, for an LLM adapter). Adapters merged already are left as
        they are, with PEFT's warning.
        """
        if not self.can_merge():
            return
        for name in check_adapters_to_merge(self, adapter_names):
            if name not in self.mma_down:
                continue
            weights = None
            if self.routed:
                weights = (routing_weights or {}).get(name)
                if weights is None:
                    raise ValueError("An LLM MMA adapter merges for one modality: give its routing weights.")
                if self.merged_modality not in (None, modality):
                    raise ValueError(
                        f"Adapters are merged for {self.merged_modality!r} inputs already; merging {name!r} for "
                        f"{modality!r} inputs would mix the two. Call unmerge_adapter() first."
                    )
            with torch.no_grad():
                up, down, shift = self.folded_affine(name, weights)
            self._created_biases[name] = fold(self.get_base_layer(), up, down, shift, safe_merge, name)
            self.mma_merged_routing[name] = weights
            self.merged_adapters.append(name)
            if self.routed:
                self.merged_modality = modality

    def unmerge(self) -> None:
        """Take every merged adapter out of the wrapped module again (exact up to rounding, as LoRA's)."""
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            with torch.no_grad():
                up, down, shift = self.folded_affine(name, self.mma_merged_routing.pop(name))
            unfold(self.get_base_layer(), up, down, shift, self._created_biases.pop(name))
        self.merged_modality = None

    def unload_and_optionally_merge_module(
        self, merge: bool, safe_merge: bool = False, adapter_names: list[str] | None = None
    ) -> nn.Module:
        """The wrapped module, with its merged adapter folded in; an adapter that cannot fold stays wrapped."""
        if merge and not self.can_merge():
            return self
        self.remove_routing_hooks()
        return self.get_base_layer()

    def __repr__(self) -> str:
        return "mma." + super().__repr__()


class MMAModalityEmbedding(nn.Module, BaseTunerLayer):
    """
    The modality-token embedding of a base model that has none (a plain causal LM, or a VLM other than LaVIN),
    owned by the tuner and trained with the adapters: one `Embedding(2, width)` per adapter.

    It wraps no base layer, so it answers the questions PEFT asks of every tuner layer itself: `weight` is the active
    adapter's (2, width) table, `bias` is `None`, `in_features` is 2 (the modalities) and `out_features` the width.
    """

    adapter_layer_names = ("mma_modality_embedding",)
    other_param_names = ()

    def __init__(self, adapter_name: str, width: int, device: torch.device | None, dtype: torch.dtype | None):
        super().__init__()
        self.in_features, self.out_features = len(MODALITIES), width
        self.width = width
        self._device, self._dtype = device, dtype
        self.mma_modality_embedding = nn.ModuleDict()
        self.merged_adapters: list[str] = []
        self._disable_adapters = False
        self._active_adapter = adapter_name
        self.update_layer(adapter_name)

    def update_layer(self, adapter_name: str) -> None:
        embedding = nn.Embedding(len(MODALITIES), self.width, device=self._device, dtype=self._dtype)
        nn.init.normal_(embedding.weight)
        self.mma_modality_embedding[adapter_name] = embedding
        self.set_adapter(self.active_adapters)

    def embeddings(self, adapter_name: str | None = None) -> torch.Tensor:
        """The (2, width) embeddings of `adapter_name` (the active adapter by default): row 0 text-only, row 1 image."""
        if adapter_name is None:
            active = [name for name in self.active_adapters if name in self.mma_modality_embedding]
            if not active:
                raise ValueError("No active MMA adapter: use set_adapter(name).")
            adapter_name = active[0]
        return self.mma_modality_embedding[adapter_name].weight

    @property
    def weight(self) -> torch.Tensor:
        active = [name for name in self.active_adapters if name in self.mma_modality_embedding]
        if not active:
            raise AttributeError("MMAModalityEmbedding has no active adapter, so no weight.")
        return self.mma_modality_embedding[active[0]].weight

    @property
    def bias(self) -> None:
        return None

    def merge(self, *args, **kwargs) -> None:  # nothing to fold: the embedding only feeds the routers
        pass

    def unmerge(self) -> None:
        pass


__all__ = ["GroupedLinear", "MMALayer", "MMAModalityEmbedding", "MODALITIES", "add_mixed_per_token"]
