"""POPE-style yes/no object probes (hallucination), scored per split.

Standard layout, under one data directory:
```
coco_pope_random.json        # JSON lines: {"question_id": 1, "image": "COCO_val2014_000000310196.jpg",
coco_pope_popular.json       #              "text": "Is there a snowboard in the image?", "label": "yes"}
coco_pope_adversarial.json
images/                      # the images named in "image" (or give image_dir)
```
Any file named `*pope_{split}.json`, `{split}.json` or `{split}.jsonl` is found; missing splits are left out.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..metrics.binary import binary_scores, parse_yes_no
from .base import Sample, Task, read_jsonl, require_fields

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
        max_new_tokens (`int`, *optional*, defaults to 16)
    """

    name = "pope"

    def __init__(
        self,
        data_dir: str | Path,
        image_dir: str | Path | None = None,
        splits: Sequence[str] = POPE_SPLITS,
        instruction: str = "",
        max_new_tokens: int = 16,
    ) -> None:
        self.data_dir = Path(data_dir)
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
        return {**super().config(), "splits": self.splits, "instruction": self.instruction}

    def _split_file(self, split: str) -> Path | None:
        if self.data_dir.is_file():
            return self.data_dir if split in self.data_dir.stem else None
        candidates = [
            *sorted(self.data_dir.glob(f"*pope_{split}.json*")),
            *sorted(self.data_dir.glob(f"{split}.json*")),
        ]
        return candidates[0] if candidates else None

    def load(self) -> list[Sample]:
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
                prompt = f"{row['text']}\n{self.instruction}" if self.instruction else str(row["text"])
                samples.append(
                    Sample(
                        id=f"{split}/{row['question_id']}",
                        prompt=prompt,
                        images=[str(self.image_dir / row["image"])],
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
        prediction = parse_yes_no(output)
        return {"prediction": prediction, "parsed": prediction is not None, "correct": prediction == sample.target}

    def summarize(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        summary: dict[str, Any] = {}
        splits = list(dict.fromkeys(record["meta"]["split"] for record in records))
        self._found = [split for split in self.splits if split in splits] + [s for s in splits if s not in self.splits]
        groups = {split: [r for r in records if r["meta"]["split"] == split] for split in self._found}
        groups["all"] = list(records)
        for group, rows in groups.items():
            scores = binary_scores({"label": r["target"], "prediction": r["prediction"]} for r in rows)
            summary.update({f"{group}/{key}": value for key, value in scores.items()})
        summary["n"] = len(records)
        summary["n_unparsed"] = sum(not record["parsed"] for record in records)
        return summary
