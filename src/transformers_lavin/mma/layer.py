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
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from .routing import ROUTING_KWARG, RoutingRecorder


class GroupedLinear(nn.Module):
    """A Linear whose weight is block-diagonal in `groups` blocks: the reference's grouped kernel-1 Conv1d."""

    def __init__(self, in_features: int, out_features: int, groups: int):
        super().__init__()
        if in_features % groups or out_features % groups:
            raise ValueError(f"in ({in_features}) and out ({out_features}) features must be divisible by {groups}.")
        self.in_features, self.out_features, self.groups = in_features, out_features, groups
        # Same layout as Conv1d's weight without the kernel axis: (out, in // groups).
        self.weight = nn.Parameter(torch.zeros(out_features, in_features // groups))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.groups
        blocks = self.weight.view(g, self.out_features // g, self.in_features // g)
        y = torch.einsum("...gi,goi->...go", x.unflatten(-1, (g, -1)), blocks)
        return y.flatten(-2) + self.bias

    def dense_weight(self) -> torch.Tensor:
        """The equivalent (out, in) dense weight."""
        g = self.groups
        blocks = self.weight.view(g, self.out_features // g, self.in_features // g)
        return torch.block_diag(*blocks.unbind(0))


# Linear layers that read an attention's or MLP's input.
INPUT_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "qkv_proj", "gate_proj", "up_proj", "gate_up_proj", "fc1")


@torch.no_grad()
def fold_into_input_projections(
    module: nn.Module, project: torch.Tensor, shift: torch.Tensor, safe_merge: bool = False
) -> None:
    """Replace each input projection L(x) of `module` by L(P x + c): W <- W P, b <- b + W c."""
    readers = [
        getattr(module, name) for name in INPUT_PROJECTIONS if isinstance(getattr(module, name, None), nn.Linear)
    ]
    if not readers:
        raise ValueError(
            f"Cannot merge an MMA adapter into {type(module).__name__}: it has none of the input projections "
            f"{INPUT_PROJECTIONS}. Keep the adapter unmerged."
        )
    for linear in readers:
        if type(linear) is not nn.Linear:
            raise ValueError(f"Cannot merge into a {type(linear).__name__} (quantised?); load the base unquantised.")
        weight = linear.weight.float()
        new_weight = weight @ project.to(weight)
        new_bias = weight @ shift.to(weight) + (linear.bias.float() if linear.bias is not None else 0.0)
        if safe_merge and not (torch.isfinite(new_weight).all() and torch.isfinite(new_bias).all()):
            raise ValueError(f"Merging produced non-finite weights in {type(module).__name__}; adapter is broken.")
        linear.weight.data = new_weight.to(linear.weight.dtype)
        if linear.bias is None:
            linear.bias = nn.Parameter(new_bias.to(linear.weight.dtype))
        else:
            linear.bias.data = new_bias.to(linear.bias.dtype)


class MMALayer(nn.Module, BaseTunerLayer):
    """
    Wraps a module (an attention or an MLP) and adapts its input with MMA.

    Args:
        base_layer: The wrapped module; it receives the adapted input and every other argument unchanged.
        adapter_name: PEFT adapter name.
        width: Feature width of the input.
        routing_key: Name of this adapter in the routing table (its module path); `None` for per-token routing.
        routed: Whether the adapter has a router (`False` for the `normal` variant).
    """

    adapter_layer_names = ("mma_down", "mma_up_0", "mma_up_1", "mma_router")
    other_param_names = ("mma_scale", "mma_temperature")

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
    ):
        super().__init__()
        self.base_layer = base_layer
        self.width = width
        self.routed = routed
        self.routing_key = routing_key
        self.mma_down = nn.ModuleDict()
        self.mma_up_0 = nn.ModuleDict()
        self.mma_up_1 = nn.ModuleDict()
        self.mma_router = nn.ModuleDict()
        self.mma_dropout = nn.ModuleDict()
        self.mma_scale: dict[str, float] = {}
        self.mma_temperature: dict[str, float] = {}
        self.merged_adapters: list[str] = []
        self._disable_adapters = False
        # Set by the tuner for the `block` variant: the MLP adapter of the same decoder layer, which the decoder
        # calls without keyword arguments, so this attention adapter hands it the routing of the current call.
        self._mlp_partner: MMALayer | None = None
        self._pending_routing = None
        self.update_layer(adapter_name, hidden_size, groups, scale, temperature, dropout)
        self._active_adapter = adapter_name

    def update_layer(
        self, adapter_name: str, hidden_size: int, groups: int, scale: float, temperature: float, dropout: float
    ) -> None:
        down = nn.Linear(self.width, hidden_size)
        nn.init.xavier_uniform_(down.weight)
        nn.init.zeros_(down.bias)
        self.mma_down[adapter_name] = down
        self.mma_up_0[adapter_name] = GroupedLinear(hidden_size, self.width, groups)  # zero-initialised
        if self.routed:
            self.mma_up_1[adapter_name] = GroupedLinear(hidden_size, self.width, groups)
            router = nn.Linear(self.width, 2)
            # PyTorch's default Linear init, as the reference's nn.Linear router.
            nn.init.kaiming_uniform_(router.weight, a=math.sqrt(5))
            bound = 1 / math.sqrt(self.width)
            nn.init.uniform_(router.bias, -bound, bound)
            self.mma_router[adapter_name] = router
        self.mma_dropout[adapter_name] = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.mma_scale[adapter_name] = scale
        self.mma_temperature[adapter_name] = temperature
        self._move_adapter_to_device_of_base_layer(adapter_name)
        # Adapters train in full precision, also on a bf16 or quantised base.
        for module in (self.mma_down, self.mma_up_0, self.mma_up_1, self.mma_router):
            if adapter_name in module:
                module[adapter_name].float()
        self.set_adapter([adapter_name])

    # ---------------------------------------------------------------------------------------------------- routing
    def route(self, adapter_name: str, x: torch.Tensor) -> torch.Tensor:
        """Routing weights `softmax(R x / t)` over the last axis of `x`, in fp32."""
        logits = self.mma_router[adapter_name](x.float())
        return torch.softmax(logits / self.mma_temperature[adapter_name], dim=-1)

    def _row_weights(self, adapter_name: str, x: torch.Tensor, routing) -> torch.Tensor:
        """Routing weights of shape (batch, 1, 2) for an LLM adapter."""
        if isinstance(routing, RoutingRecorder):
            weights = self.route(adapter_name, x[:, 0])
            routing.record(self.routing_key, weights)
        elif isinstance(routing, dict):
            weights = routing[self.routing_key]
        else:
            # No routing given (a direct call): route on position 0, as the reference does with its modality token.
            weights = self.route(adapter_name, x[:, 0])
        return weights.unsqueeze(1)

    # ---------------------------------------------------------------------------------------------------- forward
    def adapt(self, x: torch.Tensor, routing=None) -> torch.Tensor:
        """Apply the active adapter to `x` (batch, seq, width)."""
        adapter_name = self._single_active_adapter()
        compute_dtype = self.mma_down[adapter_name].weight.dtype
        xf = x.to(compute_dtype)
        h = self.mma_dropout[adapter_name](self.mma_down[adapter_name](xf))
        scale = self.mma_scale[adapter_name]
        if not self.routed:
            return (xf + scale * self.mma_up_0[adapter_name](h)).to(x.dtype)
        up_0, up_1 = self.mma_up_0[adapter_name], self.mma_up_1[adapter_name]
        if self.routing_key is None:  # vision: every token routes on its own input
            weights = self.route(adapter_name, xf).to(compute_dtype)
            mixed = weights[..., 0:1] * up_0(h) + weights[..., 1:2] * up_1(h)
        else:
            # One weight per row: mix the two small up-projections first, then apply the mix once, instead of
            # running both on the (batch, seq, width) activations and mixing those.
            weights = self._row_weights(adapter_name, xf, routing)[:, 0].to(compute_dtype)  # (batch, 2)
            groups, width = up_0.groups, self.width
            row_weight = torch.einsum("bp,pwi->bwi", weights, torch.stack((up_0.weight, up_1.weight)))
            row_bias = weights @ torch.stack((up_0.bias, up_1.bias))
            blocks = row_weight.view(-1, groups, width // groups, row_weight.shape[-1])
            mixed = torch.einsum("blgi,bgoi->blgo", h.unflatten(-1, (groups, -1)), blocks).flatten(-2)
            mixed = mixed + row_bias.unsqueeze(1)
        return (xf + scale * mixed).to(x.dtype)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        routing = kwargs.pop(ROUTING_KWARG, None)
        if routing is None and self._pending_routing is not None:
            routing, self._pending_routing = self._pending_routing, None
        if self._mlp_partner is not None:
            self._mlp_partner._pending_routing = routing
        if self.disable_adapters or not self.active_adapters or self.merged:
            return self.base_layer(hidden_states, *args, **kwargs)
        return self.base_layer(self.adapt(hidden_states, routing), *args, **kwargs)

    def _single_active_adapter(self) -> str:
        active = [name for name in self.active_adapters if name in self.mma_down]
        if len(active) != 1:
            raise ValueError(
                f"MMA runs exactly one active adapter per layer; active here: {active}. Use set_adapter(name)."
            )
        return active[0]

    # ------------------------------------------------------------------------------------------------------ merge
    def folded_affine(self, adapter_name: str, weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """
        The adapter as an affine map `y = P x + c` for fixed routing `weights` (2,), dropout off.

        P = I + s M A and c = s (M a + w0 b0 + w1 b1), with M = w0 U0 + w1 U1 (dense) and A x + a the down-projection.
        """
        down = self.mma_down[adapter_name]
        scale = self.mma_scale[adapter_name]
        up_0 = self.mma_up_0[adapter_name]
        if self.routed:
            up_1 = self.mma_up_1[adapter_name]
            w0, w1 = weights.to(down.weight.dtype)
            mix = w0 * up_0.dense_weight() + w1 * up_1.dense_weight()
            mix_bias = w0 * up_0.bias + w1 * up_1.bias
        else:
            mix, mix_bias = up_0.dense_weight(), up_0.bias
        eye = torch.eye(self.width, dtype=down.weight.dtype, device=down.weight.device)
        project = eye + scale * mix @ down.weight
        shift = scale * (mix @ down.bias + mix_bias)
        return project, shift

    def unload_and_optionally_merge_module(
        self, merge: bool, safe_merge: bool = False, adapter_names: list[str] | None = None
    ) -> nn.Module:
        """Return the wrapped module, with the adapter folded into its input projections when `merge`."""
        base = self.get_base_layer()
        if not merge:
            return base
        if self.routed and self.routing_key is None:
            return self  # per-token routing is not linear: this adapter cannot fold and stays
        adapter_name = self._single_active_adapter()
        project, shift = self.folded_affine(adapter_name, getattr(self, "_merge_weights", None))
        fold_into_input_projections(base, project, shift, safe_merge)
        return base

    def __repr__(self) -> str:
        return "mma." + super().__repr__()
