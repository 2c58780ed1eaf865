"""The routing view: which adapter path each LLM layer weighted for the current turn."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..mma import compute_routing_table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Path j is the adapter's up-projection U_j (the reference's conv_B / conv_D); which one serves images is learned.
PATH_LABELS = ("path 0 (U0)", "path 1 (U1)")
PATH_COLORS = ("#4c78a8", "#f58518")


def routing_for_turn(model: Any, has_image: bool) -> torch.Tensor | None:
    """
    Routing weights the model uses for a turn of the given modality.

    MMA routes on the modality token alone, so the weights depend only on whether the input has an image; they
    are one row of the model's routing table.

    Args:
        model (`LavinForConditionalGeneration` or `PeftModel`):
            The model.
        has_image (`bool`):
            Whether the turn's input has an image.

    Returns:
        `torch.Tensor` of shape `(num_llm_layers, 2)` with the two path weights per layer, or `None` for a model
        without MMA adapters.
    """
    table = compute_routing_table(model)
    if table is None:
        return None
    return table[:, int(has_image)].detach().float().cpu()


def plot_routing(weights: torch.Tensor | None, has_image: bool) -> Figure:
    """
    Draw per-layer routing weights as stacked bars (the two weights of a layer sum to 1).

    Args:
        weights (`torch.Tensor` of shape `(num_llm_layers, 2)`, *optional*):
            As returned by [`routing_for_turn`]; `None` draws a note that the model has no router.
        has_image (`bool`):
            Whether the turn had an image, for the title.

    Returns:
        `matplotlib.figure.Figure`: a small figure (built without pyplot, so it is safe off the main thread).
    """
    from matplotlib.figure import Figure  # only when a page draws it: `lavin-chat --help` needs no plotting

    figure = Figure(figsize=(5, 2.6), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    if weights is None:
        axes.text(
            0.5, 0.5, "This model has no MMA adapters,\nso there is no routing to show.", ha="center", va="center"
        )
        axes.set_axis_off()
        return figure

    layers = range(len(weights))
    bottom = torch.zeros(len(weights))
    for path, (label, color) in enumerate(zip(PATH_LABELS, PATH_COLORS, strict=True)):
        axes.bar(layers, weights[:, path], bottom=bottom, label=label, color=color, width=0.7)
        bottom += weights[:, path]
    axes.set_title(f"Routing this turn ({'image + text' if has_image else 'text-only'} input)", fontsize=10)
    axes.set_xlabel("LLM layer")
    axes.set_ylabel("weight")
    axes.set_xticks(list(layers))
    axes.set_ylim(0, 1)
    axes.legend(loc="upper right", fontsize=8, framealpha=0.8)
    return figure
