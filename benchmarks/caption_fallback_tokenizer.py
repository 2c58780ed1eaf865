"""How far the no-Java caption tokenizer is from the PTB tokenizer: BLEU-4 and CIDEr on a synthetic caption set.

Needs `java` and pycocoevalcap. Prints the scores with PTB tokens and with `simple_tokenize`, and how many of the
captions tokenise to identical strings. Run: `python benchmarks/caption_fallback_tokenizer.py`.
"""

import contextlib
import io
import random

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from transformers_lavin.evaluation.metrics.captioning import _ptb_tokenize, simple_tokenize

SUBJECTS = ["A man", "Two women", "The dog", "A child's kite", "Three cats", "A black-and-white bus", "Some people"]
VERBS = ["is sitting on", "doesn't like", "stands near", "runs across", "is riding", "looks at", "they're near"]
OBJECTS = [
    "a bench.",
    "the red (wooden) table",
    "a 3.5 m wall!",
    "the park, at night",
    "1,000 birds;",
    "a café's sign",
]


def caption(rng: random.Random) -> str:
    return f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"


def scores(references: dict, hypotheses: dict) -> tuple[float, float]:
    with contextlib.redirect_stdout(io.StringIO()):
        bleu = Bleu(4).compute_score(references, hypotheses)[0][3]
    return float(bleu), float(Cider().compute_score(references, hypotheses)[0])


def main() -> None:
    rng = random.Random(0)
    references = {i: [caption(rng) for _ in range(5)] for i in range(200)}
    hypotheses = {i: caption(rng) for i in references}
    tokens = _ptb_tokenize(
        {**{("r", k): v for k, v in references.items()}, **{("h", k): [hypotheses[k]] for k in references}}
    )
    ptb = scores({k: tokens[("r", k)] for k in references}, {k: tokens[("h", k)] for k in references})
    simple = scores(
        {k: [simple_tokenize(c) for c in v] for k, v in references.items()},
        {k: [simple_tokenize(v)] for k, v in hypotheses.items()},
    )
    same = sum(tokens[("h", k)][0] == simple_tokenize(hypotheses[k]) for k in references) + sum(
        t == simple_tokenize(c) for k in references for t, c in zip(tokens[("r", k)], references[k], strict=True)
    )
    print(f"PTB:    BLEU-4 {ptb[0]:.4f}  CIDEr {ptb[1]:.4f}")
    print(f"simple: BLEU-4 {simple[0]:.4f}  CIDEr {simple[1]:.4f}")
    print(f"captions tokenised identically: {same} of {len(references) * 6}")


if __name__ == "__main__":
    main()
