"""What every evaluation task provides: samples to generate for, a per-sample score, and a summary."""

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Sample:
    """
    One evaluation item.

    Args:
        id (`str`): Unique within the task; the key that lets an interrupted run resume.
        prompt (`str`): The task's text for the model, without any image placeholder (the model adapter adds that).
        images (`list[str]`): Paths of the sample's images (may be empty).
        target (`Any`): What the output is scored against (JSON-serialisable).
        meta (`dict[str, Any]`): Anything else the score or the summary needs (JSON-serialisable).
    """

    id: str
    prompt: str
    images: list[str] = field(default_factory=list)
    target: Any = None
    meta: dict[str, Any] = field(default_factory=dict)


class Task(ABC):
    """
    An evaluation task. A task is built from its data path and options, then [`load`] gives the samples, [`score`]
    turns one generation into a JSON record and [`summarize`] turns all records into metrics. The summary is computed
    from the records alone, so a resumed run ends with the same numbers as an uninterrupted one.

    Subclasses set `name`, `max_new_tokens` (generation budget), `headline_metrics` (the keys of the summary shown in
    tables and charts, in order), `overall_metric` (the one key shown in the overall chart) and `unit` (what the
    headline numbers are, for chart axes).
    """

    name: str = ""
    max_new_tokens: int = 32
    headline_metrics: Sequence[str] = ()
    overall_metric: str = ""
    unit: str = "accuracy (%)"
    # "generate": the model writes an answer that `score` reads. "likelihood": the model scores the texts of
    # `options(sample)` after `prompt + answer_prefix`, and `answer_from_scores` writes the answer that `score` reads.
    scoring: str = "generate"
    answer_prefix: str = ""
    option_suffix: str = ""

    @abstractmethod
    def load(self) -> list[Sample]:
        """Reads the task's files and returns its samples."""

    @abstractmethod
    def score(self, sample: Sample, output: str) -> dict[str, Any]:
        """The per-sample fields saved with the generation (must be JSON-serialisable)."""

    def options(self, sample: Sample) -> list[str]:
        """For `scoring = "likelihood"`: the option texts the model scores after `prompt + answer_prefix`."""
        raise NotImplementedError(f"Task {self.name!r} is scored by generation, not by option likelihood.")

    def answer_from_scores(self, sample: Sample, scores: Sequence[float]) -> str:
        """For `scoring = "likelihood"`: the answer text, read by [`score`], for one score per option."""
        raise NotImplementedError(f"Task {self.name!r} is scored by generation, not by option likelihood.")

    def score_failed(self, sample: Sample) -> dict[str, Any]:
        """The per-sample fields of a sample that got no output (unreadable image, failed batch): it counts as wrong."""
        fields = self.score(sample, "")
        return {**fields, "correct": False} if "correct" in fields else fields

    @abstractmethod
    def summarize(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Metrics from the saved records; the keys of `headline_metrics` must be among them."""

    def config(self) -> dict[str, Any]:
        """The task's settings, written next to the results so a run can be told apart from another."""
        return {"task": self.name, "max_new_tokens": self.max_new_tokens}


def read_json(path: str | Path, what: str) -> Any:
    """
    Reads a JSON file with an error that names the file and what it should be.

    Args:
        path (`str | Path`): The file.
        what (`str`): What the file is, for the error message (e.g. `"ScienceQA problems.json"`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found at {path}. Check the data path given for this task.")
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{what} at {path} is not valid JSON: {error}") from error


def read_jsonl(path: str | Path, what: str) -> list[Any]:
    """
    Reads a JSON-lines file (also accepts a file holding one JSON list), skipping blank lines.

    Args:
        path (`str | Path`): The file.
        what (`str`): What the file is, for the error message.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found at {path}. Check the data path given for this task.")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return read_json(path, what)
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{what} at {path}, line {number}, is not valid JSON: {error}") from error
    return rows


def require_fields(row: Any, fields: Sequence[str], where: str) -> None:
    """
    Raises a `ValueError` naming the record and the missing fields when `row` lacks any of `fields`.

    Args:
        row (`Any`): A record read from a data file.
        fields (`Sequence[str]`): The fields the task needs.
        where (`str`): Which record of which file, for the message.
    """
    if not isinstance(row, Mapping):
        raise ValueError(f"{where} should be a JSON object with fields {list(fields)}; got {type(row).__name__}.")
    missing = [name for name in fields if name not in row]
    if missing:
        raise ValueError(
            f"{where} lacks the field(s) {missing} (it has {sorted(row)}). Fix the file, or check that it is in the "
            "layout this task reads (see docs/evaluation.md)."
        )
