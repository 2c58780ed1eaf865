"""Tests of the ScienceQA prompt formats and reader.

Expected strings are written by hand from the reference `util/base_prompt.py` (`create_training_example`) of
luogen1996/LaVIN, not derived from our implementation.
"""

import json

import pytest
from PIL import Image

from transformers_lavin.data import PROMPT_FORMATS, build_prompt, load_scienceqa

# A hand-written problem exercising the reference's text handling: a double space in the question, a newline in the
# lecture, three spaces in the solution (one replace pass leaves two), a caption.
PROBLEM = {
    "question": "Which  animal is a mammal?",
    "choices": ["trout", "cat", "sparrow"],
    "answer": 1,
    "hint": "Cats have fur.",
    "image": None,
    "lecture": "Mammals have fur.\nThey feed milk to their young.",
    "solution": "A cat is a mammal.   It has fur.",
    "caption": "A photo of a cat.",
}
Q = "Question: Which animal is a mammal?"
C = "Context: Cats have fur."
M = "Options: (A) trout (B) cat (C) sparrow"
LECTURE = "Mammals have fur.\\nThey feed milk to their young."  # a backslash and an n, not a newline
SOLUTION = "A cat is a mammal.  It has fur."

EXPECTED_PROMPTS = {
    "CQM": f"{C}\n{Q}\n{M}\nResponse:",
    "QCM": f"{Q}\n{C}\n{M}\nResponse:",
    "QCML": f"{Q}\n{C}\n{M}\nBECAUSE: {LECTURE}\nResponse:",
    "QCME": f"{Q}\n{C}\n{M}\nBECAUSE: {SOLUTION}\nResponse:",
    "QCMLE": f"{Q}\n{C}\n{M}\nBECAUSE: {LECTURE} {SOLUTION}\nResponse:",
    "QCLM": f"{Q}\n{C}\nBECAUSE: {LECTURE}\n{M}\nResponse:",
    "QCEM": f"{Q}\n{C}\nBECAUSE: {SOLUTION}\n{M}\nResponse:",
    "QCLEM": f"{Q}\n{C}\nBECAUSE: {LECTURE} {SOLUTION}\n{M}\nResponse:",
}
EXPECTED_ANSWERS = {
    "A": "The answer is B.",
    "AL": f"The answer is B. BECAUSE: {SOLUTION}",  # the reference's AL shows the solution
    "AE": f"The answer is B. BECAUSE: {LECTURE}",  # and its AE the lecture
    "ALE": f"The answer is B. BECAUSE: {LECTURE} {SOLUTION}",
    "AEL": f"The answer is B. BECAUSE: {SOLUTION} {LECTURE}",
    "LA": f"{LECTURE} The answer is B.",
    "EA": f"{SOLUTION} The answer is B.",
    "LEA": f"{LECTURE} {SOLUTION} The answer is B.",
    "ELA": f"{SOLUTION} {LECTURE} The answer is B.",
}


def test_prompt_formats_are_the_reference_ones():
    expected = {f"{i}-{o}" for i in EXPECTED_PROMPTS for o in EXPECTED_ANSWERS}
    assert set(PROMPT_FORMATS) == expected
    assert len(PROMPT_FORMATS) == 72


@pytest.mark.parametrize("input_format", list(EXPECTED_PROMPTS))
def test_prompt_of_each_input_format(input_format):
    prompt, answer = build_prompt(PROBLEM, f"{input_format}-A")
    assert prompt == EXPECTED_PROMPTS[input_format]
    assert answer == "The answer is B."


@pytest.mark.parametrize("output_format", list(EXPECTED_ANSWERS))
def test_answer_of_each_output_format(output_format):
    prompt, answer = build_prompt(PROBLEM, f"QCM-{output_format}")
    assert prompt == EXPECTED_PROMPTS["QCM"]
    assert answer == EXPECTED_ANSWERS[output_format]


def test_default_format_is_lavins_qcm_ale():
    prompt, answer = build_prompt(PROBLEM)
    assert prompt == (
        "Question: Which animal is a mammal?\nContext: Cats have fur.\nOptions: (A) trout (B) cat (C) sparrow\n"
        "Response:"
    )
    assert answer == (
        "The answer is B. BECAUSE: Mammals have fur.\\nThey feed milk to their young. A cat is a mammal.  It has fur."
    )


