"""Exact, stateless routing for the LLM adapters.

In the reference, a modality token sits at position 0 and no other token attends to it, so its hidden state, and
hence every router's input, depends only on the modality. The routing weights therefore form a small table: for each
adapter, the weights the modality token gets, for modality 0 (text) and 1 (image). We compute the table by running
the two modality embeddings alone through the decoder (one token each, at position 0), then run the real sequence
without the token, giving each row the weights of its modality. RoPE is relative and the token is never attended,
so dropping it changes nothing.

The table and the per-row weights travel as a keyword argument: transformers' decoders hand `**kwargs` to each
decoder layer and on to `self_attn`, where the MMA wrapper picks them up. That works with every attention backend
and inside gradient-checkpointed layers. During generation the table is computed once, at prefill, and kept on the
KV cache object for the decoding steps.
"""

from __future__ import annotations

import torch

ROUTING_KWARG = "mma_routing"
MODALITY_IDS_KWARG = "modality_ids"
_CACHE_ATTRIBUTE = "_mma_routing_table"


class RoutingRecorder:
    """Collects the weights each adapter computes during the routing pass: key -> (num_modalities, 2)."""

    def __init__(self):
        self.weights: dict[str, torch.Tensor] = {}

    def record(self, key: str, weights: torch.Tensor) -> None:
        self.weights[key] = weights


def run_routing_pass(decoder: torch.nn.Module, modality_embeddings: torch.Tensor) -> dict[str, torch.Tensor]:
    """
    Run the modality embeddings alone through `decoder` and return the routing table.

    Args:
        decoder: The decoder stack (e.g. `LlamaModel`) with MMA adapters on its layers.
        modality_embeddings: (num_modalities, width); row m is the embedding of modality m.

    Returns:
        `dict` mapping each adapter's routing key to its weights, shape (num_modalities, 2).
    """
    recorder = RoutingRecorder()
    num_modalities = modality_embeddings.shape[0]
    position_ids = torch.zeros(num_modalities, 1, dtype=torch.long, device=modality_embeddings.device)
    decoder(
        inputs_embeds=modality_embeddings.unsqueeze(1),
        position_ids=position_ids,
        use_cache=False,
        **{ROUTING_KWARG: recorder},
    )
    return recorder.weights


def rows_from_table(table: dict[str, torch.Tensor], modality_ids: torch.LongTensor) -> dict[str, torch.Tensor]:
    """Per-row routing weights: for each adapter, `table[key][modality_ids]`, shape (batch, 2)."""
    # One gather for all adapters instead of one per adapter: this runs at every decoding step.
    rows = torch.stack(list(table.values()))[:, modality_ids]
    return dict(zip(table.keys(), rows.unbind(0), strict=True))


def cached_table(cache) -> dict[str, torch.Tensor] | None:
    return getattr(cache, _CACHE_ATTRIBUTE, None) if cache is not None else None


def store_table(cache, table: dict[str, torch.Tensor]) -> None:
    if cache is not None:
        setattr(cache, _CACHE_ATTRIBUTE, table)


def compute_routing_table(model: torch.nn.Module) -> torch.Tensor | None:
    """
    The routing weights of the LLM attention adapters, for display and analysis.

    Args:
        model: A PEFT model with MMA adapters (or anything holding an `MMAModel`).

    Returns:
        `torch.Tensor` of shape (num_adapted_layers, 2, 2), in layer order: `table[layer, modality, path]`, with
        modality 0 = text-only input and 1 = input with an image, and path j the weight of up-projection j.
        `None` when the model has no MMA adapters (e.g. after `merge_and_unload`).
    """
    from .model import MMAModel

    tuner = next((m for m in model.modules() if isinstance(m, MMAModel)), None)
    if tuner is None:
        return None
    with torch.no_grad():
        table = tuner.routing_table()
    keys = [key for key in table if not key.endswith(".mlp")]
    return torch.stack([table[key].float().cpu() for key in keys]) if keys else None
