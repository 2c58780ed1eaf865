"""Folding an MMA adapter into the linear layers that read its output, and taking it out again.

For fixed routing weights an adapter is the affine map `y = P x + c` with `P = I + U V` (`U = s M`, width x hidden;
`V = A`, hidden x width), so a linear layer `L(x) = W x + b` that reads `y` becomes `W' = W P`, `b' = b + W c`. The
update is of rank `hidden` (8), so it is undone exactly with the Woodbury identity:
`W = W' P^-1 = W' - (W' U) (I + V U)^-1 V`, then `b = b' - W c`.
"""

from __future__ import annotations

import torch
from torch import nn

# Linear layers that read an attention's or MLP's input.
ATTENTION_INPUT_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "qkv_proj", "qkv")  # `qkv`: Qwen2-VL's vision tower
MLP_INPUT_PROJECTIONS = ("gate_proj", "up_proj", "gate_up_proj", "fc1", "linear_fc1")  # `linear_fc1`: Qwen3-VL's
INPUT_PROJECTIONS = ATTENTION_INPUT_PROJECTIONS + MLP_INPUT_PROJECTIONS


def input_projections(module: nn.Module) -> dict[str, nn.Linear]:
    """The linear layers of `module` that read its input, by name."""
    readers = {name: getattr(module, name) for name in INPUT_PROJECTIONS if hasattr(module, name)}
    readers = {name: linear for name, linear in readers.items() if isinstance(linear, nn.Module)}
    if not readers:
        raise ValueError(
            f"Cannot merge an MMA adapter into {type(module).__name__}: it has none of the input projections "
            f"{INPUT_PROJECTIONS}. Keep the adapter unmerged."
        )
    for name, linear in readers.items():
        if type(linear) is not nn.Linear:
            raise ValueError(
                f"Cannot merge into {name}, a {type(linear).__name__} (quantised?); load the base unquantised to merge."
            )
    return readers


@torch.no_grad()
def fold(
    module: nn.Module,
    up: torch.Tensor,
    down: torch.Tensor,
    shift: torch.Tensor,
    safe_merge: bool = False,
    adapter_name: str = "",
    keep_input: bool = True,
) -> list[str]:
    """
    Make each input projection of `module` read `(I + up @ down) x + shift` instead of `x` (or `up @ down x + shift`
    with `keep_input=False`, the reference's plain vision adapter, which has no identity path).

    Returns:
        The names of the projections that had no bias and got one.
    """
    readers = input_projections(module)
    updates = {}
    for name, linear in readers.items():
        weight = linear.weight.double()
        low_rank = (weight @ up.double()) @ down.double()  # W U V, never the dense width x width product
        new_weight = weight + low_rank if keep_input else low_rank
        new_bias = weight @ shift.double() + (linear.bias.double() if linear.bias is not None else 0.0)
        if safe_merge and not (torch.isfinite(new_weight).all() and torch.isfinite(new_bias).all()):
            raise ValueError(f"NaNs detected in the merged weights. The adapter {adapter_name} seems to be broken")
        updates[name] = (new_weight, new_bias)
    created = []
    for name, (new_weight, new_bias) in updates.items():
        linear = readers[name]
        linear.weight.data = new_weight.to(linear.weight.dtype)
        if linear.bias is None:
            linear.bias = nn.Parameter(new_bias.to(linear.weight.dtype), requires_grad=False)
            created.append(name)
        else:
            linear.bias.data = new_bias.to(linear.bias.dtype)
    return created


@torch.no_grad()
def unfold(module: nn.Module, up: torch.Tensor, down: torch.Tensor, shift: torch.Tensor, created: list[str]) -> None:
    """Undo [`fold`] with the same factors; projections that got a bias from it lose it again."""
    up, down = up.double(), down.double()
    core = torch.linalg.inv(torch.eye(down.shape[0], dtype=torch.float64, device=down.device) + down @ up)
    for name, linear in input_projections(module).items():
        merged = linear.weight.double()
        weight = merged - (merged @ up) @ core @ down
        bias = linear.bias.double() - weight @ shift.double()
        linear.weight.data = weight.to(linear.weight.dtype)
        if name in created:
            linear.bias = None
        else:
            linear.bias.data = bias.to(linear.bias.dtype)
