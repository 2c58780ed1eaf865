"""Tests of the synthetic ScienceQA writer, read back with the real reader."""

import json
import time
from collections import Counter

import pytest
from PIL import Image

from transformers_lavin.data import load_scienceqa, write_synthetic_scienceqa

OFFICIAL_FIELDS = {
    "question",
    "choices",
    "answer",
    "hint",
    "image",
    "task",
    "grade",
    "subject",
    "topic",
    "category",
    "skill",
    "lecture",
    "solution",
    "split",
}
COLORS = {"red": (220, 40, 40), "green": (40, 160, 60), "blue": (40, 80, 220), "yellow": (230, 190, 30)}


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    return write_synthetic_scienceqa(tmp_path_factory.mktemp("sqa"), num_train=120, num_val=40, num_test=30, seed=3)


def _load(root):
    problems = json.loads((root / "problems.json").read_text())
    splits = json.loads((root / "pid_splits.json").read_text())
    return problems, splits


def test_layout_and_fields(synthetic_root):
    problems, splits = _load(synthetic_root)
    assert {name: len(qids) for name, qids in splits.items()} == {"train": 120, "val": 40, "test": 30, "trainval": 160}
    assert splits["trainval"] == splits["train"] + splits["val"]
    assert len(problems) == 190 == len(set(splits["train"] + splits["val"] + splits["test"]))
    captions = json.loads((synthetic_root / "captions.json").read_text())["captions"]
    for split in ("train", "val", "test"):
        for qid in splits[split]:
            problem = problems[qid]
            assert set(problem) == OFFICIAL_FIELDS
            assert problem["split"] == split
            assert 2 <= len(problem["choices"]) <= 4
            assert len(set(problem["choices"])) == len(problem["choices"])
            assert isinstance(problem["answer"], int) and 0 <= problem["answer"] < len(problem["choices"])
            assert problem["grade"] in {f"grade{g}" for g in range(1, 13)}
            image_path = synthetic_root / "images" / split / qid / "image.png"
            assert image_path.is_file() == (problem["image"] == "image.png")
            assert (qid in captions) == (problem["image"] is not None)
            if problem["image"]:
                with Image.open(image_path) as image:
                    assert image.size == (32, 32)
    assert {p["subject"] for p in problems.values()} == {"natural science", "social science", "language science"}


def test_answer_positions_balanced(synthetic_root):
    problems, splits = _load(synthetic_root)
    for split in ("train", "val", "test"):
        by_num_choices = Counter((len(problems[q]["choices"]), problems[q]["answer"]) for q in splits[split])
        for k in (2, 3, 4):
            counts = [by_num_choices[(k, position)] for position in range(k)]
            assert min(counts) > 0 and max(counts) - min(counts) <= 1, (split, k, counts)


def _cells(image):
    """Colour name of the shape in each cell of the 2x2 grid (None if empty), read from the cell centre."""
    size = image.size[0]
    names = {rgb: name for name, rgb in COLORS.items()}
    return [
        names.get(image.getpixel((int((c % 2 + 0.5) * size / 2), int((c // 2 + 0.5) * size / 2)))) for c in range(4)
    ]


def test_questions_are_answerable_from_their_source(synthetic_root):
    problems, splits = _load(synthetic_root)
    positions = ("top left", "top right", "bottom left", "bottom right")
    kinds = Counter()
    for qid in splits["train"]:
        problem = problems[qid]
        kind, correct = problem["category"], problem["choices"][problem["answer"]]
        kinds[kind] += 1
        if problem["image"]:
            # The answer is in the picture, not in the text.
            assert all(choice not in problem["hint"] for choice in problem["choices"])
            image = Image.open(synthetic_root / "images" / "train" / qid / "image.png").convert("RGB")
            filled = [colour for colour in _cells(image) if colour]
            if kind == "count":
                assert correct == str(len(filled))
            elif kind == "color":
                assert filled == [correct]
            elif kind == "position":
                assert _cells(image)[positions.index(correct)] is not None and len(filled) == 1
            else:
                assert kind == "shape" and len(filled) == 1
        elif problem["hint"]:
            assert correct in problem["hint"]
        elif kind == "alphabetical":
            assert correct == min(problem["choices"])
        else:
            assert kind == "largest_number" and int(correct) == max(map(int, problem["choices"]))
    assert len(kinds) == 8 and max(kinds.values()) - min(kinds.values()) <= 1


def test_round_trip_through_reader(synthetic_root):
    problems, splits = _load(synthetic_root)
    for split in ("train", "val", "test", "trainval"):
        ds = load_scienceqa(synthetic_root, split, use_caption=True)
        assert ds["id"] == splits[split]
        assert ds["answer"] == ["ABCD"[problems[q]["answer"]] for q in splits[split]]
        assert ds["has_image"] == [problems[q]["image"] is not None for q in splits[split]]
    ds = load_scienceqa(synthetic_root, "train")
    categories = Counter(tuple(c) for c in ds["context_categories"])
    assert set(categories) == {("IMG",), ("TXT", "IMG"), ("TXT",), ("NO",)}
    assert sum(ds["has_image"]) == len(ds) // 2
    image_rows = [row for row in ds.select(range(16)) if row["has_image"]]
    assert image_rows and all(row["images"][0].mode == "RGB" for row in image_rows)
    assert all(row["completion"][0]["content"][0]["text"].startswith("The answer is ") for row in ds.select(range(16)))


def test_deterministic_for_a_seed(tmp_path):
    def files(root):
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    a = files(write_synthetic_scienceqa(tmp_path / "a", 24, 8, 8, image_size=48, seed=7))
    b = files(write_synthetic_scienceqa(tmp_path / "b", 24, 8, 8, image_size=48, seed=7))
    c = files(write_synthetic_scienceqa(tmp_path / "c", 24, 8, 8, image_size=48, seed=8))
    assert a == b
    assert a["problems.json"] != c["problems.json"]


def test_fast(tmp_path):
    start = time.perf_counter()
    write_synthetic_scienceqa(tmp_path, num_train=400, num_val=50, num_test=50)
    assert time.perf_counter() - start < 5  # about 0.2 s in practice; generous for slow CI machines


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="image_size must be at least 16"):
        write_synthetic_scienceqa(tmp_path, image_size=8)
    with pytest.raises(ValueError, match="num_val must be non-negative; got -1"):
        write_synthetic_scienceqa(tmp_path, num_val=-1)


def test_descriptions_say_what_each_picture_shows(tmp_path):
    root = write_synthetic_scienceqa(tmp_path / "described", num_train=64, num_val=0, num_test=0, seed=3)
    problems = json.loads((root / "problems.json").read_text())
    descriptions = json.loads((root / "descriptions.json").read_text())["descriptions"]
    image_ids = {qid for qid, problem in problems.items() if problem["image"]}
    assert set(descriptions) == image_ids
    for qid in image_ids:
        problem, description = problems[qid], descriptions[qid]
        answer = problem["choices"][problem["answer"]]
        if problem["question"].startswith("How many"):
            expected_words = 4 if answer == "1" else 2  # "red circle top left" or "3 shapes"
            assert len(description.split()) == expected_words and (answer == "1" or description == f"{answer} shapes")
        else:
            assert answer in description, (problem["question"], answer, description)
