"""Small benchmark files in each task's standard layout, written by the tests, and a scripted stand-in model."""

import json
from pathlib import Path

import pytest
from PIL import Image


def write_image(path: Path, color: tuple[int, int, int] = (200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 32), color).save(path)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


# (qid, subject, grade, hint, has image, choices, answer index, scripted reply)
SCIENCEQA_PROBLEMS = [
    ("p1", "natural science", "grade3", "", True, ["sun", "moon"], 0, "The answer is A. BECAUSE: it shines."),
    ("p2", "social science", "grade8", "A map.", False, ["north", "south", "east"], 1, "The answer is A."),
    ("p3", "language science", "grade5", "", False, ["yes", "no"], 0, "I am not sure what to say."),
    ("p4", "natural science", "grade10", "Read this.", True, ["iron", "wood"], 1, "(B)"),
    ("p5", "social science", "grade2", "", True, ["tax", "fee", "toll"], 2, "The answer is C."),
    ("p6", "language science", "grade11", "Some text.", False, ["simile", "metaphor"], 0, "The answer is B."),
]


@pytest.fixture
def scienceqa_dir(tmp_path: Path) -> Path:
    root = tmp_path / "scienceqa"
    problems = {}
    for qid, subject, grade, hint, has_image, choices, answer, _ in SCIENCEQA_PROBLEMS:
        problems[qid] = {
            "question": f"Question {qid}?",
            "choices": choices,
            "answer": answer,
            "hint": hint,
            "image": "image.png" if has_image else None,
            "subject": subject,
            "grade": grade,
            "split": "test",
            "lecture": "A lecture.",
            "solution": "A solution.",
        }
        if has_image:
            write_image(root / "images" / "test" / qid / "image.png")
    problems["t1"] = dict(problems["p1"], split="train")
    root.mkdir(parents=True, exist_ok=True)
    (root / "problems.json").write_text(json.dumps(problems))
    (root / "pid_splits.json").write_text(json.dumps({"train": ["t1"], "test": [p[0] for p in SCIENCEQA_PROBLEMS]}))
    return root


def scienceqa_reply(prompt: str) -> str:
    for qid, *_, reply in SCIENCEQA_PROBLEMS:
        if f"Question {qid}?" in prompt:
            return reply
    raise AssertionError(f"unexpected prompt {prompt!r}")


# POPE: (question_id, label, reply) per split.
POPE_ROWS = {
    "random": [(1, "yes", "Yes, there is."), (2, "no", "No."), (3, "yes", "There is not one."), (4, "no", "Yes.")],
    "adversarial": [(1, "yes", "yes"), (2, "no", "Yes it is"), (3, "no", "no"), (4, "no", ""), (5, "yes", "Yes.")],
}


@pytest.fixture
def pope_dir(tmp_path: Path) -> Path:
    root = tmp_path / "pope"
    for split, rows in POPE_ROWS.items():
        root.mkdir(parents=True, exist_ok=True)
        write_jsonl(
            root / f"coco_pope_{split}.json",
            [
                {"question_id": q, "image": f"img{q}.jpg", "text": f"[{split}:{q}] Is there a cat?", "label": label}
                for q, label, _ in rows
            ],
        )
    for q in range(1, 6):
        write_image(root / "images" / f"img{q}.jpg", (10 * q, 0, 0))
    return root


def pope_reply(prompt: str) -> str:
    for split, rows in POPE_ROWS.items():
        for q, _, reply in rows:
            if f"[{split}:{q}]" in prompt:
                return reply
    raise AssertionError(f"unexpected prompt {prompt!r}")


CAPTIONS = {
    1: (["a cat sits on the mat", "there is a cat on the mat"], "the cat is on the mat"),
    2: (["a dog runs in the park"], "a dog is running"),
}


@pytest.fixture
def caption_file(tmp_path: Path) -> Path:
    root = tmp_path / "coco"
    images = [{"id": i, "file_name": f"{i:012d}.jpg"} for i in CAPTIONS]
    annotations = [
        {"image_id": i, "id": 10 * i + k, "caption": c}
        for i, (refs, _) in CAPTIONS.items()
        for k, c in enumerate(refs)
    ]
    root.mkdir(parents=True)
    (root / "captions.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    for i in CAPTIONS:
        write_image(root / "images" / f"{i:012d}.jpg")
    return root / "captions.json"


# VQA: (question_id, image_id, question, human answers, answer type, reply)
VQA_ROWS = [
    (1, 42, "What animal?", ["cat"] * 10, "other", "A cat."),
    (2, 42, "How many?", ["2"] * 2 + ["3"] * 8, "number", "two"),
    (3, 7, "Is it red?", ["yes"] * 9 + ["no"], "yes/no", "No"),
]


@pytest.fixture
def vqa_dir(tmp_path: Path) -> Path:
    root = tmp_path / "vqa"
    root.mkdir()
    questions = [{"question_id": q, "image_id": i, "question": text} for q, i, text, *_ in VQA_ROWS]
    annotations = [
        {
            "question_id": q,
            "image_id": i,
            "answers": [{"answer": a, "answer_id": k} for k, a in enumerate(answers)],
            "answer_type": kind,
        }
        for q, i, _, answers, kind, _ in VQA_ROWS
    ]
    (root / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(json.dumps({"questions": questions}))
    (root / "v2_mscoco_val2014_annotations.json").write_text(json.dumps({"annotations": annotations}))
    for image_id in (42, 7):
        write_image(root / "images" / f"COCO_val2014_{image_id:012d}.jpg")
    return root


def vqa_reply(prompt: str) -> str:
    return next(reply for _, _, question, _, _, reply in VQA_ROWS if question in prompt)


BENCH_ROWS = [
    (0, "conv", "What is on the table?", "A red apple."),
    (1, "detail", "Describe the image.", "A kitchen with a table and an apple."),
    (2, "complex", "Why is the apple there?", "Someone is about to eat it."),
]


@pytest.fixture
def bench_dir(tmp_path: Path) -> Path:
    root = tmp_path / "bench"
    root.mkdir()
    write_jsonl(
        root / "questions.jsonl",
        [{"question_id": q, "image": "001.jpg", "text": t, "category": c} for q, c, t, _ in BENCH_ROWS],
    )
    write_jsonl(root / "answers_gpt4.jsonl", [{"question_id": q, "text": a} for q, _, _, a in BENCH_ROWS])
    write_jsonl(root / "context.jsonl", [{"image": "001.jpg", "caption": "An apple on a kitchen table."}])
    write_image(root / "images" / "001.jpg")
    return root


class ScriptedModel:
    """A callable model `(images, prompts) -> texts` that answers from a script and records what it was asked."""

    def __init__(self, reply, fail_after_calls: int | None = None) -> None:
        self.reply = reply
        self.fail_after_calls = fail_after_calls
        self.calls: list[tuple[list[int], list[str]]] = []

    def __call__(self, images, prompts):
        if self.fail_after_calls is not None and len(self.calls) >= self.fail_after_calls:
            raise KeyboardInterrupt("simulated interruption")
        assert all(isinstance(image, Image.Image) for sample in images for image in sample)
        self.calls.append(([len(sample) for sample in images], list(prompts)))
        return [self.reply(prompt) for prompt in prompts]

    @property
    def prompts(self) -> list[str]:
        return [prompt for _, prompts in self.calls for prompt in prompts]
