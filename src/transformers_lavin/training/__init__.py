"""Fine-tuning LaVIN with TRL's `SFTTrainer`: what `lavin-train` runs, as functions the Python API can call too."""

from .arguments import (
    LavinModelArguments,
    LavinScriptArguments,
    MMAArguments,
    check_gradient_checkpointing,
    parse_args,
    validate_arguments,
)
from .checkpoints import BASE_MODEL_DIR, resume_point, run_is_finished, save_aside
from .trainer import build_trainer, load_model_and_processor, record_base_model, save_run

__all__ = [
    "BASE_MODEL_DIR",
    "LavinModelArguments",
    "LavinScriptArguments",
    "MMAArguments",
    "build_trainer",
    "check_gradient_checkpointing",
    "load_model_and_processor",
    "parse_args",
    "record_base_model",
    "resume_point",
    "run_is_finished",
    "save_aside",
    "save_run",
    "validate_arguments",
]
