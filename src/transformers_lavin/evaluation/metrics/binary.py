"""Yes/no probes (POPE): reading a yes/no answer and the confusion-matrix metrics, with "yes" as the positive class."""

import re
from collections.abc import Iterable, Mapping
from typing import Any

_WORDS = re.compile(r"[a-z']+")


def parse_yes_no(text: str) -> str | None:
    """
    Reads "yes" or "no" from a generated answer, as POPE's own evaluation does.

    Only the first sentence counts (text up to the first period) and commas are dropped; the answer is "no" when that
    sentence contains the word `no` or `not`, else "yes". Unlike POPE, an empty answer is not read as "yes": it gives
    `None`, and the sample is counted as wrong.

    Args:
        text (`str`): The generated text.

    Returns:
        `str | None`: `"yes"`, `"no"`, or `None` for an empty answer.
    """
    first_sentence = text.split(".")[0].replace(",", "").lower()
    words = set(_WORDS.findall(first_sentence))
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
