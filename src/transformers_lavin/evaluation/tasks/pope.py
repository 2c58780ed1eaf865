"""POPE-style yes/no object probes (hallucination), scored per split.

Standard layout, under one data directory:
```
coco_pope_random.json        # JSON lines: {"question_id": 1, "image": "COCO_val2014_000000310196.jpg",
coco_pope_popular.json       #              "text": "Is there a snowboard in the image?", "label": "yes"}
coco_pope_adversarial.json
images/                      # the images named in "image" (or give image_dir)
```
Any file named `*pope_{split}.json`, `{split}.json` or `{split}.jsonl` is found; missing splits are left out.

Hub layout (`lmms-lab/POPE`): columns `question_id`, `question`, `answer` ("yes"/"no"), `category` (the split) and
`image`; `image_source` is kept in the record's metadata.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..metrics.binary import ANSWER_RULES, binary_scores, parse_yes_no
from .base import Sample, Task, read_jsonl, require_fields
from .sources import TableImage, load_hub_table, resolve_inside, table_root, use_hub_layout

POPE_SPLITS = ("random", "popular", "adversarial")


class PopeTask(Task):
    """
    Yes/no probes: accuracy, precision, recall, F1 and yes-ratio ("yes" is the positive class), per split and over
    all splits together.

    Args:
        data_dir (`str | Path`): The directory with the split files (or one split file).
        image_dir (`str | Path`, *optional*): Where the images are; defaults to `data_dir/images`.
        splits (`Sequence[str]`, *optional*, defaults to `("random", "popular", "adversarial")`): Splits to run.
        instruction (`str`, *optional*, defaults to `""`): Text appended to each question after a newline (LLaVA's
            evaluations use `"Answer the question using a single word or phrase."`).
        answer_rule (`str`, *optional*, defaults to `"official"`): How replies are read: POPE's own rule, or the
            project's `"lenient"` one (see [`~metrics.binary.parse_yes_no`]).
        layout (`str`, *optional*, defaults to `"auto"`): `"official"`, `"hub"` or `"auto"` (see
            [`~tasks.sources`]).
        hub_split (`str`, *optional*, defaults to `"test"`): The split read from a Hub id.
        max_new_tokens (`int`, *optional*, defaults to 16)
    """

    name = "pope"
    overall_metric = "all/accuracy"

    def __init__(
        self,
        data_dir: str | Path,
        image_dir: str | Path | None = None,
        splits: Sequence[str] = POPE_SPLITS,
        instruction: str = "",
        answer_rule: str = "official",
        layout: str = "auto",
        hub_split: str = "test",
        max_new_tokens: int = 16,
    ) -> None:
        if answer_rule not in ANSWER_RULES:
            raise ValueError(f"Unknown POPE answer_rule {answer_rule!r}; choose from {', '.join(ANSWER_RULES)}.")
        self.data_dir = Path(data_dir)
        self.answer_rule = answer_rule
        self.hub = use_hub_layout(data_dir, layout)
        self.hub_split = hub_split
        data_root = self.data_dir.parent if self.data_dir.is_file() else self.data_dir
        self.image_dir = Path(image_dir) if image_dir else data_root / "images"
        self.splits = [splits] if isinstance(splits, str) else list(splits)
        self.instruction = instruction
        self.max_new_tokens = max_new_tokens
        self._found: list[str] | None = None

    @property
    def headline_metrics(self) -> list[str]:  # type: ignore[override]
        splits = self._found if self._found is not None else self.splits
        return [f"{split}/{metric}" for split in splits for metric in ("accuracy", "f1", "yes_ratio")]

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "splits": self.splits,
            "instruction": self.instruction,
            "answer_rule": self.answer_rule,
            "data": str(self.data_dir),
        }

    def _split_file(self, split: str) -> Path | None:
        if self.data_dir.is_file():
            return self.data_dir if split in self.data_dir.stem else None
        candidates = [
            *sorted(self.data_dir.glob(f"*pope_{split}.json*")),
            *sorted(self.data_dir.glob(f"{split}.json*")),
        ]
        return candidates[0] if candidates else None

    def _prompt(self, question: Any) -> str:
        return f"{question}\n{self.instruction}" if self.instruction else str(question)

    def _load_hub(self) -> list[Sample]:
        table = load_hub_table(
            self.data_dir, self.hub_split, ("question_id", "question", "answer", "category", "image"), "POPE table"
        )
        root = table_root(self.data_dir)
        samples = []
        for index, row in enumerate(table.remove_columns("image")):
            label = str(row["answer"]).strip().lower()
            if label not in ("yes", "no"):
                raise ValueError(f"Row {index} of {self.data_dir} has answer {row['answer']!r}; expected yes or no.")
            if row["category"] not in self.splits:
                continue
            samples.append(
                Sample(
                    id=f"{row['category']}/{row['question_id']}",
                    prompt=self._prompt(row["question"]),
                    images=[TableImage(table, index, "image", root)],
                    target=label,
                    meta={"split": row["category"], "image_source": row.get("image_source")},
                )
            )
        if not samples:
            raise ValueError(f"The POPE table at {self.data_dir} has no rows of the categories {self.splits}.")
        self._found = [split for split in self.splits if any(s.meta["split"] == split for s in samples)]
        return samples

    def load(self) -> list[Sample]:
        if self.hub:
            return self._load_hub()
        samples, found = [], []
        for split in self.splits:
            path = self._split_file(split)
            if path is None:
                continue
            found.append(split)
            for number, row in enumerate(read_jsonl(path, f"POPE {split} file"), start=1):
                where = f"Record {number} of {path}"
                require_fields(row, ("question_id", "image", "text", "label"), where)
                label = str(row["label"]).strip().lower()
                if label not in ("yes", "no"):
                    raise ValueError(f"{where} has label {row['label']!r}; a POPE label must be 'yes' or 'no'.")
                samples.append(
                    Sample(
                        id=f"{split}/{row['question_id']}",
                        prompt=self._prompt(row["text"]),
                        images=[str(resolve_inside(self.image_dir, row["image"], where))],
                        target=label,
                        meta={"split": split},
                    )
                )
        if not found:
            raise FileNotFoundError(
                f"No POPE split file for {self.splits} under {self.data_dir}: expected files such as "
                "coco_pope_random.json, random.json or random.jsonl."
            )
        self._found = found
        return samples

    def score(self, sample: Sample, output: str) -> dict[str, Any]:
        prediction = parse_yes_no(output, self.answer_rule)
        return {"prediction": prediction, "parsed": prediction is not None, "correct": prediction == sample.target}

    def score_failed(self, sample: Sample) -> dict[str, Any]:
        # POPE's rule reads an empty reply as "yes"; a sample with no output at all counts as the wrong answer.
        return {"prediction": None, "parsed": False, "correct": False}

    def summarize(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        summary: dict[str, Any] = {}
        splits = list(dict.fromkeys(record["meta"]["split"] for record in records))
        self._found = [split for split in self.splits if split in splits] + [s for s in splits if s not in self.splits]
        groups = {split: [r for r in records if r["meta"]["split"] == split] for split in self._found}
        groups["all"] = list(records)
        for group, rows in groups.items():
            scores = binary_scores({"label": r["target"], "prediction": r["prediction"]} for r in rows)
            summary.update({f"{group}/{key}": value for key, value in scores.items()})
        summary["answer_rule"] = self.answer_rule
        summary["n"] = len(records)
        summary["n_unparsed"] = sum(not record["parsed"] for record in records)
        return summary
