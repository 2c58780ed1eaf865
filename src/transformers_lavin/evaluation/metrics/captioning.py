"""Caption metrics of the COCO caption evaluation, through the maintained `pycocoevalcap` package.

BLEU-1..4, METEOR, ROUGE-L and CIDEr (CIDEr-D, as COCO reports it) on captions tokenised with the Stanford PTB
tokenizer, exactly as the COCO evaluation server does. The PTB tokenizer and METEOR are Java programs shipped inside
`pycocoevalcap`, so they need a `java` executable; SPICE is never run because it downloads Stanford models on first
use. Nothing here reaches the network. What ran and what did not is part of the result:

- `pycocoevalcap` missing: no metric runs, and the reason says how to install it;
- `java` missing: METEOR is skipped and captions are tokenised by [`simple_tokenize`] instead, a regular-expression
  imitation of the PTB tokenizer; the result says so (`tokenizer: "simple"`), because BLEU and CIDEr can then differ
  from COCO's (measured in docs/evaluation.md).

Line breaks inside a caption (`\r`, `\n`, and the other characters Java and Python treat as line ends) become spaces
before tokenising. The PTB wrapper writes one caption per line, so a stray line break would otherwise shift every
later caption onto the wrong image; pycocoevalcap itself replaces `\n` only.
"""

import contextlib
import importlib.util
import io
import re
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

CAPTION_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
_INSTALL_HINT = "install it with `pip install 'transformers-lavin[eval]'` (or `pip install pycocoevalcap`)"
_LINE_BREAKS = re.compile(r"[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]")
# The PTB tokenizer splits clitics off ("don't" -> "do n't", "cat's" -> "cat 's"), keeps numbers ("3.5", "1,000")
# and hyphenated words whole, keeps symbols such as "%" and "&" as tokens, and (in pycocoevalcap) drops punctuation.
# Brackets become "-LRB-" and the like, which `-lowerCase` writes in lower case, so pycocoevalcap's punctuation list
# (upper case) never removes them: they stay tokens, and so they do here.
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_CLITIC_NT = re.compile(r"(?<=\w)n['’]t\b")
_CLITIC = re.compile(r"(?<=\w)['’](s|m|re|ve|ll|d)\b")
_SIMPLE_TOKEN = re.compile(
    r"n't|'(?:s|m|re|ve|ll|d)\b|\d+(?:[.,]\d+)*|[^\W_]+(?:[-'’][^\W_]+)*|[%$&#@/+=<>*~^|]|[()\[\]{}]"
)


def flatten_lines(text: str) -> str:
    """A caption on one line: each line break becomes a space."""
    return _LINE_BREAKS.sub(" ", text)


def simple_tokenize(text: str) -> str:
    """
    Fallback tokenisation used when Java is not available: an imitation of the PTB tokenizer as pycocoevalcap runs
    it (lower case, clitics split off, numbers and hyphenated words kept whole, punctuation dropped). Letters of any
    script are kept.

    Args:
        text (`str`): A caption.

    Returns:
        `str`: the tokens joined by single spaces.
    """
    text = flatten_lines(text).lower()
    text = _CLITIC.sub(r" '\1", _CLITIC_NT.sub(" n't", text))
    return " ".join(_BRACKETS.get(token, token) for token in _SIMPLE_TOKEN.findall(text))


def _ptb_tokenize(captions: Mapping[Any, Sequence[str]]) -> dict[Any, list[str]]:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    # The tokenizer prints timing to stderr from Java only; its input is {key: [{"caption": text}, ...]}.
    wrapped = {key: [{"caption": flatten_lines(text)} for text in texts] for key, texts in captions.items()}
    tokens = PTBTokenizer().tokenize(wrapped)
    counts = {key: len(texts) for key, texts in captions.items()}
    if {key: len(tokens.get(key, [])) for key in captions} != counts:
        raise RuntimeError("The PTB tokenizer returned a different number of captions than it was given.")
    return tokens


def caption_scores(
    predictions: Mapping[Any, str], references: Mapping[Any, Sequence[str]]
) -> tuple[dict[str, float], dict[str, Any]]:
    """
    Corpus-level COCO caption metrics.

    Args:
        predictions (`Mapping[Any, str]`): One generated caption per image key.
        references (`Mapping[Any, Sequence[str]]`): The human captions of each image key (same keys).

    Returns:
        `tuple[dict[str, float], dict[str, Any]]`: the scores that ran (keys from `CAPTION_METRICS`, values in
        [0, 1], CIDEr in [0, 10]) and a report: `metrics_ran`, `metrics_skipped` (`{metric: reason}`) and
        `tokenizer` (`"ptb"` or `"simple"`).
    """
    if set(predictions) != set(references):
        missing = set(references) ^ set(predictions)
        raise ValueError(f"Predictions and references must have the same image keys; these differ: {sorted(missing)}")
    empty = [key for key, texts in references.items() if not texts]
    if empty:
        raise ValueError(f"Every image needs at least one reference caption; none for {empty[:5]}.")
    skipped = {"SPICE": "not run: it downloads Stanford CoreNLP models on first use"}
    if importlib.util.find_spec("pycocoevalcap") is None:
        skipped.update(dict.fromkeys(CAPTION_METRICS, f"pycocoevalcap is not installed; {_INSTALL_HINT}"))
        return {}, {"metrics_ran": [], "metrics_skipped": skipped, "tokenizer": None}

    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    keys = sorted(references, key=str)
    has_java = shutil.which("java") is not None
    if has_java:
        # One Java start for both sides: references under ("ref", key), predictions under ("hyp", key).
        tokens = _ptb_tokenize(
            {**{("ref", k): references[k] for k in keys}, **{("hyp", k): [predictions[k]] for k in keys}}
        )
        gts = {key: tokens[("ref", key)] for key in keys}
        res = {key: tokens[("hyp", key)] for key in keys}
    else:
        gts = {key: [simple_tokenize(text) for text in references[key]] for key in keys}
        res = {key: [simple_tokenize(predictions[key])] for key in keys}
        skipped["METEOR"] = "not run: it needs a `java` executable on PATH (install a JRE)"

    scores: dict[str, float] = {}
    # pycocoevalcap's BLEU prints its n-gram counts; keep our output clean.
    with contextlib.redirect_stdout(io.StringIO()):
        bleu, _ = Bleu(4).compute_score(gts, res)
    scores.update({f"BLEU-{n}": float(value) for n, value in enumerate(bleu, start=1)})
    if has_java:
        from pycocoevalcap.meteor.meteor import Meteor

        meteor = Meteor()
        try:
            scores["METEOR"] = float(meteor.compute_score(gts, res)[0])
        finally:
            # Stop the Java process now rather than at garbage collection.
            with meteor.lock:
                meteor.meteor_p.stdin.close()
                meteor.meteor_p.kill()
                meteor.meteor_p.wait()
    scores["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    ordered = {name: scores[name] for name in CAPTION_METRICS if name in scores}
    report = {"metrics_ran": list(ordered), "metrics_skipped": skipped, "tokenizer": "ptb" if has_java else "simple"}
    return ordered, report
