"""VQAv2 answer processing and accuracy, ported from the official VQA evaluation (`vqaEval.py` in
`GT-Vision-Lab/VQA`, `PythonEvaluationTools/vqaEvaluation`).

The official rules, reproduced here:
1. newlines and tabs become spaces, then the text is stripped (always, both sides);
2. punctuation ([`process_punctuation`]): each mark of `PUNCTUATION` is deleted when the *original* text has it next
   to a space, or holds a thousands comma anywhere (`"1,000"`), else replaced by a space; then a period not followed
   by a digit is deleted (at most 32 of them: the official call passes `re.UNICODE` where `re.sub` takes its count);
3. digits and articles ([`process_digit_article`]): lower case, split on whitespace, number words of `MANUAL_MAP`
   become digits, the articles `a`, `an`, `the` are dropped, and words of the official `CONTRACTIONS` table are
   replaced (its keys with capitals, such as `"Im"`, can never match, as in the official code);
4. steps 2 and 3 run, on the prediction and on every human answer, **only when the humans disagree** (more than one
   distinct answer). When all humans gave the same answer, the raw stripped prediction must equal it exactly, so
   `"Yes"` scores 0 against ten `"yes"`;
5. accuracy: for each human answer, `min(#other humans matching / 3, 1)`; the mean over the humans. A question with
   a single human answer therefore scores 0.

`normalize="always"` is a project rule (named in the summary when used) that processes both sides every time.
"""

import re
from collections.abc import Sequence

NORMALIZE_RULES = ("official", "always")

# The official tables, as published (including their quirks), so that answers are read exactly as the official
# scorer reads them.
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't", "dont": "don't",
    "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd", "howll": "how'll",
    "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd",
    "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't",
    "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've",
    "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've",
    "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've",
    "whens": "when's", "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd",
    "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've",
    "wouldnt": "wouldn't", "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all",
    "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}  # fmt: skip
MANUAL_MAP = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = ("a", "an", "the")
PUNCTUATION = (
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # the official pattern; its first group is a no-op
_PERIOD_LIMIT = re.UNICODE  # == 32, the count the official call passes by mistake


def _strip(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str) -> str:
    """The official `processPunctuation`: the decisions look at the original `text`, not at the text being rewritten."""
    out = text
    has_thousands = _COMMA_STRIP.search(text) is not None
    for mark in PUNCTUATION:
        touches_space = f"{mark} " in text or f" {mark}" in text
        out = out.replace(mark, "" if touches_space or has_thousands else " ")
    return _PERIOD_STRIP.sub("", out, count=_PERIOD_LIMIT)


def process_digit_article(text: str) -> str:
    """The official `processDigitArticle`: lower case, number words to digits, articles dropped, contractions."""
    words = [MANUAL_MAP.get(word, word) for word in text.lower().split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def normalize_vqa_answer(text: str) -> str:
    """
    The full official processing of one answer (steps 1-3 of the module docstring).

    Args:
        text (`str`): A predicted or human answer.

    Returns:
        `str`: the processed answer, e.g. `"Two dogs."` gives `"2 dogs"`.
    """
    return process_digit_article(process_punctuation(_strip(text)))


def vqa_accuracy(prediction: str, answers: Sequence[str], normalize: str = "official") -> float:
    """
    VQA accuracy of one prediction against the human answers, in [0, 1], as the official evaluation computes it.

    Args:
        prediction (`str`): The model's answer.
        answers (`Sequence[str]`): The human answers, usually 10.
        normalize (`str`, *optional*, defaults to `"official"`): `"official"` processes both sides only when the
            humans disagree (step 4 of the module docstring); `"always"` (a project rule) processes them every time.

    Returns:
        `float`: the accuracy.
    """
    if normalize not in NORMALIZE_RULES:
        raise ValueError(f"Unknown VQA normalize rule {normalize!r}; choose from {', '.join(NORMALIZE_RULES)}.")
    if not answers:
        raise ValueError("A VQA question needs at least one human answer to be scored; got none.")
    humans = [_strip(answer) for answer in answers]
    prediction = _strip(prediction)
    if normalize == "always" or len(set(humans)) > 1:
        humans = [process_digit_article(process_punctuation(answer)) for answer in humans]
        prediction = process_digit_article(process_punctuation(prediction))
    matches = [human == prediction for human in humans]
    k = sum(matches)
    # Leave each human out in turn: the others that match are k minus this one's own match.
    return sum(min((k - match) / 3, 1.0) for match in matches) / len(matches)
