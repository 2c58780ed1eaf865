"""LaVIN-lite: a bitsandbytes-quantised LLM under full-precision adapters."""

from __future__ import annotations

import importlib.util

import torch
from transformers import BitsAndBytesConfig

# Only the LLM is quantised, as in the reference's lite models; these stay in full precision.
LAVIN_UNQUANTISED_MODULES = [
    "model.vision_tower",
    "model.multi_modal_projector",
    "model.modality_embedding",
    "lm_head",
]


def lavin_lite_quantization_config(
    bits: int = 4, compute_dtype: torch.dtype = torch.bfloat16, quant_type: str = "nf4"
) -> BitsAndBytesConfig:
    """
    A `BitsAndBytesConfig` that quantises LaVIN's LLM to 4 or 8 bits and leaves the vision tower, projector,
    modality embedding and LM head as they are. Pass it as `quantization_config` to `from_pretrained`.

    Raises:
        ImportError: when bitsandbytes is not installed, saying how to install it.
    """
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError(
            "LaVIN-lite quantises the LLM with bitsandbytes, which is not installed: "
            "pip install 'transformers-lavin[quant]' (or pip install bitsandbytes)."
        )
    if bits == 4:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_compute_dtype=compute_dtype,
            bnb_4bit_quant_type=quant_type,
            llm_int8_skip_modules=LAVIN_UNQUANTISED_MODULES,
        )
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=LAVIN_UNQUANTISED_MODULES)
    raise ValueError(f"bits must be 4 or 8, got {bits}.")


__all__ = ["LAVIN_UNQUANTISED_MODULES", "lavin_lite_quantization_config"]
