"""Every metric against values worked out by hand from its definition."""

import math

import pytest

from transformers_lavin.evaluation.metrics import (
    binary_scores,
    extract_answer,
    normalize_vqa_answer,
    parse_yes_no,
    problem_columns,
    scienceqa_scores,
    vqa_accuracy,
)

CHOICES = ["cat", "dog", "fish"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is B. BECAUSE: dogs bark.", 1),  # the reference rule
        ("Lecture first. The answer is C.", 2),
        ("The answer is A, since cats purr", 0),  # the reference's "." matches any character
        ("The answer is B", 1),  # fallback: the sentence at the very end
        ("the answer is (C)", 2),
        ("B", 1),  # fallback: a bare letter
        ("(C) fish", 2),
        ("Answer: A", 0),
        ("Fish.", 2),  # fallback: the text of one choice
        ("A cat", None),  # an article, not an option
        ("The answer is D.", None),  # names no choice (the reference would guess at random)
        ("I do not know.", None),
        ("", None),
    ],
)
def test_extract_answer_lenient(text, expected):
    assert extract_answer(text, CHOICES, "lenient") == expected


def test_problem_columns():
    assert problem_columns("natural science", "grade3", False, True) == ["NAT", "IMG", "G1-6"]
    assert problem_columns("social science", "grade12", True, True) == ["SOC", "TXT", "IMG", "G7-12"]
    assert problem_columns("language science", "grade6", False, False) == ["LAN", "NO", "G1-6"]


def test_scienceqa_scores_by_hand():
    records = [
        {"correct": True, "columns": ["NAT", "IMG", "G1-6"]},
        {"correct": False, "columns": ["NAT", "TXT", "G7-12"]},
        {"correct": True, "columns": ["SOC", "TXT", "IMG", "G7-12"]},
        {"correct": True, "columns": ["LAN", "NO", "G1-6"]},
    ]
    scores = scienceqa_scores(records)
    assert scores == {
        "NAT": 50.0,
        "SOC": 100.0,
        "LAN": 100.0,
        "TXT": 50.0,
        "IMG": 100.0,
        "NO": 100.0,
        "G1-6": 100.0,
        "G7-12": 50.0,
        "Avg": 75.0,
    }
    assert scienceqa_scores(records[:1])["SOC"] is None  # an empty column is reported as missing, not 0


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Yes, there is a dog.", "yes"),
        ("No, there is no dog.", "no"),
        ("There is not a dog in the image.", "no"),
        ("There is a dog. No doubt.", "yes"),  # only the first sentence counts
        ("NO", "no"),
        ("Nothing but a cat.", "yes"),  # "nothing" is not the word "no"
        ("", None),
        ("...", None),
    ],
)
def test_parse_yes_no_lenient(text, expected):
    assert parse_yes_no(text, "lenient") == expected


def test_binary_scores_by_hand():
    pairs = [("yes", "yes"), ("yes", "yes"), ("yes", "no"), ("no", "yes"), ("no", "no"), ("no", "no"), ("no", None)]
    scores = binary_scores({"label": label, "prediction": pred} for label, pred in pairs)
    # The unreadable answer to a "no" question counts as a wrong "yes": TP 2, FN 1, FP 2, TN 2.
    assert (scores["tp"], scores["fn"], scores["fp"], scores["tn"], scores["n"]) == (2, 1, 2, 2, 7)
    precision, recall = 2 / 4, 2 / 3
    assert scores["accuracy"] == pytest.approx(100 * 4 / 7)
    assert scores["precision"] == pytest.approx(100 * precision)
    assert scores["recall"] == pytest.approx(100 * recall)
    assert scores["f1"] == pytest.approx(100 * 2 * precision * recall / (precision + recall))
    assert scores["yes_ratio"] == pytest.approx(100 * 4 / 7)


def test_binary_scores_degenerate():
    scores = binary_scores([{"label": "no", "prediction": "no"}])
    assert scores["precision"] is None and scores["recall"] is None and scores["f1"] == 0.0
    assert scores["accuracy"] == 100.0 and scores["yes_ratio"] == 0.0


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Two dogs.", "2 dogs"),
        ("The cat", "cat"),
        ("an apple", "apple"),
        ("YES!", "yes"),
        ("1,000", "1000"),  # a thousands comma: punctuation deleted, not spaced
        ("2.5", "2.5"),  # a period before a digit stays
        ("red-white", "red white"),  # a hyphen inside a word becomes a space
        ("red - white", "red white"),  # and is deleted when it touches a space
        ("dont", "don't"),
        ("couldnt've", "couldn't've"),
        ("its", "its"),  # an ordinary word, left alone
        ("none", "0"),
        ("  left\tright\n", "left right"),
    ],
)
def test_normalize_vqa_answer(text, expected):
    assert normalize_vqa_answer(text) == expected


def test_vqa_accuracy_by_hand():
    # k humans agree. Leave-one-out: the k matching humans each leave k - 1, the others k.
    ten = lambda k: ["cat"] * k + ["dog"] * (10 - k)  # noqa: E731
    assert vqa_accuracy("cat", ten(0)) == 0.0
    assert vqa_accuracy("cat", ten(1)) == pytest.approx((1 * 0 + 9 * (1 / 3)) / 10)  # 0.3
    assert vqa_accuracy("cat", ten(2)) == pytest.approx((2 * (1 / 3) + 8 * (2 / 3)) / 10)  # 0.6
    assert vqa_accuracy("cat", ten(3)) == pytest.approx((3 * (2 / 3) + 7 * 1) / 10)  # 0.9
    assert vqa_accuracy("cat", ten(4)) == 1.0
    # The humans disagree, so both sides are processed: "A Cat." matches "cat".
    assert vqa_accuracy("A Cat.", ten(4)) == 1.0
    # Three humans, two say 2: leaving out a "2" leaves one match, leaving out the "3" leaves two.
    assert math.isclose(vqa_accuracy("Two", ["2", "two", "3"]), (2 * (1 / 3) + 1 * (2 / 3)) / 3)
    with pytest.raises(ValueError, match="at least one human answer"):
        vqa_accuracy("cat", [])