def test_context_caption_and_na():
    assert build_prompt(PROBLEM, "CQM-A", use_caption=True)[0].startswith(
        "Context: Cats have fur. A photo of a cat.\nQuestion:"
    )
    no_hint = {**PROBLEM, "hint": ""}
    assert build_prompt(no_hint, "CQM-A")[0].startswith("Context: N/A\nQuestion:")
    assert build_prompt(no_hint, "CQM-A", use_caption=True)[0].startswith("Context: A photo of a cat.\nQuestion:")
    no_caption = {key: value for key, value in no_hint.items() if key != "caption"}
    assert build_prompt(no_caption, "CQM-A", use_caption=True)[0].startswith("Context: N/A\nQuestion:")
    # The reference strips the joined context.
    assert build_prompt({**PROBLEM, "hint": " Cats have fur. "}, "CQM-A")[0].startswith("Context: Cats have fur.\n")


def test_five_options_and_literal_braces():
    problem = {**PROBLEM, "question": "Pick {x}.", "choices": ["1", "2", "3", "4", "5"], "answer": 4}
    prompt, answer = build_prompt(problem, "QCM-A")
    assert prompt == "Question: Pick {x}.\nContext: Cats have fur.\nOptions: (A) 1 (B) 2 (C) 3 (D) 4 (E) 5\nResponse:"
    assert answer == "The answer is E."


def test_empty_explanation_keeps_because_like_the_reference():
    # The reference means to drop a trailing "BECAUSE:" but its code has no effect; trained models saw it.
    problem = {**PROBLEM, "lecture": "", "solution": ""}
    assert build_prompt(problem, "QCM-ALE")[1] == "The answer is B. BECAUSE:"
    assert build_prompt(problem, "QCM-LEA")[1] == "The answer is B."


@pytest.mark.parametrize("bad", ["QCM-XYZ", "qcm-ale", "QCMALE", "XYZ-A", ""])
def test_unknown_prompt_format(bad):
    with pytest.raises(ValueError, match="Unknown ScienceQA prompt format") as error:
        build_prompt(PROBLEM, bad)
    assert repr(bad) in str(error.value) and "QCM-ALE" in str(error.value) and "CQM-A" in str(error.value)


def test_bad_answer_and_too_many_choices():
    with pytest.raises(ValueError, match="integer index into the 3 choices"):
        build_prompt({**PROBLEM, "answer": 3})
    with pytest.raises(ValueError, match="at most 5 choices"):
        build_prompt({**PROBLEM, "choices": list("abcdef"), "answer": 0})


# ---- reader ----------------------------------------------------------------------------------------------------

FIXTURE_PROBLEMS = {
    # image and hint: counts as TXT and IMG
    "10": {
        "question": "Which color is the square?",
        "choices": ["red", "blue"],
        "answer": 0,
        "hint": "Look at the picture.",
        "image": "image.png",
        "lecture": "",
        "solution": "The square is red.",
        "subject": "natural science",
        "grade": "grade2",
        "split": "train",
    },
    # text only, with a hint
    "12": {
        "question": "What is Ann's pet?",
        "choices": ["a dog", "a cat", "a fish"],
        "answer": 2,
        "hint": "Ann has a fish.",
        "image": None,
        "lecture": "Read.\nThen answer.",
        "solution": "Ann has a fish.",
        "subject": "language science",
        "grade": "grade9",
        "split": "train",
    },
    # no context at all
    "13": {
        "question": "Which word comes first in alphabetical order?",
        "choices": ["bee", "ant"],
        "answer": 1,
        "hint": "",
        "image": None,
        "lecture": "",
        "solution": "",
        "subject": "social science",
        "grade": "grade12",
        "split": "train",
    },
    # image only, grayscale on disk
    "11": {
        "question": "How many dots?",
        "choices": ["1", "2", "3", "4"],
        "answer": 3,
        "hint": "",
        "image": "image.png",
        "lecture": "Count.",
        "solution": "There are 4.",
        "subject": "natural science",
        "grade": "grade5",
        "split": "val",
    },
}


def _write_fixture(root, problems=None, splits=None):
    problems = FIXTURE_PROBLEMS if problems is None else problems
    splits = {"train": ["10", "12", "13"], "val": ["11"], "minival": ["11"]} if splits is None else splits
    (root / "problems.json").write_text(json.dumps(problems))
    (root / "pid_splits.json").write_text(json.dumps(splits))
    (root / "captions.json").write_text(json.dumps({"captions": {"10": "A red square.", "11": "Some dots."}}))
    for qid, mode, size in (("10", "RGB", (20, 24)), ("11", "L", (16, 16))):
        folder = root / "images" / problems[qid]["split"] / qid
        folder.mkdir(parents=True, exist_ok=True)
        Image.new(mode, size, 128).save(folder / "image.png")
    return root


