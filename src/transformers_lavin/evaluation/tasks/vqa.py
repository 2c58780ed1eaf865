"""Visual question answering, VQAv2 style: normalised answers and the VQA accuracy.

Standard layout (the official VQAv2 files), under one data directory:
```
*questions*.json     # {"questions": [{"question_id": 1, "image_id": 42, "question": "What color is the cat?"}]}
*annotations*.json   # {"annotations": [{"question_id": 1, "answers": [{"answer": "black"}, ...],
                     #                   "answer_type": "other"}]}
images/              # COCO_val2014_000000000042.jpg, named by `image_pattern`
```
Hub layout (`lmms-lab/VQAv2`, `HuggingFaceM4/VQAv2`): columns `question_id`, `question`, `answers` (a list of
`{answer, answer_confidence, answer_id}`, or of strings), `image`, and `answer_type` when present (else "other").
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..metrics.vqa import NORMALIZE_RULES, vqa_accuracy
from .base import Sample, Task, read_json, require_fields
from .sources import TableImage, load_hub_table, resolve_inside, table_root, use_hub_layout


def _find(data_dir: Path, given: str | Path | None, pattern: str, what: str) -> Path:
    if given is not None:
        return Path(given) if Path(given).is_absolute() else data_dir / given
    matches = sorted(data_dir.glob(pattern))
    if len(matches) != 1:
        raise FileNotFoundError(
            f"Expected exactly one VQA {what} file matching {pattern!r} in {data_dir}, found {len(matches)}: "
            f"{[m.name for m in matches]}. Name it with the {what}_file option."
        )
    return matches[0]


class VQATask(Task):
    """
    VQAv2-style open-ended questions: accuracy (in percent) overall and per answer type.

    Args:
        data_dir (`str | Path`): The directory with the questions and annotations files.
        questions_file, annotations_file (`str | Path`, *optional*): Explicit file names (relative to `data_dir`).
        image_dir (`str | Path`, *optional*): Defaults to `data_dir/images`.
        image_pattern (`str`, *optional*, defaults to `"COCO_val2014_{image_id:012d}.jpg"`): Image file name.
        instruction (`str`, *optional*, defaults to `"Answer the question using a single word or phrase."`)
        normalize (`str`, *optional*, defaults to `"official"`): When answers are processed; `"official"` or the
            project's `"always"` (see [`~metrics.vqa.vqa_accuracy`]).
        layout (`str`, *optional*, defaults to `"auto"`): `"official"`, `"hub"` or `"auto"` (see [`~tasks.sources`]).
        hub_split (`str`, *optional*, defaults to `"validation"`): The split read from a Hub id.
        max_new_tokens (`int`, *optional*, defaults to 16)
    """

    name = "vqa"
    overall_metric = "accuracy"
    headline_metrics = ("accuracy", "yes/no", "number", "other")

    def __init__(
        self,
        data_dir: str | Path,
        questions_file: str | Path | None = None,
        annotations_file: str | Path | None = None,
        image_dir: str | Path | None = None,
        image_pattern: str = "COCO_val2014_{image_id:012d}.jpg",
        instruction: str = "Answer the question using a single word or phrase.",
        normalize: str = "official",
        layout: str = "auto",
        hub_split: str = "validation",
        max_new_tokens: int = 16,
    ) -> None:
        if normalize not in NORMALIZE_RULES:
            raise ValueError(f"Unknown VQA normalize rule {normalize!r}; choose from {', '.join(NORMALIZE_RULES)}.")
        self.data_dir = Path(data_dir)
        self.hub = use_hub_layout(data_dir, layout)
        self.hub_split = hub_split
        self.questions_file, self.annotations_file = questions_file, annotations_file
        self.image_dir = Path(image_dir) if image_dir else self.data_dir / "images"
        self.image_pattern = image_pattern
        self.instruction = instruction
        self.normalize = normalize
        self.max_new_tokens = max_new_tokens

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "instruction": self.instruction,
            "normalize": self.normalize,
            "data": str(self.data_dir),
        }

    def _prompt(self, question: Any) -> str:
        return f"{question}\n{self.instruction}" if self.instruction else str(question)

    def _load_hub(self) -> list[Sample]:
        table = load_hub_table(
            self.data_dir, self.hub_split, ("question_id", "question", "answers", "image"), "VQA table"
        )
        root = table_root(self.data_dir)
        samples = []
        for index, row in enumerate(table.remove_columns("image")):
            answers = [a["answer"] if isinstance(a, Mapping) else str(a) for a in row["answers"]]
            samples.append(
                Sample(
                    id=str(row["question_id"]),
                    prompt=self._prompt(row["question"]),
                    images=[TableImage(table, index, "image", root)],
                    target=answers,
                    meta={"answer_type": row.get("answer_type") or "other"},
                )
            )
        return samples

    def load(self) -> list[Sample]:
        if self.hub:
            return self._load_hub()
        questions_path = _find(self.data_dir, self.questions_file, "*questions*.json", "questions")
        annotations_path = _find(self.data_dir, self.annotations_file, "*annotations*.json", "annotations")
        questions = read_json(questions_path, "VQA questions file")
        annotations = read_json(annotations_path, "VQA annotations file")
        require_fields(questions, ("questions",), f"The questions file {questions_path}")
        require_fields(annotations, ("annotations",), f"The annotations file {annotations_path}")
        by_question = {}
        for number, row in enumerate(annotations["annotations"]):
            require_fields(row, ("question_id", "answers"), f"annotations[{number}] of {annotations_path}")
            by_question[row["question_id"]] = row
        samples = []
        for number, row in enumerate(questions["questions"]):
            require_fields(row, ("question_id", "image_id", "question"), f"questions[{number}] of {questions_path}")
            annotation = by_question.get(row["question_id"])
            if annotation is None:
                raise ValueError(f"Question {row['question_id']} has no entry in {annotations_path}.")
            answers = [a["answer"] if isinstance(a, Mapping) else str(a) for a in annotation["answers"]]
            image = self.image_pattern.format(image_id=row["image_id"])
            where = f"questions[{number}] of {questions_path}"
            samples.append(
                Sample(
                    id=str(row["question_id"]),
                    prompt=self._prompt(row["question"]),
                    images=[str(resolve_inside(self.image_dir, image, where))],
                    target=answers,
                    meta={"answer_type": annotation.get("answer_type", "other")},
                )
            )
        return samples

    def score(self, sample: Sample, output: str) -> dict[str, Any]:
        return {"accuracy": vqa_accuracy(output, sample.target, self.normalize)}

    def summarize(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        def mean(rows: list[Mapping[str, Any]]) -> float | None:
            return 100.0 * sum(r["accuracy"] for r in rows) / len(rows) if rows else None

        summary: dict[str, Any] = {"accuracy": mean(list(records))}
        for answer_type in ("yes/no", "number", "other"):
            summary[answer_type] = mean([r for r in records if r["meta"]["answer_type"] == answer_type])
        summary["normalize"] = self.normalize
        summary["n"] = len(records)
        return summary
