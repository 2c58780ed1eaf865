"""ScienceQA multiple-choice questions, scored as in LaVIN's paper.

Standard layout (the official release), under one data directory:
```
problems.json      # {qid: {question, choices, answer, hint, image, subject, grade, split, lecture, solution, ...}}
pid_splits.json    # {"train": [qid, ...], "val": [...], "test": [...], ...}
images/{split}/{qid}/image.png   # for problems whose "image" is not null
```
Hub layout (`derek-thomas/ScienceQA`): columns `image` (or null), `question`, `choices`, `answer` (an index), `hint`,
`subject`, `grade`, `lecture`, `solution`; the prompt is built by the same [`build_prompt`] as for the official files.
The split is `split` (`"validation"` for the official `"val"`); sample ids are the row numbers.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets

from ...data.prompts import DEFAULT_PROMPT_FORMAT, build_prompt
from ...data.scienceqa import check_problem_fields, load_scienceqa
from ..metrics.scienceqa import (
    ANSWER_RULES,
    OPTION_LETTERS,
    SCIENCEQA_COLUMNS,
    extract_answer,
    problem_columns,
    scienceqa_scores,
)
from ..multiple_choice import ANSWER_PREFIX, best_option
from .base import Sample, Task
from .sources import TableImage, load_hub_table, table_root, use_hub_layout

_HUB_COLUMNS = ("image", "question", "choices", "answer", "hint", "subject", "grade", "lecture", "solution")
_HUB_SPLITS = {"val": "validation"}
SCORINGS = ("generate", "likelihood")
OPTION_FORMS = ("text", "letter")


class ScienceQATask(Task):
    """
    ScienceQA: generate, read the letter from `The answer is X.` (with the fallback of
    [`~metrics.scienceqa.extract_answer`]), and report accuracy by subject, context, grade and on average. With
    `scoring="likelihood"`, the most likely option is the answer instead, scored as training scores it.

    Problems, prompts and image paths come from [`~transformers_lavin.data.scienceqa.load_scienceqa`], the reader used
    for training, so evaluation sees exactly the training prompts. That reader checks every image when loading: an
    unreadable ScienceQA image is an error at load time that names the problem.

    Args:
        data_dir (`str | Path`): The directory with `problems.json`, `pid_splits.json` and `images/`.
        split (`str`, *optional*, defaults to `"test"`): The split of `pid_splits.json` to evaluate.
        prompt_format (`str`, *optional*, defaults to `"QCM-ALE"`): LaVIN's prompt format (only its input part
            matters here).
        use_caption (`bool`, *optional*, defaults to `False`): Whether to add image captions to the context.
        captions_file (`str | Path`, *optional*): `{"captions": {qid: caption}}`; defaults to `data_dir/captions.json`.
        instruction (`str`, *optional*, defaults to `""`): Text appended to every prompt after a newline, e.g. to
            ask a model not trained on LaVIN's format to answer with `The answer is X.`.
        answer_rule (`str`, *optional*, defaults to `"official"`): The reference rule only, or the project's
            `"lenient"` fallbacks (see [`~metrics.scienceqa.extract_answer`]).
        layout (`str`, *optional*, defaults to `"auto"`): `"official"`, `"hub"` or `"auto"` (see [`~tasks.sources`]).
        max_new_tokens (`int`, *optional*, defaults to 64): The reference's generation length.
        scoring (`str`, *optional*, defaults to `"generate"`): `"generate"` is the official protocol: generate and
            read the answer. `"likelihood"` (a project option) scores each option after the prompt and
            `"The answer is "` with the function training uses
            ([`~evaluation.multiple_choice.option_log_likelihoods`]) and takes the most likely one: for small or
            briefly trained models that rarely write a well-formed answer.
        option_form (`str`, *optional*, defaults to `"text"`): With `scoring="likelihood"`, what is scored after
            `"The answer is "`: the option's `"text"` (`circle.`, as `lavin-demo` trains and scores) or its
            `"letter"` (`B.`, LaVIN's answer format).
        max_json_bytes (`int`, *optional*): The largest JSON file of the official layout read (they are read whole
            into memory); defaults to [`~transformers_lavin.data.scienceqa.MAX_JSON_BYTES`] (512 MiB).

    A malformed problem (a null question, a choice that is not a string, an answer outside the choices, ...) is an
    error naming the problem and the field, in both layouts.
    """

    name = "scienceqa"
    overall_metric = "Avg"
    headline_metrics = SCIENCEQA_COLUMNS
    answer_prefix = ANSWER_PREFIX
    option_suffix = "."

    def __init__(
        self,
        data_dir: str | Path,
        split: str = "test",
        prompt_format: str = DEFAULT_PROMPT_FORMAT,
        use_caption: bool = False,
        captions_file: str | Path | None = None,
        instruction: str = "",
        answer_rule: str = "official",
        layout: str = "auto",
        max_new_tokens: int = 64,
        scoring: str = "generate",
        option_form: str = "text",
        max_json_bytes: int | None = None,
    ) -> None:
        if answer_rule not in ANSWER_RULES:
            raise ValueError(f"Unknown ScienceQA answer_rule {answer_rule!r}; choose from {', '.join(ANSWER_RULES)}.")
        if scoring not in SCORINGS:
            raise ValueError(f"Unknown ScienceQA scoring {scoring!r}; choose from {', '.join(SCORINGS)}.")
        if option_form not in OPTION_FORMS:
            raise ValueError(f"Unknown ScienceQA option_form {option_form!r}; choose from {', '.join(OPTION_FORMS)}.")
        self.scoring = scoring
        self.option_form = option_form
        self.data_dir = Path(data_dir)
        self.answer_rule = answer_rule
        self.hub = use_hub_layout(data_dir, layout)
        self.split = split
        self.prompt_format = prompt_format
        self.use_caption = use_caption
        self.captions_file = captions_file
        self.instruction = instruction
        self.max_new_tokens = max_new_tokens
        self.max_json_bytes = max_json_bytes

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "split": self.split,
            "prompt_format": self.prompt_format,
            "use_caption": self.use_caption,
            "instruction": self.instruction,
            "answer_rule": self.answer_rule,
            "data": str(self.data_dir),
            # Only a non-default scoring is written, so results made before the option existed still resume.
            **({"scoring": self.scoring, "option_form": self.option_form} if self.scoring == "likelihood" else {}),
        }

    def _with_instruction(self, prompt: str) -> str:
        return f"{prompt}\n{self.instruction}" if self.instruction else prompt

    def _load_hub(self) -> list[Sample]:
        split = _HUB_SPLITS.get(self.split, self.split)
        table = load_hub_table(self.data_dir, split, _HUB_COLUMNS, "ScienceQA table")
        root = table_root(self.data_dir)
        samples = []
        for index, row in enumerate(table.remove_columns("image")):
            has_image = table[index]["image"] is not None
            check_problem_fields(row, f"ScienceQA table {self.data_dir}: row {index}")
            prompt, _ = build_prompt(row, self.prompt_format, self.use_caption)
            columns = problem_columns(row["subject"], row["grade"], bool(row["hint"]), has_image)
            samples.append(
                Sample(
                    id=str(row.get("id", index)),
                    prompt=self._with_instruction(prompt),
                    images=[TableImage(table, index, "image", root)] if has_image else [],
                    target=int(row["answer"]),
                    meta={"choices": row["choices"], "columns": columns},
                )
            )
        return samples

    def load(self) -> list[Sample]:
        if self.hub:
            return self._load_hub()
        dataset = load_scienceqa(
            self.data_dir,
            self.split,
            self.prompt_format,
            self.use_caption,
            self.captions_file,
            max_json_bytes=self.max_json_bytes,
        )
        # Paths, not decoded pixels: the runner opens images batch by batch.
        dataset = dataset.cast_column("images", datasets.List(datasets.Image(decode=False)))
        samples = []
        for row in dataset:
            # The user turn holds the prompt text after the (optional) image placeholder.
            prompt = next(part["text"] for part in row["prompt"][0]["content"] if part["type"] == "text")
            columns = problem_columns(row["subject"], row["grade"], row["has_text"], row["has_image"])
            samples.append(
                Sample(
                    id=row["id"],
                    prompt=self._with_instruction(prompt),
                    # The reader's paths start with data_dir already (and it refused any outside it): not re-joined.
                    images=[image["path"] for image in row["images"]],
                    target=OPTION_LETTERS.index(row["answer"]),
                    meta={"choices": row["choices"], "columns": columns},
                )
            )
        return samples

    def options(self, sample: Sample) -> list[str]:
        choices = sample.meta["choices"][: len(OPTION_LETTERS)]
        return list(choices) if self.option_form == "text" else list(OPTION_LETTERS[: len(choices)])

    def answer_from_scores(self, sample: Sample, scores: Sequence[float]) -> str:
        # Written in LaVIN's answer format, so `score` reads it with the official rule like a generated answer.
        return f"{ANSWER_PREFIX}{OPTION_LETTERS[best_option(scores)]}."

    def score(self, sample: Sample, output: str) -> dict[str, Any]:
        prediction = extract_answer(output, sample.meta["choices"], self.answer_rule)
        return {"prediction": prediction, "parsed": prediction is not None, "correct": prediction == sample.target}

    def summarize(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        unparsed = [record["id"] for record in records if not record["parsed"]]
        scores = scienceqa_scores({"correct": r["correct"], "columns": r["meta"]["columns"]} for r in records)
        return {
            **scores,
            "answer_rule": self.answer_rule,
            "scoring": self.scoring,
            "n": len(records),
            "n_unparsed": len(unparsed),
            "unparsed_ids": unparsed[:20],
        }
