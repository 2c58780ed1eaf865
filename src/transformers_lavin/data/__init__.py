"""ScienceQA data for LaVIN: the reference prompt formats, a reader of the official layout, a synthetic demo set."""

from .prompts import DEFAULT_PROMPT_FORMAT, OPTION_LETTERS, PROMPT_FORMATS, build_prompt
from .scienceqa import context_categories, load_scienceqa
from .synthetic import write_synthetic_scienceqa
from .training_datasets import load_training_datasets

__all__ = [
    "DEFAULT_PROMPT_FORMAT",
    "OPTION_LETTERS",
    "PROMPT_FORMATS",
    "build_prompt",
    "context_categories",
    "load_scienceqa",
    "load_training_datasets",
    "write_synthetic_scienceqa",
]
