"""Open-ended answers (conversation, detailed description, complex reasoning) rated by a judge, LLaVA-Bench style.

Standard layout (LLaVA-Bench in-the-wild), under one data directory:
```
questions.jsonl      # {"question_id": 0, "image": "001.jpg", "text": "...", "category": "conv"|"detail"|"complex"}
answers_gpt4.jsonl   # {"question_id": 0, "text": "the reference answer"}
context.jsonl        # optional: {"image": "001.jpg", "caption": "what the judge is told about the image"}
images/              # the images named in questions.jsonl
```
Hub layout (`lmms-lab/llava-bench-in-the-wild`): columns `question_id`, `question`, `image`, `caption` (the
context), `gpt_answer` (the reference answer) and `category`.
The judge request is LLaVA's (`llava/eval/eval_gpt_review_bench.py` and `llava/eval/table/rule.json` in
`haotian-liu/LLaVA`), so relative scores can be compared with published ones: the same system message, the same
review instruction (the two strings are LLaVA's text, copied verbatim because any change would change the scores), the
same layout of context, question and the two answers, with the reference answer as assistant 1. A context given as a
list of lines is joined with newlines, as LLaVA does. The judge's first line is read as LLaVA reads it (see
[`~judge.parse_judge_scores`]). The relative score of a category is `100 * mean(model scores) / mean(reference
scores)`, LLaVA's `summarize_gpt_review.py`.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..judge import Judge, JudgeError, parse_judge_scores
from .base import Sample, Task, read_jsonl, require_fields
from .sources import TableImage, load_hub_table, resolve_inside, table_root, use_hub_layout

CATEGORIES = {"conv": "conversation", "detail": "detailed description", "complex": "complex reasoning"}
REVIEW_RULES = ("official", "skip")

# LLaVA's strings, verbatim (see the module docstring); rule.json gives the same instruction for all three categories.
JUDGE_SYSTEM = "You are a helpful and precise assistant for checking the quality of the answer."
JUDGE_ROLE = "Assistant"
JUDGE_INSTRUCTION = (
    "We would like to request your feedback on the performance of two AI assistants in response to the user "
    "question displayed above. The user asks the question on observing an image. For your reference, the visual "
    "content in the image is represented with a few sentences describing the image. \nPlease rate the helpfulness, "
    "relevance, accuracy, level of details of their responses. Each assistant receives an overall score on a scale "
    "of 1 to 10, where a higher score indicates better overall performance.\nPlease first output a single line "
    "containing only two values indicating the scores for Assistant 1 and 2, respectively. The two scores are "
    "separated by a space.\nIn the subsequent line, please provide a comprehensive explanation of your evaluation, "
    "avoiding any potential bias and ensuring that the order in which the responses were presented does not affect "
    "your judgment."
)
# What LLaVA's summary counts for a review whose first line it cannot read.
UNREADABLE_SCORES = (-1.0, -1.0)


def context_text(caption: str | Sequence[str]) -> str:
    """The image description given to the judge: a list of lines is joined with newlines, as LLaVA does."""
    return caption if isinstance(caption, str) else "\n".join(str(line) for line in caption)


def judge_prompt(context: str | Sequence[str], question: str, reference: str, answer: str) -> str:
    """
    The user message sent to the judge for one question, laid out as LLaVA lays it out.

    Args:
        context (`str | Sequence[str]`): The description of the image (captions, boxes), text or a list of lines.
        question (`str`): The question asked.
        reference (`str`): The reference answer (assistant 1).
        answer (`str`): The model's answer (assistant 2).
    """
    role = JUDGE_ROLE
    return (
        f"[Context]\n{context_text(context)}\n\n[Question]\n{question}\n\n"
        f"[{role} 1]\n{reference}\n\n[End of {role} 1]\n\n[{role} 2]\n{answer}\n\n[End of {role} 2]\n\n"
        f"[System]\n{JUDGE_INSTRUCTION}\n\n"
    )


class LlavaBenchTask(Task):
    """
    LLaVA-Bench-style open-ended evaluation with a pluggable judge.

    Args:
        data_dir (`str | Path`): The directory in the layout above.
        judge (`Judge`, *optional*): A callable `(system, user) -> reply`, e.g. [`~judge.HTTPJudge`] or
            [`~judge.HFJudge`]. Without one, answers are generated and saved but not rated (`n_judged` is 0).
        image_dir (`str | Path`, *optional*): Defaults to `data_dir/images`.
        questions_file, answers_file, context_file (`str`, *optional*): File names inside `data_dir`.
        unreadable_reviews (`str`, *optional*, defaults to `"official"`): A review whose first line cannot be read
            counts as scores (-1, -1), as in LLaVA's summary; `"skip"` (a project rule) leaves it out instead.
        layout (`str`, *optional*, defaults to `"auto"`): `"official"`, `"hub"` or `"auto"` (see [`~tasks.sources`]).
        hub_split (`str`, *optional*, defaults to `"train"`): The split read from a Hub id.
        max_new_tokens (`int`, *optional*, defaults to 512)
    """

    name = "llava_bench"
    overall_metric = "overall"
    unit = "relative score (% of the reference answer)"
    headline_metrics = ("overall", "conv", "detail", "complex")

    def __init__(
        self,
        data_dir: str | Path,
        judge: Judge | None = None,
        image_dir: str | Path | None = None,
        questions_file: str = "questions.jsonl",
        answers_file: str = "answers_gpt4.jsonl",
        context_file: str = "context.jsonl",
        unreadable_reviews: str = "official",
        layout: str = "auto",
        hub_split: str = "train",
        max_new_tokens: int = 512,
    ) -> None:
        if unreadable_reviews not in REVIEW_RULES:
            raise ValueError(
                f"Unknown unreadable_reviews {unreadable_reviews!r}; choose from {', '.join(REVIEW_RULES)}."
            )
        self.data_dir = Path(data_dir)
        self.unreadable_reviews = unreadable_reviews
        self.hub, self.hub_split = use_hub_layout(data_dir, layout), hub_split
        self.judge = judge
        self.image_dir = Path(image_dir) if image_dir else self.data_dir / "images"
        self.questions_file, self.answers_file, self.context_file = questions_file, answers_file, context_file
        self.max_new_tokens = max_new_tokens

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "judge": type(self.judge).__name__ if self.judge else None,
            "unreadable_reviews": self.unreadable_reviews,
            "data": str(self.data_dir),
        }

    def _load_hub(self) -> list[Sample]:
        columns = ("question_id", "question", "image", "caption", "gpt_answer", "category")
        table = load_hub_table(self.data_dir, self.hub_split, columns, "LLaVA-Bench table")
        root = table_root(self.data_dir)
        return [
            Sample(
                id=str(row["question_id"]),
                prompt=row["question"],
                images=[TableImage(table, index, "image", root)],
                target=row["gpt_answer"],
                meta={"category": row["category"], "context": context_text(row["caption"] or "")},
            )
            for index, row in enumerate(table.remove_columns("image"))
        ]

    def load(self) -> list[Sample]:
        if self.hub:
            return self._load_hub()
        questions = read_jsonl(self.data_dir / self.questions_file, "LLaVA-Bench questions")
        answers = {}
        for number, row in enumerate(read_jsonl(self.data_dir / self.answers_file, "LLaVA-Bench answers"), 1):
            require_fields(row, ("question_id", "text"), f"Record {number} of {self.answers_file}")
            answers[str(row["question_id"])] = row["text"]
        contexts = {}
        if (self.data_dir / self.context_file).is_file():
            for number, row in enumerate(read_jsonl(self.data_dir / self.context_file, "LLaVA-Bench context"), 1):
                require_fields(row, ("image", "caption"), f"Record {number} of {self.context_file}")
                contexts[row["image"]] = row["caption"]
        samples = []
        for number, row in enumerate(questions, 1):
            require_fields(
                row, ("question_id", "image", "text", "category"), f"Record {number} of {self.questions_file}"
            )
            qid = str(row["question_id"])
            if qid not in answers:
                raise ValueError(f"Question {qid} has no reference answer in {self.answers_file}.")
            samples.append(
                Sample(
                    id=qid,
                    prompt=row["text"],
                    images=[
                        str(resolve_inside(self.image_dir, row["image"], f"Record {number} of {self.questions_file}"))
                    ],
                    target=answers[qid],
                    meta={"category": row["category"], "context": context_text(contexts.get(row["image"], ""))},
                )
            )
        return samples

    def score(self, sample: Sample, output: str) -> dict[str, Any]:
        if self.judge is None:
            return {"reference_score": None, "model_score": None, "judge_error": "no judge given"}
        prompt = judge_prompt(sample.meta["context"], sample.prompt, sample.target, output)
        try:
            review = self.judge(JUDGE_SYSTEM, prompt)
        except JudgeError as error:
            # No reply at all (LLaVA retries forever instead): recorded, left out of the scores, counted.
            return {"reference_score": None, "model_score": None, "judge_error": str(error), "review": None}
        try:
            reference_score, model_score = parse_judge_scores(review)
        except JudgeError as error:
            if self.unreadable_reviews == "skip":
                return {"reference_score": None, "model_score": None, "judge_error": str(error), "review": review}
            # LLaVA's summary averages an unreadable review in as (-1, -1).
            reference_score, model_score = UNREADABLE_SCORES
            return {
                "reference_score": reference_score,
                "model_score": model_score,
                "unreadable_review": str(error),
                "review": review,
            }
        return {"reference_score": reference_score, "model_score": model_score, "review": review}

    def summarize(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        judged = [record for record in records if record.get("model_score") is not None]
        summary: dict[str, Any] = {}
        groups = {"overall": judged, **{c: [r for r in judged if r["meta"]["category"] == c] for c in CATEGORIES}}
        for group, rows in groups.items():
            reference_total = sum(r["reference_score"] for r in rows)
            model_total = sum(r["model_score"] for r in rows)
            # LLaVA's -1s of unreadable reviews make a group with no readable review read 100 (-n / -n): no score.
            readable = any(not r.get("unreadable_review") for r in rows)
            summary[group] = 100.0 * model_total / reference_total if reference_total and readable else None
            summary[f"{group}/model_mean"] = model_total / len(rows) if rows else None
            summary[f"{group}/reference_mean"] = reference_total / len(rows) if rows else None
        summary["unreadable_reviews"] = self.unreadable_reviews
        summary["n_unreadable_reviews"] = sum(bool(r.get("unreadable_review")) for r in records)
        summary["n"] = len(records)
        summary["n_judged"] = len(judged)
        summary["n_judge_failures"] = len(records) - len(judged)
        return summary
