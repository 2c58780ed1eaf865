"""Open-ended answers (conversation, detailed description, complex reasoning) rated by a judge, LLaVA-Bench style.

Standard layout (LLaVA-Bench in-the-wild), under one data directory:
```
questions.jsonl      # {"question_id": 0, "image": "001.jpg", "text": "...", "category": "conv"|"detail"|"complex"}
answers_gpt4.jsonl   # {"question_id": 0, "text": "the reference answer"}
context.jsonl        # optional: {"image": "001.jpg", "caption": "what the judge is told about the image"}
images/              # the images named in questions.jsonl
```
For each question the judge sees the image description, the question, the reference answer (assistant 1) and the
model's answer (assistant 2), and rates both from 1 to 10. The relative score of a category is
`100 * sum(model scores) / sum(reference scores)` over the questions the judge rated.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..judge import Judge, JudgeError, parse_judge_scores
from .base import Sample, Task, read_jsonl, require_fields

CATEGORIES = {"conv": "conversation", "detail": "detailed description", "complex": "complex reasoning"}

JUDGE_SYSTEM = "You are a careful, impartial reviewer of answers given by AI assistants about images."
_JUDGE_INSTRUCTION = (
    "Two AI assistants answered the question above about an image you cannot see; the description tells you what it "
    "shows. The task is {category}. Rate each answer for helpfulness, relevance, accuracy and level of detail, from 1 "
    "(worst) to 10 (best). On the first line write only the two scores, assistant 1 first, separated by a space. Then "
    "explain your rating in a few sentences, without letting the order of the answers or their length sway you."
)


def judge_prompt(context: str, question: str, reference: str, answer: str, category: str) -> str:
    """
    The user message sent to the judge for one question.

    Args:
        context (`str`): The description of the image (captions, boxes).
        question (`str`): The question asked.
        reference (`str`): The reference answer (assistant 1).
        answer (`str`): The model's answer (assistant 2).
        category (`str`): `"conv"`, `"detail"` or `"complex"`.
    """
    instruction = _JUDGE_INSTRUCTION.format(category=CATEGORIES.get(category, category))
    return (
        f"[Image description]\n{context}\n\n[Question]\n{question}\n\n"
        f"[Assistant 1]\n{reference}\n[End of assistant 1]\n\n[Assistant 2]\n{answer}\n[End of assistant 2]\n\n"
        f"[Instructions]\n{instruction}"
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
        max_new_tokens (`int`, *optional*, defaults to 512)
    """

    name = "llava_bench"
    headline_metrics = ("overall", "conv", "detail", "complex")

    def __init__(
        self,
        data_dir: str | Path,
        judge: Judge | None = None,
        image_dir: str | Path | None = None,
        questions_file: str = "questions.jsonl",
        answers_file: str = "answers_gpt4.jsonl",
        context_file: str = "context.jsonl",
        max_new_tokens: int = 512,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.judge = judge
        self.image_dir = Path(image_dir) if image_dir else self.data_dir / "images"
        self.questions_file, self.answers_file, self.context_file = questions_file, answers_file, context_file
        self.max_new_tokens = max_new_tokens

    def config(self) -> dict[str, Any]:
        return {**super().config(), "judge": type(self.judge).__name__ if self.judge else None}

    def load(self) -> list[Sample]:
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
                    images=[str(self.image_dir / row["image"])],
                    target=answers[qid],
                    meta={"category": row["category"], "context": contexts.get(row["image"], "")},
                )
            )
        return samples

    def score(self, sample: Sample, output: str) -> dict[str, Any]:
        if self.judge is None:
            return {"reference_score": None, "model_score": None, "judge_error": "no judge given"}
        prompt = judge_prompt(sample.meta["context"], sample.prompt, sample.target, output, sample.meta["category"])
        review = None
        try:
            review = self.judge(JUDGE_SYSTEM, prompt)
            reference_score, model_score = parse_judge_scores(review)
        except JudgeError as error:
            # A failed rating is recorded, not fatal: the sample drops out of the scores and is counted.
            return {"reference_score": None, "model_score": None, "judge_error": str(error), "review": review}
        return {"reference_score": reference_score, "model_score": model_score, "review": review}

    def summarize(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        judged = [record for record in records if record.get("model_score") is not None]
        summary: dict[str, Any] = {}
        groups = {"overall": judged, **{c: [r for r in judged if r["meta"]["category"] == c] for c in CATEGORIES}}
        for group, rows in groups.items():
            reference_total = sum(r["reference_score"] for r in rows)
            model_total = sum(r["model_score"] for r in rows)
            summary[group] = 100.0 * model_total / reference_total if reference_total else None
            summary[f"{group}/model_mean"] = model_total / len(rows) if rows else None
            summary[f"{group}/reference_mean"] = reference_total / len(rows) if rows else None
        summary["n"] = len(records)
        summary["n_judged"] = len(judged)
        summary["n_judge_failures"] = len(records) - len(judged)
        return summary
