"""Each metric reads answers as its official scorer does. Expected values are worked out by hand from the official
definitions: POPE's `evaluate.py`, the VQA `vqaEval.py`, LaVIN's `eval.py`, LLaVA's `eval_gpt_review_bench.py` and
`summarize_gpt_review.py`, and pycocoevalcap's PTB tokenizer."""

import shutil

import pytest
from conftest import ScriptedModel  # at import time, while this folder's conftest is the one loaded

from transformers_lavin.evaluation import LlavaBenchTask, read_results, run_task
from transformers_lavin.evaluation.judge import JudgeError, parse_judge_scores
from transformers_lavin.evaluation.metrics import extract_answer, normalize_vqa_answer, parse_yes_no, vqa_accuracy
from transformers_lavin.evaluation.metrics.captioning import caption_scores, simple_tokenize
from transformers_lavin.evaluation.metrics.vqa import CONTRACTIONS, process_punctuation
from transformers_lavin.evaluation.tasks.llava_bench import JUDGE_SYSTEM, judge_prompt


# POPE: first sentence, commas deleted, split on " "; "no" iff a piece is exactly "No", "not" or "no".
@pytest.mark.parametrize(
    "reply, expected",
    [
        ("No, there is no dog.", "no"),
        ("There is not a dog.", "no"),
        ("No.", "no"),
        ("no, there isn't", "no"),
        ("Yes, there is.", "yes"),
        ("There is a dog. No doubt.", "yes"),  # only the text before the first "."
        ("NO", "yes"),  # case matters
        ("Not", "yes"),
        ("no!", "yes"),  # "no!" is not the piece "no"
        ("(no)", "yes"),
        ("No\nthere is none", "yes"),  # split on spaces only: the piece is "No\nthere"
        ("", "yes"),  # an empty reply is "yes"
        ("...", "yes"),
    ],
)
def test_pope_official_rule(reply, expected):
    assert parse_yes_no(reply) == expected


@pytest.mark.parametrize("reply, expected", [("NO", "no"), ("Not", "no"), ("(no)", "no"), ("no!", "no"), ("", None)])
def test_pope_lenient_rule_is_an_option(reply, expected):
    assert parse_yes_no(reply, "lenient") == expected


# VQA: the punctuation decision looks at the original text.
@pytest.mark.parametrize(
    "text, expected",
    [
        # "(" touches a space: deleted. "-" does not touch a space in the original: replaced by a space.
        ("a (-b-c", "a  b c"),
        ("red - white", "red  white"),  # "-" touches a space: deleted
        ("1,000 (approx)", "1000 approx"),  # a thousands comma anywhere: every mark deleted
        ("2.5 m.", "2.5 m"),  # a period before a digit stays
    ],
)
def test_vqa_process_punctuation(text, expected):
    assert process_punctuation(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a (-b-c", "b c"),
        ("Two dogs.", "2 dogs"),
        ("twas", "'twas"),  # in the official table
        ("lets", "lets"),  # not in it ("let's" maps to itself)
        ("shes", "shes"),
        ("im", "im"),  # the official key is "Im", which never matches lower-cased text
        ("ive", "ive"),
        ("dont", "don't"),
        ("somebody'd", "somebodyd"),  # the official table maps this one backwards
    ],
)
def test_vqa_official_processing(text, expected):
    assert normalize_vqa_answer(text) == expected


def test_vqa_official_contraction_table():
    assert len(CONTRACTIONS) == 120 and CONTRACTIONS["twas"] == "'twas" and "lets" not in CONTRACTIONS


def test_vqa_official_accuracy():
    assert vqa_accuracy("cat", ["cat"]) == 0.0  # one human: leaving them out leaves nobody to match
    # All ten humans agree: nothing is processed, so the raw answer must match exactly.
    assert vqa_accuracy("Yes", ["yes"] * 10) == 0.0
    assert vqa_accuracy("yes", ["yes"] * 10) == 1.0
    assert vqa_accuracy("Yes", ["yes"] * 10, normalize="always") == 1.0  # the project rule, by option
    # The humans disagree: both sides are processed; 9 matches leave 8 or 9 others, min(., 3) / 3 = 1 each.
    assert vqa_accuracy("Yes.", ["yes"] * 9 + ["no"]) == 1.0
    # Two of ten match: each match leaves 1 other (1/3), each of the 8 others leaves 2 (2/3).
    assert vqa_accuracy("Two", ["2", "2"] + ["3"] * 8) == pytest.approx((2 * 1 / 3 + 8 * 2 / 3) / 10)


