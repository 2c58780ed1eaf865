"""Property tests: over ScienceQA records with random field types, nulls, missing fields, image paths and split
lists, the reader gives the documented rows or one clear error (raised by this package, naming the problem or the
split entry), never another exception."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import datasets
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from transformers_lavin.data import build_prompt, load_scienceqa
from transformers_lavin.data.prompts import OPTION_LETTERS
from transformers_lavin.data.scienceqa import REQUIRED_PROBLEM_FIELDS, check_problem_fields

PROPERTY_SETTINGS = settings(max_examples=60, deadline=None)
CLEAR_ERRORS = (ValueError, FileNotFoundError)

# Values of every JSON type, text with characters that matter to prompts and paths.
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 7),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.lists(st.one_of(st.none(), st.integers(0, 3), st.text(max_size=3)), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
texts = st.text(alphabet=st.sampled_from("ab {}\n\\%"), max_size=8)
paths = st.sampled_from(
    ["image.png", "other.png", "../../x.png", "/etc/hostname", "sub/image.png", ".", "..", "", "a\x00b", "images"]
)
split_names = st.sampled_from(["train", "val", "", "..", "../..", "/tmp", "train/../.."])


def field(valid):
    """Mostly a valid value, sometimes anything."""
    return st.one_of(valid, valid, junk)


problems = st.fixed_dictionaries(
    {
        "question": field(texts),
        "choices": field(st.lists(texts, min_size=1, max_size=6)),
        "answer": field(st.integers(0, 5)),
        "hint": field(st.one_of(st.none(), texts)),
        "image": field(st.one_of(st.none(), paths)),
        "lecture": field(st.one_of(st.none(), texts)),
        "solution": field(st.one_of(st.none(), texts)),
        "subject": field(st.sampled_from(["natural science", "social science"])),
        "grade": field(st.sampled_from(["grade1", "grade12"])),
        "split": field(split_names),
    }
)


@st.composite
def data_sets(draw):
    qids = draw(st.lists(st.sampled_from(["1", "2", "3", "x y"]), min_size=1, max_size=3, unique=True))
    records = {}
    for qid in qids:
        problem = draw(problems)
        for name in draw(st.lists(st.sampled_from(REQUIRED_PROBLEM_FIELDS), max_size=1)):
            del problem[name]  # sometimes a field is missing
        records[qid] = problem
    entries = draw(st.lists(st.one_of(st.sampled_from(qids), st.sampled_from(qids), junk), min_size=1, max_size=4))
    return records, entries


def _write(root: Path, records: dict, entries: list) -> None:
    (root / "problems.json").write_text(json.dumps(records))
    (root / "pid_splits.json").write_text(json.dumps({"train": entries}))
    for qid, problem in records.items():  # the images a well-formed record points at
        split = problem.get("split")
        if problem.get("image") == "image.png" and split in ("train", "val", "", None):
            folder = root / "images" / (split or "train") / qid
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (4, 4)).save(folder / "image.png")
    (root / "images" / "train" / "2" / "other.png").parent.mkdir(parents=True, exist_ok=True)
    (root / "images" / "train" / "2" / "other.png").write_bytes(b"not an image")


def well_formed(problem: dict) -> bool:
    """The documented record schema, written out independently of the reader."""
    choices = problem["choices"]
    return (
        all(isinstance(problem[name], str) for name in ("question", "subject", "grade"))
        and all(problem[name] is None or isinstance(problem[name], str) for name in ("hint", "lecture", "solution"))
        and isinstance(choices, list)
        and 1 <= len(choices) <= 5
        and all(isinstance(choice, str) for choice in choices)
        and type(problem["answer"]) is int
        and 0 <= problem["answer"] < len(choices)
        and all(problem.get(name) is None or isinstance(problem[name], str) for name in ("image", "split"))
    )


def assert_clear(error: BaseException, names: list[str]) -> None:
    """Raised by this package itself, naming one of `names` (a problem id or a split entry)."""
    frame = error.__traceback__
    while frame.tb_next is not None:
        frame = frame.tb_next
    assert "transformers_lavin" in frame.tb_frame.f_code.co_filename, repr(error)
    assert any(name in str(error) for name in names), str(error)


@PROPERTY_SETTINGS
@given(data=data_sets())
def test_scienceqa_records_load_or_give_a_clear_error_naming_the_record(data):
    records, entries = data
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        _write(root, records, entries)
        try:
            rows = load_scienceqa(root, "train")
        except CLEAR_ERRORS as error:
            names = [repr(str(entry)) for entry in entries] + [f"entry {i} " for i in range(len(entries))]
            assert_clear(error, names)
            return
        # Loaded: one row per split entry, in order, each the record it names.
        assert rows["id"] == [str(entry) for entry in entries]
        assert len(set(rows["id"])) == len(entries)
        for row in rows.cast_column("images", datasets.List(datasets.Image(decode=False))):
            problem = records[row["id"]]
            assert well_formed(problem), problem
            assert row["answer"] == OPTION_LETTERS[problem["answer"]]
            assert row["choices"] == problem["choices"]
            assert row["completion"][0]["content"][0]["text"] == build_prompt(problem)[1]
            assert len(row["images"]) == (1 if problem["image"] else 0)
            for image in row["images"]:
                assert Path(image["path"]).resolve().is_relative_to(root.resolve())


@PROPERTY_SETTINGS
@given(problem=problems)
def test_a_hub_table_row_is_checked_or_refused_naming_the_row(problem):
    try:
        check_problem_fields(problem, "row 7")
    except ValueError as error:
        assert_clear(error, ["row 7"])
        return
    assert well_formed({"image": None, **problem, "split": None})
    prompt, answer = build_prompt(problem)  # a checked row always gives a prompt
    assert prompt.startswith("Question: ") and "The answer is " in answer
