"""The routing view: the weights of the turn's modality, drawn as a small plot."""

from __future__ import annotations

import torch

from transformers_lavin import compute_routing_table
from transformers_lavin.chat import plot_routing, routing_for_turn
from transformers_lavin.testing_utils import build_tiny_lavin


def test_routing_for_turn_picks_the_modality_row(demo_model):
    model, _ = demo_model
    table = compute_routing_table(model)
    num_layers = model.config.text_config.num_hidden_layers
    for has_image in (False, True):
        weights = routing_for_turn(model, has_image)
        assert weights.shape == (num_layers, 2)
        torch.testing.assert_close(weights, table[:, int(has_image)])
        torch.testing.assert_close(weights.sum(-1), torch.ones(num_layers))
    # The router sees the modality token, so text-only and image turns are routed differently.
    assert not torch.equal(routing_for_turn(model, False), routing_for_turn(model, True))


def test_model_without_adapters_has_no_routing():
    base, _ = build_tiny_lavin(seed=0)
    assert routing_for_turn(base, True) is None
    figure = plot_routing(None, True)
    assert "no MMA adapters" in " ".join(text.get_text() for text in figure.axes[0].texts)


def test_plot_shows_each_layer_and_path():
    weights = torch.tensor([[0.25, 0.75], [0.6, 0.4], [0.5, 0.5]])
    figure = plot_routing(weights, has_image=True)
    axes = figure.axes[0]
    assert "image + text" in axes.get_title()
    assert len(axes.containers) == 2  # one bar series per path, stacked
    path0, path1 = axes.containers
    assert [bar.get_height() for bar in path0] == [0.25, 0.6, 0.5]
    assert [bar.get_y() for bar in path1] == [0.25, 0.6, 0.5]  # path 1 sits on top of path 0
    assert [text.get_text() for text in axes.get_legend().get_texts()] == ["path 0 (U0)", "path 1 (U1)"]
    assert "text-only" in plot_routing(weights, has_image=False).axes[0].get_title()