def test_reader_prompt_completion_rows(tmp_path):
    ds = load_scienceqa(_write_fixture(tmp_path), "train")
    assert len(ds) == 3
    assert ds["id"] == ["10", "12", "13"]  # the order of pid_splits.json
    assert ds["answer"] == ["A", "C", "B"]
    assert ds["choices"] == [["red", "blue"], ["a dog", "a cat", "a fish"], ["bee", "ant"]]
    assert ds["subject"] == ["natural science", "language science", "social science"]
    assert ds["grade"] == ["grade2", "grade9", "grade12"]
    assert ds["has_image"] == [True, False, False]
    assert ds["has_text"] == [True, True, False]
    assert ds["no_context"] == [False, False, True]
    assert ds["context_categories"] == [["TXT", "IMG"], ["TXT"], ["NO"]]

    image_row, text_row, _ = ds[0], ds[1], ds[2]
    assert image_row["prompt"] == [
        {
            "role": "user",
            "content": [
                {"type": "image", "text": None},
                {
                    "type": "text",
                    "text": "Question: Which color is the square?\nContext: Look at the picture.\n"
                    "Options: (A) red (B) blue\nResponse:",
                },
            ],
        }
    ]
    assert image_row["completion"] == [
        {"role": "assistant", "content": [{"type": "text", "text": "The answer is A. BECAUSE: The square is red."}]}
    ]
    assert len(image_row["images"]) == 1
    assert image_row["images"][0].mode == "RGB" and image_row["images"][0].size == (20, 24)

    assert text_row["images"] == []
    assert text_row["prompt"][0]["content"] == [
        {
            "type": "text",
            "text": "Question: What is Ann's pet?\nContext: Ann has a fish.\nOptions: (A) a dog (B) a cat (C) a fish\n"
            "Response:",
        }
    ]
    assert text_row["completion"][0]["content"][0]["text"] == (
        "The answer is C. BECAUSE: Read.\\nThen answer. Ann has a fish."
    )
    assert "messages" not in ds.column_names


def test_reader_images_of_derived_split_and_grayscale(tmp_path):
    # "minival" has no image folder of its own: images are found under the problem's own split.
    ds = load_scienceqa(_write_fixture(tmp_path), "minival")
    (image,) = ds[0]["images"]
    assert image.mode == "RGB" and image.size == (16, 16)  # stored as grayscale, loaded as RGB
    assert ds["context_categories"] == [["IMG"]]


def test_reader_captions_format_and_prompt_format(tmp_path):
    root = _write_fixture(tmp_path)
    ds = load_scienceqa(root, "train", prompt_format="CQM-A", use_caption=True, format="messages")
    assert ds.column_names[0] == "messages" and "prompt" not in ds.column_names
    user, assistant = ds[0]["messages"]
    assert user["content"][1]["text"].startswith("Context: Look at the picture. A red square.\nQuestion:")
    assert assistant == {"role": "assistant", "content": [{"type": "text", "text": "The answer is A."}]}
    # Problems without a caption keep their plain context.
    assert ds[2]["messages"][0]["content"][0]["text"].startswith("Context: N/A\n")

    other = tmp_path / "elsewhere.json"
    other.write_text(json.dumps({"captions": {"10": "Another caption."}}))
    ds = load_scienceqa(root, "train", use_caption=True, captions_file=other)
    assert "Context: Look at the picture. Another caption.\n" in ds[0]["prompt"][0]["content"][1]["text"]


def test_reader_rows_are_accepted_by_trl(tmp_path):
    from trl.data_utils import is_conversational, prepare_multimodal_messages

    ds = load_scienceqa(_write_fixture(tmp_path), "train")
    for row in ds:
        assert is_conversational(row)
        prompt = prepare_multimodal_messages(row["prompt"], images=row["images"])
        filled = [part for part in prompt[0]["content"] if part["type"] == "image"]
        assert len(filled) == len(row["images"])
        assert all(isinstance(part["image"], Image.Image) for part in filled)


# ---- bad input -------------------------------------------------------------------------------------------------


