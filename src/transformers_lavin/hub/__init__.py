"""Sharing LaVIN models and MMA adapters on the Hugging Face Hub, with model cards (see `docs/hub.md`)."""

from .cards import (
    CARD_KINDS,
    SCIENCEQA_DATASET_ID,
    TEMPLATES_DIR,
    check_repo_id,
    make_model_card,
    scienceqa_eval_results,
)
from .push import push_adapter_to_hub, push_model_to_hub, resolve_token

__all__ = [
    "CARD_KINDS",
    "SCIENCEQA_DATASET_ID",
    "TEMPLATES_DIR",
    "check_repo_id",
    "make_model_card",
    "push_adapter_to_hub",
    "push_model_to_hub",
    "resolve_token",
    "scienceqa_eval_results",
]
