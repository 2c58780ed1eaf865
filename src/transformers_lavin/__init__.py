"""transformers-lavin: LaVIN and Mixture-of-Modality Adaptation (MMA) for transformers, PEFT and TRL.

Importing the package registers the `lavin` model type with transformers' Auto classes and MMA with PEFT, and turns
off what would reach the network unasked: Hub kernels and telemetry (`transformers_lavin.offline`).
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

# First, before PEFT imports bitsandbytes: filter other libraries' notices, no Hub kernels or telemetry unasked.
from . import _logging, offline  # noqa: F401
from .assembly import build_lavin_from_parts
from .configuration_lavin import LavinConfig
from .mma import MMAConfig, MMAModel, compute_routing_table, register_mma_with_peft
from .modeling_lavin import LavinForConditionalGeneration, LavinModel, LavinPreTrainedModel
from .processing_lavin import LavinProcessor, lavin_image_processor

__version__ = "0.1.0"

AutoConfig.register("lavin", LavinConfig, exist_ok=True)
AutoModel.register(LavinConfig, LavinModel, exist_ok=True)
AutoModelForImageTextToText.register(LavinConfig, LavinForConditionalGeneration, exist_ok=True)
AutoProcessor.register(LavinConfig, LavinProcessor, exist_ok=True)
register_mma_with_peft()

# Saved models and processors carry `auto_map` and their code, for users without this package.
LavinConfig.register_for_auto_class()
LavinModel.register_for_auto_class("AutoModel")
LavinForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
LavinProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "LavinConfig",
    "LavinForConditionalGeneration",
    "LavinModel",
    "LavinPreTrainedModel",
    "LavinProcessor",
    "MMAConfig",
    "MMAModel",
    "build_lavin_from_parts",
    "compute_routing_table",
    "lavin_image_processor",
]