def test_missing_and_malformed_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="problems.json"):
        load_scienceqa(tmp_path)
    (tmp_path / "problems.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"problems.json is not valid JSON"):
        load_scienceqa(tmp_path)
    (tmp_path / "problems.json").write_text("[]")
    with pytest.raises(ValueError, match=r"problems.json must hold a JSON object"):
        load_scienceqa(tmp_path)
    (tmp_path / "problems.json").write_text(json.dumps(FIXTURE_PROBLEMS))
    with pytest.raises(FileNotFoundError, match="pid_splits.json"):
        load_scienceqa(tmp_path)
    (tmp_path / "pid_splits.json").write_text("")
    with pytest.raises(ValueError, match=r"pid_splits.json is not valid JSON"):
        load_scienceqa(tmp_path)
    (tmp_path / "pid_splits.json").write_text(json.dumps({"train": "10"}))
    with pytest.raises(ValueError, match=r"pid_splits.json must hold a JSON object mapping split name to a list"):
        load_scienceqa(tmp_path)


def test_unknown_split_lists_available(tmp_path):
    with pytest.raises(ValueError, match=r"Split 'dev' not found in .*pid_splits.json; available splits: train, val"):
        load_scienceqa(_write_fixture(tmp_path), "dev")


def test_bad_problems(tmp_path):
    broken = {**FIXTURE_PROBLEMS, "12": {k: v for k, v in FIXTURE_PROBLEMS["12"].items() if k != "choices"}}
    with pytest.raises(ValueError, match=r"problems.json: problem '12' lacks the field\(s\) \['choices'\]"):
        load_scienceqa(_write_fixture(tmp_path, broken), "train")
    broken = {**FIXTURE_PROBLEMS, "13": {**FIXTURE_PROBLEMS["13"], "answer": 2}}
    with pytest.raises(ValueError, match=r"problem '13': .*integer index into the 2 choices; got 2"):
        load_scienceqa(_write_fixture(tmp_path, broken), "train")
    with pytest.raises(ValueError, match=r"lists qid '99' in split 'train', but .*problems.json has no such problem"):
        load_scienceqa(_write_fixture(tmp_path, splits={"train": ["10", "99"]}), "train")


def test_missing_and_unreadable_image(tmp_path):
    root = _write_fixture(tmp_path)
    path = root / "images" / "train" / "10" / "image.png"
    path.write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match=r"problem '10' at .*images/train/10/image.png cannot be read as an image"):
        load_scienceqa(root, "train")
    path.unlink()
    with pytest.raises(FileNotFoundError, match=r"problem '10' not found: .*images/train/10/image.png"):
        load_scienceqa(root, "train")


def test_reader_bad_format_and_captions(tmp_path):
    root = _write_fixture(tmp_path)
    with pytest.raises(ValueError, match="Unknown ScienceQA prompt format 'QCM-X'"):
        load_scienceqa(root, prompt_format="QCM-X")
    with pytest.raises(ValueError, match="Unknown output format 'chat'"):
        load_scienceqa(root, format="chat")
    with pytest.raises(FileNotFoundError, match="captions file not found: .*nope.json"):
        load_scienceqa(root, use_caption=True, captions_file=root / "nope.json")
    (root / "captions.json").write_text(json.dumps({"10": "flat"}))
    with pytest.raises(ValueError, match=r"captions.json must hold a JSON object \{'captions'"):
        load_scienceqa(root, use_caption=True)


@pytest.mark.parametrize(
    ("field", "value"),
    [("image", "/etc/passwd"), ("image", "../../../../outside.png"), ("split", "../.."), ("split", "/tmp")],
)
def test_image_paths_must_stay_inside_the_data_root(tmp_path, field, value):
    root = tmp_path / "data"
    root.mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "outside.png")  # a readable image outside the root
    _write_fixture(root)
    problems = json.loads((root / "problems.json").read_text())
    problems["10"][field] = value
    (root / "problems.json").write_text(json.dumps(problems))
    with pytest.raises(ValueError, match=r"problem '10' points outside the data folder .*absolute or climbs out"):
        load_scienceqa(root, "train")


@pytest.mark.parametrize("qid", ["../10", "/abs", "..", "", None, ["10"], True])
def test_a_split_entry_that_is_not_a_plain_id(tmp_path, qid):
    root = _write_fixture(tmp_path, splits={"train": ["10", qid]})
    with pytest.raises(ValueError, match=r"entry 1 of split 'train' is .*; every entry must be a problem id"):
        load_scienceqa(root, "train")


