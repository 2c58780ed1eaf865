"""ScienceQA answer extraction and the accuracy breakdown of LaVIN's table.

The reference scorer (`eval.py` in `luogen1996/LaVIN`) reads the first match of the regular expression
`The answer is ([A-Z]).` in the generation; that is the default rule here (`rule="official"`). `rule="lenient"` adds
documented fallbacks for models that were not trained on LaVIN's answer format (see [`extract_answer`]); it is a
project rule and the task names it in its summary. Where the reference then guesses a random option for an
unreadable answer, this module counts it as wrong and reports it, so that scores are reproducible.
"""

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

OPTION_LETTERS = "ABCDE"
ANSWER_RULES = ("official", "lenient")

# The reference pattern, kept as is: the final "." matches any character, so "The answer is B," is read too.
REFERENCE_PATTERN = re.compile(r"The answer is ([A-Z]).")
# Fallback: the same sentence, looser: any case, optional parentheses, at the very end ("the answer is (B)").
_LOOSE_PATTERN = re.compile(r"(?i:the answer is)\s*\(?([A-Z])\b")
# Fallback: a reply that starts with an option letter: "B", "(B)", "B.", "B) cat", "B, since", "Answer: B". A letter
# followed by a space ("A cat ...") is an article, not an option, so it does not count.
_LEADING_LETTER = re.compile(r"^\s*(?:(?i:answer)\s*:\s*)?(?:\(([A-Z])\)|([A-Z])(?:[.):,]|\s*$))")
# Fallback: the whole reply is one lowercase option letter ("b", "(b)", "b."): nothing else for it to be.
_LONE_LOWERCASE_LETTER = re.compile(r"^\s*\(?([a-e])\)?[.):,]?\s*$")

# Columns of the paper's table, in order, and how each is selected from a problem's categories.
SCIENCEQA_COLUMNS = ("NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12", "Avg")
_SUBJECTS = {"NAT": "natural science", "SOC": "social science", "LAN": "language science"}
_LOW_GRADES = {f"grade{i}" for i in range(1, 7)}
_HIGH_GRADES = {f"grade{i}" for i in range(7, 13)}


def extract_answer(text: str, choices: Sequence[str], rule: str = "official") -> int | None:
    """
    Reads the chosen option from a generated answer.

    `rule="official"` applies only the reference rule: the first match of `The answer is ([A-Z]).` (the final `.`
    matches any character, so `The answer is B,` is read as B; a letter must name one of the choices).
    `rule="lenient"` tries, after the reference rule:
    1. the same sentence in any case, with the letter optionally in parentheses or at the very end
       (`the answer is (B)`, `The answer is B`);
    2. the reply starts with an option letter, alone or as `(B)`, `B.`, `B)`, `B:`, `B,` or `Answer: B`;
    3. the whole reply is one lowercase letter (`b`, `(b)`, `b.`);
    4. the whole reply (without a final period, case-insensitive) is the text of exactly one choice.

    Args:
        text (`str`):
            The generated text.
        choices (`Sequence[str]`):
            The answer choices of the problem, in order.
        rule (`str`, *optional*, defaults to `"official"`):
            `"official"` or `"lenient"`.

    Returns:
        `int | None`: the index of the chosen option, or `None` when no rule applies (the answer is then wrong).
    """
    if rule not in ANSWER_RULES:
        raise ValueError(f"Unknown ScienceQA answer rule {rule!r}; choose from {', '.join(ANSWER_RULES)}.")
    n_options = min(len(choices), len(OPTION_LETTERS))
    match = REFERENCE_PATTERN.search(text)
    if match is None and rule == "lenient":
        match = _LOOSE_PATTERN.search(text) or _LEADING_LETTER.match(text) or _LONE_LOWERCASE_LETTER.match(text)
    if match is not None:
        index = OPTION_LETTERS.find(next(group for group in match.groups() if group).upper())
        # A letter past the last choice names nothing: the reference guesses at random here, we count it wrong.
        return index if 0 <= index < n_options else None
    if rule == "official":
        return None
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
