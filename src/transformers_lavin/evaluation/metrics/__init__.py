"""Metric functions, usable without the runner."""

from .binary import binary_scores, parse_yes_no
from .captioning import CAPTION_METRICS, caption_scores
from .scienceqa import SCIENCEQA_COLUMNS, extract_answer, problem_columns, scienceqa_scores
from .vqa import normalize_vqa_answer, vqa_accuracy

__all__ = [
    "CAPTION_METRICS",
    "SCIENCEQA_COLUMNS",
    "binary_scores",
    "caption_scores",
    "extract_answer",
    "normalize_vqa_answer",
    "parse_yes_no",
    "problem_columns",
    "scienceqa_scores",
    "vqa_accuracy",
]
