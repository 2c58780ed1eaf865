"""ScienceQA multiple-choice questions, scored as in LaVIN's paper.

Standard layout (the official release), under one data directory:
```
problems.json      # {qid: {question, choices, answer, hint, image, subject, grade, split, lecture, solution, ...}}
pid_splits.json    # {"train": [qid, ...], "val": [...], "test": [...], ...}
images/{split}/{qid}/image.png   # for problems whose "image" is not null
```
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ...data.prompts import DEFAULT_PROMPT_FORMAT, build_prompt
from ..metrics.scienceqa import SCIENCEQA_COLUMNS, extract_answer, problem_columns, scienceqa_scores
from .base import Sample, Task, read_json, require_fields

_PROBLEM_FIELDS = ("question", "choices", "answer", "hint", "image", "subject", "grade")


class ScienceQATask(Task):
    """
    ScienceQA: generate, read the letter from `The answer is X.` (with the fallback of
    [`~metrics.scienceqa.extract_answer`]), and report accuracy by subject, context, grade and on average.

    Args:
        data_dir (`str | Path`): The directory with `problems.json`, `pid_splits.json` and `images/`.
        split (`str`, *optional*, defaults to `"test"`): The split of `pid_splits.json` to evaluate.
        prompt_format (`str`, *optional*, defaults to `"QCM-ALE"`): LaVIN's prompt format (only its input part
            matters here).
        use_caption (`bool`, *optional*, defaults to `False`): Whether to add image captions to the context; they come
            from `caption_file`.
        caption_file (`str | Path`, *optional*): A JSON file `{"captions": {qid: caption}}` (as in the reference).
        instruction (`str`, *optional*, defaults to `""`): Text appended to every prompt after a newline, e.g. to
            ask a model not trained on LaVIN's format to answer with `The answer is X.`.
        max_new_tokens (`int`, *optional*, defaults to 64): The reference's generation length.
    """

    name = "scienceqa"
    headline_metrics = SCIENCEQA_COLUMNS

    def __init__(
        self,
        data_dir: str | Path,
        split: str = "test",
        prompt_format: str = DEFAULT_PROMPT_FORMAT,
        use_caption: bool = False,
        caption_file: str | Path | None = None,
        instruction: str = "",
        max_new_tokens: int = 64,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.split = split
        self.prompt_format = prompt_format
        self.use_caption = use_caption
        self.caption_file = caption_file
        self.instruction = instruction
        self.max_new_tokens = max_new_tokens

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "split": self.split,
            "prompt_format": self.prompt_format,
            "use_caption": self.use_caption,
            "instruction": self.instruction,
        }

    def load(self) -> list[Sample]:
        problems = read_json(self.data_dir / "problems.json", "ScienceQA problems.json")
        splits = read_json(self.data_dir / "pid_splits.json", "ScienceQA pid_splits.json")
        if self.split not in splits:
            raise ValueError(f"Split {self.split!r} is not in pid_splits.json; it has {sorted(splits)}.")
        captions = {}
        if self.use_caption:
            if self.caption_file is None:
                raise ValueError("use_caption=True needs a caption_file (JSON with a 'captions' mapping).")
            captions = read_json(self.caption_file, "ScienceQA caption file").get("captions", {})
        samples = []
        for qid in splits[self.split]:
            qid = str(qid)
            if qid not in problems:
                raise ValueError(
                    f"pid_splits.json lists problem {qid!r} under {self.split!r}, but problems.json lacks it."
                )
            problem = dict(problems[qid], caption=captions.get(qid, ""))
            require_fields(problem, _PROBLEM_FIELDS, f"Problem {qid!r} of problems.json")
            prompt, _ = build_prompt(problem, self.prompt_format, self.use_caption)
            if self.instruction:
                prompt = f"{prompt}\n{self.instruction}"
            image = problem["image"]
            images = [str(self.data_dir / "images" / self.split / qid / image)] if image else []
            columns = problem_columns(problem["subject"], problem["grade"], bool(problem["hint"]), bool(image))
            samples.append(
                Sample(
                    id=qid,
                    prompt=prompt,
                    images=images,
                    target=problem["answer"],
                    meta={"choices": list(problem["choices"]), "columns": columns},
                )
            )
        return samples

    def score(self, sample: Sample, output: str) -> dict[str, Any]:
        prediction = extract_answer(output, sample.meta["choices"])
        return {"prediction": prediction, "parsed": prediction is not None, "correct": prediction == sample.target}

    def summarize(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        unparsed = [record["id"] for record in records if not record["parsed"]]
        scores = scienceqa_scores({"correct": r["correct"], "columns": r["meta"]["columns"]} for r in records)
        return {**scores, "n": len(records), "n_unparsed": len(unparsed), "unparsed_ids": unparsed[:20]}
