"""Mixture-of-Modality Adaptation (MMA), LaVIN's adapters, as a PEFT method."""

from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
from peft.utils import register_peft_method

from .config import MMAConfig
from .layer import GroupedLinear, MMALayer, MMAModalityEmbedding
from .model import MMAModel
from .peft_registration import add_mma_peft_type
from .routing import compute_routing_table


def register_mma_with_peft() -> None:
    """Register MMA's config and tuner with PEFT (idempotent)."""
    if add_mma_peft_type() not in PEFT_TYPE_TO_CONFIG_MAPPING:
        register_peft_method(name="mma", config_cls=MMAConfig, model_cls=MMAModel, prefix="mma_")


__all__ = [
    "GroupedLinear",
    "MMAConfig",
    "MMALayer",
    "MMAModalityEmbedding",
    "MMAModel",
    "add_mma_peft_type",
    "compute_routing_table",
    "register_mma_with_peft",
]
