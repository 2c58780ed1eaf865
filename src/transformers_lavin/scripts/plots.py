"""PNG plots of a training run: the training loss and MMA's routing weights per LLM layer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure

MODALITY_LABELS = ("text-only input", "input with an image")
MODALITY_COLORS = ("#4c78a8", "#f58518")


def plot_training_loss(log_history: Sequence[Mapping], path: str | Path) -> Path:
    """
    Plots the logged training loss against the optimiser step.

    Args:
        log_history: `trainer.state.log_history`; entries with a `"loss"` and a `"step"` are plotted.
        path: Where to write the PNG.

    Returns:
        `Path`: `path`.
    """
    points = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry and "step" in entry]
    if not points:
        raise ValueError("The log history holds no training loss; train with logging_steps smaller than the run.")
    steps, losses = zip(*points, strict=True)
    figure = Figure(figsize=(6, 3.5), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    axes.plot(steps, losses, marker="o", markersize=3)
    axes.set_xlabel("optimiser step")
    axes.set_ylabel("training loss (answer tokens)")
    axes.set_title("MMA fine-tuning: training loss")
    axes.grid(alpha=0.3)
    path = Path(path)
    figure.savefig(path)
    return path


def plot_routing_weights(table: torch.Tensor, path: str | Path) -> Path:
    """
    Plots MMA's routing per LLM layer: the weight of adapter path 1 for text-only inputs and for inputs with an image.
    The two paths' weights sum to 1, so path 0's weight is the rest; bars far apart mean the modalities are routed
    differently.

    Args:
        table: [`transformers_lavin.compute_routing_table`]'s output, shape `(num_layers, 2 modalities, 2 paths)`.
        path: Where to write the PNG.

    Returns:
        `Path`: `path`.
    """
    if table is None or table.ndim != 3 or table.shape[1:] != (2, 2):
        raise ValueError(
            "Expected a routing table of shape (num_layers, 2, 2) from compute_routing_table(model); got "
            f"{None if table is None else tuple(table.shape)}. Does the model have MMA adapters?"
        )
    table = table.detach().float().cpu()
    num_layers = table.shape[0]
    width = 0.38
    figure = Figure(figsize=(max(5, 0.7 * num_layers + 2), 3.5), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    for modality, (label, color) in enumerate(zip(MODALITY_LABELS, MODALITY_COLORS, strict=True)):
        offsets = [layer + (modality - 0.5) * width for layer in range(num_layers)]
        axes.bar(offsets, table[:, modality, 1].tolist(), width=width, label=label, color=color)
    axes.axhline(0.5, color="gray", linestyle="--", linewidth=0.8)
    axes.set_xticks(list(range(num_layers)))
    axes.set_xlabel("LLM layer")
    axes.set_ylabel("weight of adapter path 1")
    axes.set_ylim(0, 1)
    axes.set_title("MMA routing per LLM layer (path 0 gets the rest)", fontsize=10)
    axes.legend(fontsize=8, loc="upper right")
    path = Path(path)
    figure.savefig(path)
    return path


__all__ = ["plot_routing_weights", "plot_training_loss"]
