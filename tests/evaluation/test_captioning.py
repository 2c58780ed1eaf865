"""Caption metrics: pycocoevalcap's numbers against values worked out by hand from each metric's definition."""

import math
from collections import Counter

import pytest
from conftest import CAPTIONS

from transformers_lavin.evaluation import CaptioningTask, run_task
from transformers_lavin.evaluation.metrics import captioning
from transformers_lavin.evaluation.metrics.captioning import caption_scores, simple_tokenize

# Hand counts for CAPTIONS (see conftest): hypotheses have 6 + 4 = 10 words, the closest reference lengths are
# 6 + 6 = 12. Clipped n-gram matches over the corpus: 1-grams 7/10, 2-grams 3/8, 3-grams 1/6, 4-grams 0/4.
BREVITY = math.exp(1 - 12 / 10)
HAND_BLEU = {
    "BLEU-1": BREVITY * 7 / 10,
    "BLEU-2": BREVITY * (7 / 10 * 3 / 8) ** (1 / 2),
    "BLEU-3": BREVITY * (7 / 10 * 3 / 8 * 1 / 6) ** (1 / 3),
    "BLEU-4": 0.0,  # no 4-gram matches (pycocoevalcap's smoothing leaves about 5e-5)
}


def rouge_l(hypothesis: str, references: list[str], beta: float = 1.2) -> float:
    """ROUGE-L as COCO defines it: best LCS precision and recall over the references, then the F-measure."""

    def lcs(a: list[str], b: list[str]) -> int:
        table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i, x in enumerate(a):
            for j, y in enumerate(b):
                table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
        return table[-1][-1]

    hyp = hypothesis.split()
    precision = max(lcs(hyp, ref.split()) / len(hyp) for ref in references)
    recall = max(lcs(hyp, ref.split()) / len(ref.split()) for ref in references)
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision) if precision and recall else 0.0


def cider_d(hypotheses: dict, references: dict, sigma: float = 6.0) -> float:
    """CIDEr-D from its definition: tf-idf n-gram vectors (idf from the references), clipped cosine similarity,
    Gaussian length penalty, mean over n = 1..4 and over references, times 10; then the mean over images."""

    def grams(words: list[str], n: int) -> Counter:
        return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))

    log_images = math.log(len(references))
    document_frequency = Counter(
        gram
        for refs in references.values()
        for gram in {g for r in refs for n in range(1, 5) for g in grams(r.split(), n)}
    )

    def vectors(words: list[str]) -> list[dict]:
        return [
            {g: c * (log_images - math.log(max(1.0, document_frequency[g]))) for g, c in grams(words, n).items()}
            for n in range(1, 5)
        ]

    def norm(vector: dict) -> float:
        return math.sqrt(sum(v * v for v in vector.values()))

    image_scores = []
    for key, hypothesis in hypotheses.items():
        hyp_words = hypothesis.split()
        hyp_vectors = vectors(hyp_words)
        per_reference = []
        for reference in references[key]:
            ref_words = reference.split()
            ref_vectors = vectors(ref_words)
            penalty = math.exp(-((len(hyp_words) - len(ref_words)) ** 2) / (2 * sigma**2))
            sims = []
            for h, r in zip(hyp_vectors, ref_vectors, strict=True):
                dot = sum(min(value, r.get(g, 0.0)) * r.get(g, 0.0) for g, value in h.items())
                sims.append(dot / (norm(h) * norm(r)) * penalty if norm(h) and norm(r) else 0.0)
            per_reference.append(10 * sum(sims) / 4)
        image_scores.append(sum(per_reference) / len(per_reference))
    return sum(image_scores) / len(image_scores)


HYPOTHESES = {key: hyp for key, (_, hyp) in CAPTIONS.items()}
REFERENCES = {key: refs for key, (refs, _) in CAPTIONS.items()}


def check_against_hand_values(scores: dict, scale: float = 1.0) -> None:
    for name, value in HAND_BLEU.items():
        assert scores[name] == pytest.approx(scale * value, abs=1e-3 * scale), name
    expected_rouge = sum(rouge_l(HYPOTHESES[k], REFERENCES[k]) for k in CAPTIONS) / len(CAPTIONS)
    assert scores["ROUGE-L"] == pytest.approx(scale * expected_rouge, rel=1e-6)
    assert scores["CIDEr"] == pytest.approx(scale * cider_d(HYPOTHESES, REFERENCES), rel=1e-6)


def test_hand_rouge_values():
    # The hand ROUGE-L of the first image: LCS 4 with both references ("cat on the mat"), so P = R = 4/6.
    assert rouge_l(HYPOTHESES[1], REFERENCES[1]) == pytest.approx(2 / 3)


def test_captioning_end_to_end_with_ptb_tokenizer_and_meteor(caption_file, tmp_path):
    """The captioning task through the runner: PTB tokenisation (Java), all five metrics, hand values."""
    hypotheses = {str(k): v.capitalize() + "." for k, v in HYPOTHESES.items()}  # the PTB tokenizer undoes this

    task = CaptioningTask(caption_file)
    replies = iter([hypotheses[sample.id] for sample in task.load()])  # the runner keeps the file's order

    def model(images, prompts):
        assert prompts == ["A short image caption:"] * len(prompts)
        return [next(replies) for _ in prompts]

    summary = run_task(model, task, tmp_path / "out", batch_size=8, progress=False)
    assert summary["tokenizer"] == "ptb"
    assert summary["metrics_ran"] == ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"]
    assert set(summary["metrics_skipped"]) == {"SPICE"}
    check_against_hand_values(summary, scale=100.0)
    assert 0 < summary["METEOR"] < 100


def test_without_java_meteor_is_skipped_and_reported(monkeypatch):
    monkeypatch.setattr(captioning.shutil, "which", lambda name: None)
    scores, report = caption_scores(HYPOTHESES, REFERENCES)
    assert report["tokenizer"] == "simple"
    assert "METEOR" not in scores and "java" in report["metrics_skipped"]["METEOR"]
    assert report["metrics_ran"] == ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr"]
    check_against_hand_values(scores)


def test_without_pycocoevalcap_nothing_runs_and_the_reason_says_how_to_install(monkeypatch):
    monkeypatch.setattr(captioning.importlib.util, "find_spec", lambda name: None)
    scores, report = caption_scores(HYPOTHESES, REFERENCES)
    assert scores == {} and report["metrics_ran"] == []
    assert "pip install" in report["metrics_skipped"]["CIDEr"]


def test_meteor_of_a_caption_equal_to_its_reference_is_one():
    same, _ = caption_scores({1: "A cat sits on the mat."}, {1: ["a cat sits on the mat"]})
    assert same["METEOR"] == pytest.approx(1.0)
    assert same["BLEU-4"] == pytest.approx(1.0) and same["ROUGE-L"] == pytest.approx(1.0)


def test_simple_tokenize():
    assert simple_tokenize("A Cat's toy, on the MAT!") == "a cat 's toy on the mat"


def test_bad_caption_input():
    with pytest.raises(ValueError, match="same image keys"):
        caption_scores({1: "a"}, {2: ["b"]})
    with pytest.raises(ValueError, match="at least one reference"):
        caption_scores({1: "a"}, {1: []})
