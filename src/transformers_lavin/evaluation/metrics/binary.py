"""Yes/no probes (POPE): reading a yes/no answer and the confusion-matrix metrics, with "yes" as the positive class."""

import re
from collections.abc import Iterable, Mapping
from typing import Any

ANSWER_RULES = ("official", "lenient")
_WORDS = re.compile(r"[a-z']+")


def parse_yes_no(text: str, rule: str = "official") -> str | None:
    """
    Reads "yes" or "no" from a generated answer.

    - `rule="official"` (the default) is POPE's own evaluation (`evaluate.py` in `RUCAIBox/POPE`, copied unchanged into
      LLaVA's `eval_pope.py`): keep the text before the first `.`, delete commas, split on single spaces; the answer
      is "no" when one of the pieces is exactly `No`, `no` or `not`, else "yes" (so `"NO"`, `"Not"`, `"no!"` and an
      empty reply are all "yes").
    - `rule="lenient"` (a project rule, named in the summary when used): the same first sentence, read
      case-insensitively as runs of letters, so `"NO"`, `"(no)"` and `"Not"` are "no"; a reply without ASCII letters
      gives `None` and counts as wrong.

    Args:
        text (`str`): The generated text.
        rule (`str`, *optional*, defaults to `"official"`): `"official"` or `"lenient"`.

    Returns:
        `str | None`: `"yes"`, `"no"`, or (lenient rule only) `None` for an answer without words.
    """
    if rule not in ANSWER_RULES:
        raise ValueError(f"Unknown POPE answer rule {rule!r}; choose from {', '.join(ANSWER_RULES)}.")
    first_sentence = text.split(".")[0].replace(",", "")
    if rule == "official":
        pieces = first_sentence.split(" ")
        return "no" if "No" in pieces or "not" in pieces or "no" in pieces else "yes"
    words = set(_WORDS.findall(first_sentence.lower()))
    if not words:
        return None
    return "no" if words & {"no", "not"} else "yes"


def binary_scores(records: Iterable[Mapping[str, Any]]) -> dict[str, float | None]:
    """
    Accuracy, precision, recall, F1 and yes-ratio of yes/no answers, in percent.

    An unreadable answer (`prediction` of `None`) counts as the wrong answer: "no" for a "yes" label and "yes" for a
    "no" label, in every metric including the yes-ratio.

    Args:
        records (`Iterable[Mapping[str, Any]]`):
            With `label` and `prediction`, each `"yes"` or `"no"` (`prediction` may be `None`).

    Returns:
        `dict[str, float | None]`: `accuracy`, `precision`, `recall`, `f1`, `yes_ratio` and the counts `tp`, `fp`,
        `tn`, `fn`, `n`; a ratio with a zero denominator is `None`.
    """
    tp = fp = tn = fn = 0
    for record in records:
        label = record["label"]
        prediction = record["prediction"] or ("no" if label == "yes" else "yes")
        if label == "yes":
            tp += prediction == "yes"
            fn += prediction == "no"
        else:
            fp += prediction == "yes"
            tn += prediction == "no"
    n = tp + fp + tn + fn

    def ratio(num: int, den: int) -> float | None:
        return 100.0 * num / den if den else None

    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else (0.0 if n else None)
    return {
        "accuracy": ratio(tp + tn, n),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": ratio(tp + fp, n),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "n": n,
    }