def test_deeply_nested_json_is_a_clear_error(tmp_path):
    (tmp_path / "problems.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="nested too deeply"):
        load_scienceqa(tmp_path)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("question", None, r"problem '12' has 'question' None; expected a string"),
        ("subject", None, r"problem '12' has 'subject' None; expected a string"),
        ("grade", 9, r"problem '12' has 'grade' 9; expected a string"),
        ("hint", ["a"], r"problem '12' has 'hint' \['a'\]; expected a string or null"),
        ("lecture", {"x": 1}, r"problem '12' has 'lecture' \{'x': 1\}; expected a string or null"),
        ("choices", ["a dog", 2, "a fish"], r"problem '12' has 'choices' entry 1 2; every choice must be a string"),
        ("choices", ["a", None, "b"], r"problem '12' has 'choices' entry 1 None"),
        ("choices", "abc", r"problem '12' has 'choices' 'abc'; expected a list of 1 to 5 strings"),
        ("choices", [], r"problem '12' has 'choices' \[\]; expected a list"),
        ("answer", -1, r"problem '12': .*integer index into the 3 choices; got -1"),
        ("answer", 3, r"problem '12': .*integer index into the 3 choices; got 3"),
        ("answer", "2", r"problem '12': .*integer index into the 3 choices; got '2'"),
        ("image", 5, r"problem '12' has 'image' 5; expected a file or folder name, or null"),
        ("split", ["train"], r"problem '12' has 'split' \['train'\]; expected a file or folder name, or null"),
    ],
)
def test_a_malformed_problem_names_the_problem_and_field(tmp_path, field, value, message):
    broken = {**FIXTURE_PROBLEMS, "12": {**FIXTURE_PROBLEMS["12"], field: value}}
    with pytest.raises(ValueError, match=r"problems.json: " + message):
        load_scienceqa(_write_fixture(tmp_path, broken), "train")


def test_null_hint_lecture_and_solution_are_empty(tmp_path):
    problems = {**FIXTURE_PROBLEMS, "13": {**FIXTURE_PROBLEMS["13"], "hint": None, "lecture": None, "solution": None}}
    row = load_scienceqa(_write_fixture(tmp_path, problems), "train", prompt_format="QCM-ALE")[2]
    assert row["id"] == "13" and row["context_categories"] == ["NO"]
    assert row["completion"][0]["content"][0]["text"] == "The answer is B. BECAUSE:"


def test_an_id_listed_twice_in_a_split_is_refused(tmp_path):
    root = _write_fixture(tmp_path, splits={"train": ["10", "12", "10"]})
    with pytest.raises(ValueError, match=r"split 'train' lists the id '10' twice \(entries 0 and 2\)"):
        load_scienceqa(root, "train")
    # An id may be in two splits (the official trainval holds train and val).
    root = _write_fixture(tmp_path, splits={"train": ["10"], "trainval": ["10", "11"]})
    assert load_scienceqa(root, "trainval")["id"] == ["10", "11"]


def test_a_non_string_caption_is_refused(tmp_path):
    root = _write_fixture(tmp_path)
    (root / "captions.json").write_text(json.dumps({"captions": {"10": ["a red square"]}}))
    with pytest.raises(ValueError, match=r"captions.json: the caption of problem '10' is \['a red square'\]"):
        load_scienceqa(root, "train", use_caption=True)


def test_json_files_over_the_bound_are_refused_before_parsing(tmp_path, monkeypatch):
    import transformers_lavin.data.scienceqa as scienceqa

    root = _write_fixture(tmp_path)
    size = (root / "problems.json").stat().st_size
    assert scienceqa.MAX_JSON_BYTES == 512 * 2**20  # the documented default
    with pytest.raises(ValueError, match=rf"problems file .*problems.json is larger than {size - 1:,} bytes"):
        load_scienceqa(root, "train", max_json_bytes=size - 1)
    assert len(load_scienceqa(root, "train", max_json_bytes=size)) == 3  # a file of exactly the bound is read
    # The module attribute is the default; the argument overrides it.
    monkeypatch.setattr(scienceqa, "MAX_JSON_BYTES", size - 1)
    with pytest.raises(ValueError, match=r"problems.json is larger than .*max_json_bytes=N"):
        load_scienceqa(root, "train")
    assert len(load_scienceqa(root, "train", max_json_bytes=10 * size)) == 3
    # The split and captions files have the same bound.
    splits = root / "pid_splits.json"
    splits.write_text(splits.read_text() + " " * size)
    with pytest.raises(ValueError, match=r"split file .*pid_splits.json is larger than"):
        load_scienceqa(root, "train", max_json_bytes=size)
