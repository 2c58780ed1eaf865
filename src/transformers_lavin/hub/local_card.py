"""The package's model card for an adapter saved on disk (what `lavin-train` writes with every save)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard

from .cards import DEFAULT_PROMPT, make_model_card
from .push import _adapter_settings

README_NAME = "README.md"
# Where the text of TRL's (and transformers') trainer card that a LaVIN card keeps begins.
TRAINING_PROCEDURE = "## Training procedure"


def write_local_adapter_card(
    output_dir: str | Path,
    peft_model,
    base_model: str,
    datasets: Sequence[str] = (),
    metrics: Mapping[str, Any] | None = None,
    example_prompt: str = DEFAULT_PROMPT,
    adapter_name: str = "default",
    trainer_card: ModelCard | None = None,
) -> Path:
    """
    Writes `output_dir/README.md`: the LaVIN/MMA adapter card, naming the base model the adapter was trained on (a Hub
    id or a local folder), the training data, the adapter settings and training metrics, with a usage snippet that
    loads `base_model` and `output_dir` and runs as written. Given the trainer's own card (`Trainer.create_model_card`,
    TRL's for `SFTTrainer`), the LaVIN card extends it: its tags, and its text from `## Training procedure` on
    (trackers, framework versions, citations); its generic description and text-generation snippet give way to
    LaVIN's.

    Args:
        output_dir (`str` or `Path`): the folder the adapter (and its processor) was saved in.
        peft_model (`PeftModel`): the trained model.
        base_model (`str`): Hub id or folder of the base LaVIN.
        datasets (`Sequence[str]`): the training data, by Hub id, path or description.
        metrics (`Mapping[str, Any]`, *optional*): training metrics to list (name -> value).
        example_prompt (`str`): the snippet's prompt.
        adapter_name (`str`): the adapter to describe.
        trainer_card (`ModelCard`, *optional*): the card the trainer wrote, to extend.

    Returns:
        `Path`: the card's path.
    """
    output_dir = Path(output_dir)
    settings = _adapter_settings(peft_model, adapter_name)
    settings.update({f"training: {name}": value for name, value in (metrics or {}).items()})
    if datasets:
        settings["training data"] = list(datasets)
    card = make_model_card(
        "adapter",
        str(output_dir.resolve()),
        base_model=base_model,
        processor_id=str(output_dir.resolve()),
        settings=settings,
        datasets=list(datasets) or None,
        tags=list((trainer_card.data.tags or []) if trainer_card is not None else []),
        example_prompt=example_prompt,
        local=True,
    )
    procedure = trainer_card.text.find(TRAINING_PROCEDURE) if trainer_card is not None else -1
    if procedure >= 0:
        card.text = card.text.rstrip() + "\n\n" + trainer_card.text[procedure:]
    path = output_dir / README_NAME
    card.save(path)
    return path


__all__ = ["write_local_adapter_card"]
