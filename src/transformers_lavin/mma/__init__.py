"""Mixture-of-Modality Adaptation (MMA), LaVIN's adapters, as a PEFT method."""

from .config import MMAConfig
from .layer import GroupedLinear, MMALayer
from .model import MMAModel
from .peft_registration import add_mma_peft_type, register_mma_with_peft
from .routing import compute_routing_table

__all__ = [
    "GroupedLinear",
    "MMAConfig",
    "MMALayer",
    "MMAModel",
    "add_mma_peft_type",
    "compute_routing_table",
    "register_mma_with_peft",
]
