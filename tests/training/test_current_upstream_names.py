"""A training run makes no deprecated call of transformers: the project calls `activation_checkpointing*`, the names
transformers 5.24 introduced for `gradient_checkpointing*` (removed in v6), so no FutureWarning comes from its code.

PEFT 0.21 and TRL 1.16 still call the old names themselves (`PeftModel` reads `is_gradient_checkpointing`, TRL's
`SFTConfig` defaults `gradient_checkpointing=True`): their warnings are told apart by the caller of the deprecated name.
"""

from __future__ import annotations

import traceback
import warnings
from pathlib import Path

import transformers
from trl import SFTConfig

import transformers_lavin
from transformers_lavin.data import load_scienceqa, write_synthetic_scienceqa
from transformers_lavin.training import LavinModelArguments, MMAArguments, build_trainer, load_model_and_processor

TRANSFORMERS_DIR = str(Path(transformers.__file__).parent)
PROJECT_DIRS = (str(Path(transformers_lavin.__file__).parent), str(Path(__file__).parents[1]))


class FutureWarningCallers:
    """Records, for each FutureWarning, the first frame outside transformers: the code that called the old name."""

    def __init__(self, monkeypatch):
        self.callers: list[tuple[str, traceback.FrameSummary]] = []
        warnings.simplefilter("always", FutureWarning)  # pytest restores the filters after the test
        monkeypatch.setattr(warnings, "showwarning", self._record)

    def _record(self, message, category, filename, lineno, file=None, line=None):
        if issubclass(category, FutureWarning):
            stack = traceback.extract_stack()[:-1]
            outside = [
                f for f in stack if not f.filename.startswith(TRANSFORMERS_DIR) and "warnings" not in f.filename
            ]
            self.callers.append((str(message), outside[-1]))

    def from_the_project(self) -> list[str]:
        return [
            f"{message} <- {f.filename}:{f.lineno}"
            for message, f in self.callers
            if f.filename.startswith(PROJECT_DIRS)
        ]


def test_a_training_run_calls_only_current_names(tmp_path, monkeypatch):
    callers = FutureWarningCallers(monkeypatch)
    root = write_synthetic_scienceqa(tmp_path / "sqa", num_train=8, num_val=0, num_test=0, seed=1)
    dataset = load_scienceqa(root, "train", prompt_format="QCM-A")
    model, processor = load_model_and_processor(LavinModelArguments(tiny=True), seed=0)
    # Reentrant, as PEFT's k-bit recipe leaves it: MMA switches it to non-reentrant when it wraps the model.
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
    config = SFTConfig(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=2, logging_steps=1,
        save_strategy="no", report_to=[], bf16=False, activation_checkpointing=True, max_length=None, use_cpu=True,
        disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = build_trainer(model, processor, dataset, config, MMAArguments())
    trainer.train()
    layers = [m for m in trainer.model.modules() if getattr(m, "gradient_checkpointing", False)]
    assert layers and all(not m._gradient_checkpointing_func.keywords["use_reentrant"] for m in layers)
    assert callers.from_the_project() == []

    # The records can tell: an old name called from here is attributed here.
    assert trainer.model.get_base_model().is_gradient_checkpointing
    assert [f.filename for _, f in callers.callers[-1:]] == [__file__]