# ScienceQA: LaVIN's eval.py reads the first match of `The answer is ([A-Z]).` and nothing else.
@pytest.mark.parametrize(
    "reply, official, lenient",
    [
        ("The answer is B. BECAUSE: x", 1, 1),
        ("The answer is B,", 1, 1),  # the final "." of the pattern matches any character
        ("the answer is b.", None, None),  # a lowercase letter after the sentence: not read
        ("B", None, 1),
        ("B, because", None, 1),
        ("b", None, 1),  # a lone lowercase letter: lenient only
        ("(b)", None, 1),
        ("Fish.", None, 2),
        ("The answer is D.", None, None),  # names no choice of three
    ],
)
def test_scienceqa_rules(reply, official, lenient):
    choices = ["cat", "dog", "fish"]
    assert extract_answer(reply, choices) == official
    assert extract_answer(reply, choices, "lenient") == lenient


# Captions: a line break inside a caption must not move captions between images.
@pytest.mark.parametrize("java", [True, False])
def test_caption_line_break_inside_a_reference(java, monkeypatch):
    if java and shutil.which("java") is None:
        pytest.skip("needs java for the PTB tokenizer")
    if not java:
        monkeypatch.setattr("shutil.which", lambda name: None)
    predictions = {1: "a cat sits on the mat", 2: "a dog runs in the park", 3: "two birds fly over the sea"}
    references = {
        1: ["a cat\rsits on the mat"],
        2: ["a dog runs in\r\nthe park"],
        3: ["two birds fly over the sea"],
    }
    scores, _ = caption_scores(predictions, references)
    # Every hypothesis equals its reference: all n-gram precisions are 1 and there is no brevity penalty.
    assert scores["BLEU-4"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("A man's dog doesn't run.", "a man 's dog does n't run"),
        ("Two dogs, 3.5 feet-tall & 50% wet!", "two dogs 3.5 feet-tall & 50 % wet"),
        ("Un café crème à Paris", "un café crème à paris"),  # letters of any script are kept
        ("the (red) bus", "the -lrb- red -rrb- bus"),  # PTB's bracket tokens survive pycocoevalcap's filter
        ("1,000 cats...", "1,000 cats"),
    ],
)
def test_fallback_tokenizer_follows_ptb(caption, expected):
    assert simple_tokenize(caption) == expected


# LLaVA-Bench: the judge's first line, read as LLaVA's parse_score reads it.
def test_llava_parse_score():
    assert parse_judge_scores("8 6\nBecause...") == (8.0, 6.0)
    assert parse_judge_scores("8,6\n") == (8.0, 6.0)
    assert parse_judge_scores("7.5 9") == (7.5, 9.0)
    for unreadable in ["8, 6", "\n8 6", "8 6 ", "8  6", "Assistant 1: 8", "8"]:
        with pytest.raises(JudgeError):
            parse_judge_scores(unreadable)


def test_llava_judge_request_layout():
    assert JUDGE_SYSTEM == "You are a helpful and precise assistant for checking the quality of the answer."
    prompt = judge_prompt(["line one", "line two"], "Q?", "Ref.", "Mine.")
    assert prompt.startswith(
        "[Context]\nline one\nline two\n\n[Question]\nQ?\n\n[Assistant 1]\nRef.\n\n[End of Assistant 1]\n\n"
        "[Assistant 2]\nMine.\n\n[End of Assistant 2]\n\n[System]\nWe would like to request your feedback"
    )
    assert prompt.endswith("does not affect your judgment.\n\n")


def test_llava_summary_counts_unreadable_reviews_as_minus_one(bench_dir, tmp_path):
    reviews = iter(["8 6\nok", "I refuse.", "10 4\nok"])
    task = LlavaBenchTask(bench_dir, judge=lambda system, user: next(reviews))
    summary = run_task(ScriptedModel(lambda p: "a"), task, tmp_path, progress=False)
    # LLaVA: mean over all reviews, (-1, -1) for the unreadable one; relative = 100 * mean(model) / mean(reference).
    assert summary["overall"] == pytest.approx(100 * (6 - 1 + 4) / (8 - 1 + 10))
    assert summary["n_unreadable_reviews"] == 1
    reviews = iter(["8 6\nok", "I refuse.", "10 4\nok"])
    task = LlavaBenchTask(bench_dir, judge=lambda system, user: next(reviews), unreadable_reviews="skip")
    summary = run_task(ScriptedModel(lambda p: "a"), task, tmp_path / "skip", progress=False)
    assert summary["overall"] == pytest.approx(100 * (6 + 4) / (8 + 10))
    assert read_results(tmp_path / "skip" / "model" / "llava_bench" / "results.jsonl")[1]["judge_error"]


def test_llava_summary_has_no_score_when_no_review_was_readable(bench_dir, tmp_path):
    # LLaVA's formula gives 100 * mean(-1) / mean(-1) = 100 here; no review was read, so there is no score.
    task = LlavaBenchTask(bench_dir, judge=lambda system, user: "I cannot rate these.")
    summary = run_task(ScriptedModel(lambda p: "a"), task, tmp_path, progress=False)
    assert summary["overall"] is None and summary["n_unreadable_reviews"] == summary["n"] == 3
    assert all(summary[category] is None for category in ("conv", "detail", "complex") if category in summary)
