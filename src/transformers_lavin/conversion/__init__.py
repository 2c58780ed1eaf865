"""Conversion between the reference LaVIN code's adapter checkpoints (`luogen1996/LaVIN`) and this package's format.

- `convert_lavin_checkpoint`: reference `.pth` + LLaMA + CLIP (HF format) -> a LaVIN base directory plus an MMA
  adapter directory, or one merged model directory.
- `export_to_reference`: an MMA adapter -> a reference `.pth`, for the reference's own evaluation.
- Console script: `lavin-convert` (see `cli.py` and docs/conversion.md).
"""

from .convert import ConversionResult, convert_lavin_checkpoint, read_reference_adapter
from .export import export_to_reference, reference_flags
from .key_mapping import peft_to_reference, reference_to_peft
from .reference_format import (
    LavinConversionError,
    ReferenceAdapter,
    load_reference_checkpoint,
    parse_reference_adapter,
)

__all__ = [
    "ConversionResult",
    "LavinConversionError",
    "ReferenceAdapter",
    "convert_lavin_checkpoint",
    "export_to_reference",
    "load_reference_checkpoint",
    "parse_reference_adapter",
    "peft_to_reference",
    "read_reference_adapter",
    "reference_flags",
    "reference_to_peft",
]
