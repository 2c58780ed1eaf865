"""VQAv2 answer normalisation and accuracy, following the rules of the official VQA evaluation.

Normalisation (applied to the prediction and to every human answer):
1. newlines and tabs become spaces; the text is stripped and lower-cased;
2. punctuation: each mark of `_PUNCTUATION` is deleted when it touches a space or when the text holds a number with
   a thousands comma (`"1,000"`), else replaced by a space; a period not followed by a digit is deleted (`"2.5"`
   keeps its period);
3. number words `zero` to `ten` (and `none`) become digits, the articles `a`, `an`, `the` are dropped, and
   contractions written without their apostrophe get it back (`"dont"` becomes `"don't"`).

Accuracy: with `k` human answers equal to the prediction, `min(k / 3, 1)`. The official evaluation averages this over
the 10 subsets of 9 of the 10 human answers (`leave_one_out=True`, the default, which is what published VQAv2 numbers
use); `leave_one_out=False` gives the plain formula. One difference from the official script, on purpose: it
normalises only when the humans disagree, so there a reply `"Yes."` to ten `"yes"` answers scores 0; here both sides
are always normalised.
"""

import itertools
import re
from collections.abc import Sequence

_PUNCTUATION = ';/[]"{}()=+\\_-><@`,?!'
_THOUSANDS_COMMA = re.compile(r"\d,\d")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
_NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = {"a", "an", "the"}
# Contractions in their written form. Each form with any of its apostrophes left out maps back to it; forms whose
# apostrophe-less spelling is an ordinary word ("its", "well", "were", "ill", "hell", "shell", "wed") are left out.
_CONTRACTIONS = (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't he'd "
    "he'd've he's how'd how'll how's i'd've i'm i've isn't it'd it'd've it'll let's ma'am mightn't mightn't've "
    "might've mustn't must've needn't not've o'clock oughtn't shan't she'd've she's should've shouldn't shouldn't've "
    "somebody'd somebody'd've somebody'll somebody's someone'd someone'd've someone'll someone's something'd "
    "something'd've something'll that's there'd there'd've there're there's they'd they'd've they'll they're they've "
    "twas wasn't we'd've we've weren't what'll what're what's what've when's where'd where's where've who'd who'd've "
    "who'll who's who've why'll why're why's won't would've wouldn't wouldn't've y'all y'all'll y'all'd've you'd "
    "you'd've you'll you're you've"
).split()


def _contraction_table() -> dict[str, str]:
    table = {}
    for word in _CONTRACTIONS:
        parts = word.split("'")
        # Every way of writing the word with some (but not all) of its apostrophes dropped.
        for kept in itertools.product((True, False), repeat=len(parts) - 1):
            variant = parts[0] + "".join(
                ("'" if keep else "") + part for keep, part in zip(kept, parts[1:], strict=True)
            )
            if variant != word:
                table[variant] = word
    return table


_CONTRACTION_TABLE = _contraction_table()


def normalize_vqa_answer(text: str) -> str:
    """
    Normalises an answer as the official VQA evaluation does (see the module docstring for the rules).

    Args:
        text (`str`): A predicted or human answer.

    Returns:
        `str`: the normalised answer, e.g. `"Two dogs."` gives `"2 dogs"`.
    """
    text = text.replace("\n", " ").replace("\t", " ").strip().lower()
    has_thousands = _THOUSANDS_COMMA.search(text) is not None
    for mark in _PUNCTUATION:
        touches_space = f"{mark} " in text or f" {mark}" in text
        text = text.replace(mark, "" if touches_space or has_thousands else " ")
    text = _PERIOD_NOT_BEFORE_DIGIT.sub("", text)
    words = [_NUMBER_WORDS.get(word, word) for word in text.split()]
    return " ".join(_CONTRACTION_TABLE.get(word, word) for word in words if word not in _ARTICLES)


def vqa_accuracy(prediction: str, answers: Sequence[str], leave_one_out: bool = True) -> float:
    """
    VQA accuracy of one prediction against the human answers, in [0, 1].

    Args:
        prediction (`str`): The model's answer (normalised here).
        answers (`Sequence[str]`): The human answers, usually 10 (normalised here).
        leave_one_out (`bool`, *optional*, defaults to `True`):
            Average `min(k / 3, 1)` over the subsets that leave out one human answer, as the official evaluation
            does; `False` gives `min(k / 3, 1)` over all answers.

    Returns:
        `float`: the accuracy.
    """
    if not answers:
        raise ValueError("A VQA question needs at least one human answer to be scored; got none.")
    prediction = normalize_vqa_answer(prediction)
    matches = [normalize_vqa_answer(answer) == prediction for answer in answers]
    k = sum(matches)
    if not leave_one_out or len(answers) == 1:
        return min(k / 3, 1.0)
    return sum(min((k - match) / 3, 1.0) for match in matches) / len(matches)
