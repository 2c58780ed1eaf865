"""ScienceQA answer extraction and the accuracy breakdown of LaVIN's table.

The reference scorer (`eval.py` in `luogen1996/LaVIN`) reads the first match of the regular expression
`The answer is ([A-Z]).` in the generation. This module does the same first; when that fails it tries a documented
fallback for models that were not trained on LaVIN's answer format (see [`extract_answer`]). Where the reference
then guesses a random option for an unreadable answer, this module counts it as wrong and reports it, so that scores
are reproducible.
"""

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

OPTION_LETTERS = "ABCDE"

# The reference pattern, kept as is: the final "." matches any character, so "The answer is B," is read too.
REFERENCE_PATTERN = re.compile(r"The answer is ([A-Z]).")
# Fallback: the same sentence, looser: any case, optional parentheses, at the very end ("the answer is (B)").
_LOOSE_PATTERN = re.compile(r"(?i:the answer is)\s*\(?([A-Z])\b")
# Fallback: a reply that starts with an option letter: "B", "(B)", "B.", "B) cat", "Answer: B". A letter followed by
# a space ("A cat ...") is an article, not an option, so it does not count.
_LEADING_LETTER = re.compile(r"^\s*(?:(?i:answer)\s*:\s*)?(?:\(([A-Z])\)|([A-Z])(?:[.):,]|\s*$))")

# Columns of the paper's table, in order, and how each is selected from a problem's categories.
SCIENCEQA_COLUMNS = ("NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12", "Avg")
_SUBJECTS = {"NAT": "natural science", "SOC": "social science", "LAN": "language science"}
_LOW_GRADES = {f"grade{i}" for i in range(1, 7)}
_HIGH_GRADES = {f"grade{i}" for i in range(7, 13)}


def extract_answer(text: str, choices: Sequence[str]) -> int | None:
    """
    Reads the chosen option from a generated answer.

    The rules, tried in order:
    1. the reference rule: the first match of `The answer is ([A-Z]).` (the letter must name one of the choices);
    2. fallback: the same sentence in any case, with the letter optionally in parentheses or at the very end
       (`the answer is (B)`, `The answer is B`);
    3. fallback: the reply starts with an option letter, alone or as `(B)`, `B.`, `B)`, `B:` or `Answer: B`;
    4. fallback: the whole reply (without a final period, case-insensitive) is the text of exactly one choice.

    Args:
        text (`str`):
            The generated text.
        choices (`Sequence[str]`):
            The answer choices of the problem, in order.

    Returns:
        `int | None`: the index of the chosen option, or `None` when no rule applies (the answer is then wrong).
    """
    n_options = min(len(choices), len(OPTION_LETTERS))
    match = REFERENCE_PATTERN.search(text) or _LOOSE_PATTERN.search(text) or _LEADING_LETTER.match(text)
    if match is not None:
        index = OPTION_LETTERS.find(next(group for group in match.groups() if group))
        # A letter past the last choice names nothing: the reference guesses at random here, we count it wrong.
        return index if 0 <= index < n_options else None
    reply = text.strip().rstrip(".").strip().lower()
    hits = [i for i, choice in enumerate(choices[:n_options]) if choice.strip().lower() == reply]
    return hits[0] if len(hits) == 1 else None


def problem_columns(subject: str, grade: str, has_text: bool, has_image: bool) -> list[str]:
    """
    The table columns (besides `Avg`) that a problem counts in.

    Args:
        subject (`str`): `"natural science"`, `"social science"` or `"language science"`.
        grade (`str`): `"grade1"` to `"grade12"`.
        has_text (`bool`): whether the problem has a text context (a non-empty hint); column `TXT`.
        has_image (`bool`): whether the problem has an image; column `IMG`. A problem with neither counts in `NO`.
    """
    columns = [name for name, value in _SUBJECTS.items() if subject == value]
    if has_text:
        columns.append("TXT")
    if has_image:
        columns.append("IMG")
    if not has_text and not has_image:
        columns.append("NO")
    if grade in _LOW_GRADES:
        columns.append("G1-6")
    elif grade in _HIGH_GRADES:
        columns.append("G7-12")
    return columns


def scienceqa_scores(records: Iterable[Mapping[str, Any]]) -> dict[str, float | None]:
    """
    Accuracy (in percent) per column of LaVIN's ScienceQA table.

    Args:
        records (`Iterable[Mapping[str, Any]]`):
            One per problem, with `correct` (`bool`) and `columns` (the output of [`problem_columns`]).

    Returns:
        `dict[str, float | None]`: `NAT`, `SOC`, `LAN`, `TXT`, `IMG`, `NO`, `G1-6`, `G7-12` and `Avg`; `None` for a
        column with no problem.
    """
    totals = dict.fromkeys(SCIENCEQA_COLUMNS, 0)
    hits = dict.fromkeys(SCIENCEQA_COLUMNS, 0)
    for record in records:
        for column in [*record["columns"], "Avg"]:
            totals[column] += 1
            hits[column] += bool(record["correct"])
    return {c: (100.0 * hits[c] / totals[c] if totals[c] else None) for c in SCIENCEQA_COLUMNS}
