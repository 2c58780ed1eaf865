"""Smoke test of `benchmarks.bench_text_retention` at toy size: the files it writes, their structure, and that
before and after are scored on the same test questions, checked against the data files the run wrote.

No accuracy is asserted beyond its range: two toy training steps learn nothing.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from pathlib import Path

import pytest
import torch

from benchmarks import bench_text_retention as bench
from transformers_lavin.data import load_scienceqa
from transformers_lavin.processing_lavin import LavinProcessor
from transformers_lavin.scripts.demo import PROMPT_FORMAT


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[dict, Path, Path]:
    out, work = tmp_path_factory.mktemp("out"), tmp_path_factory.mktemp("work")
    bench.main(["--size", "toy", "--out", str(out), "--workdir", str(work)])
    return json.loads((out / "text-retention-toy.json").read_text()), out, work


def test_writes_json_markdown_and_png(finished_run):
    result, out, _ = finished_run
    assert (out / "text-retention-toy.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    markdown = (out / "text-retention-toy.md").read_text()
    assert "## Test accuracy before and after" in markdown
    for label in bench.LABELS.values():
        assert label in markdown
    assert result["settings"]["threads"] == 1 and result["machine"]["torch_threads"] == 1
    assert [entry["seed"] for entry in result["seeds"]] == list(bench.SIZES["toy"].seeds)


def _accuracy(correct: str, mask: list[bool], with_image: bool) -> float:
    picked = [c == "1" for c, flag in zip(correct, mask, strict=True) if flag == with_image]
    return sum(picked) / len(picked)


def test_before_and_after_score_the_same_test_questions(finished_run):
    result, _, work = finished_run
    size = bench.SIZES["toy"]
    for entry in result["seeds"]:
        data_dir = work / f"seed-{entry['seed']}" / "data"
        # The test split as the data files list it, and which of its questions have a picture.
        problems = json.loads((data_dir / "problems.json").read_text())
        test_ids = json.loads((data_dir / "pid_splits.json").read_text())["test"]
        has_image = [problems[qid]["image"] is not None for qid in test_ids]
        digest = hashlib.sha256(json.dumps(test_ids).encode()).hexdigest()[:16]
        assert entry["test_ids"] == test_ids and 0 < sum(has_image) < len(test_ids)

        scores = [entry["before"]["llava"]["test"], entry["before"]["lavin"]["test"]]
        for method in bench.METHODS:
            runs = entry["methods"][method]["runs"]
            assert [run["learning_rate"] for run in runs] == list(size.learning_rates[method])
            scores += [run["test"] for run in runs]
            # The chosen run has the best validation accuracy of the rates tried.
            chosen = runs[entry["methods"][method]["chosen"]]
            assert chosen["val"]["accuracy"] == max(run["val"]["accuracy"] for run in runs)
        for score in scores:
            assert score["questions"] == digest and len(score["correct"]) == len(test_ids)
            assert (score["num_image"], score["num_text"]) == (sum(has_image), len(has_image) - sum(has_image))
            for kind, with_image in (("image", True), ("text", False)):
                assert 0 <= score[f"{kind}_accuracy"] <= 1
                assert score[f"{kind}_accuracy"] == pytest.approx(_accuracy(score["correct"], has_image, with_image))


def test_summary_is_the_per_seed_values(finished_run):
    result, _, _ = finished_run
    for method in bench.METHODS:
        summary = result["summary"][method]
        base = "lavin" if method == "lavin_mma" else "llava"
        before = [entry["before"][base]["test"]["text_accuracy"] for entry in result["seeds"]]
        after = [
            entry["methods"][method]["runs"][entry["methods"][method]["chosen"]]["test"]["text_accuracy"]
            for entry in result["seeds"]
        ]
        assert summary["text_before"]["values"] == before and summary["text_after"]["values"] == after
        assert summary["text_after"]["mean"] == pytest.approx(statistics.mean(after))
        assert summary["text_after"]["std"] == pytest.approx(statistics.stdev(after))
        assert summary["text_change"]["values"] == pytest.approx([a - b for a, b in zip(after, before, strict=True)])


def test_text_rows_are_added_to_the_same_image_rows(finished_run):
    """`lora_text` trains on each step's image rows plus text-only rows; the others on the image rows alone."""
    _, _, work = finished_run
    size = bench.SIZES["toy"]
    data_dir = work / "seed-0" / "data"
    processor = LavinProcessor.from_pretrained(work / "seed-0" / "llava-base")
    image_token = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    train = load_scienceqa(data_dir, "train", prompt_format=PROMPT_FORMAT)
    image_rows, text_rows = bench.split_by_modality(train)
    batches = bench.retention_batches(image_rows, text_rows, processor, size, seed=0)
    assert len(batches["image_only"]) == len(batches["with_text"]) == size.steps
    for alone, mixed in zip(batches["image_only"], batches["with_text"], strict=True):
        shows_image = (mixed["input_ids"] == image_token).any(dim=1).tolist()
        assert shows_image == [True] * size.batch_size + [False] * size.text_rows
        assert (alone["input_ids"] == image_token).any(dim=1).all()
        # The image rows are the same ones (same prompt and answer tokens, up to padding).
        length = alone["input_ids"].shape[1]
        for key in ("input_ids", "labels", "attention_mask"):
            assert torch.equal(mixed[key][: size.batch_size, :length], alone[key])
        assert torch.equal(mixed["pixel_values"], alone["pixel_values"])


def test_mma_runs_report_their_routing_and_lora_runs_none(finished_run):
    result, _, _ = finished_run
    for entry in result["seeds"]:
        for method in bench.METHODS:
            for run in entry["methods"][method]["runs"]:
                if method in bench.WITH_LORA:
                    assert "routing_gap" not in run
                    continue
                text, image = torch.tensor(run["routing_text"]), torch.tensor(run["routing_image"])
                assert text.shape == image.shape and text.shape[1] == 2
                assert torch.allclose(text.sum(-1), torch.ones(len(text))) and (text >= 0).all()
                assert run["routing_gap"] == pytest.approx((text[:, 0] - image[:, 0]).abs().mean().item())


def test_render_rewrites_the_report_from_the_saved_json(finished_run, tmp_path):
    _, out, _ = finished_run
    saved = tmp_path / "copy.json"
    saved.write_text((out / "text-retention-toy.json").read_text())
    bench.main(["--render", str(saved)])
    tables = lambda text: text.split("## Machine and settings")[0]  # noqa: E731  settings print tuples as lists
    assert tables(saved.with_suffix(".md").read_text()) == tables((out / "text-retention-toy.md").read_text())
    assert saved.with_suffix(".png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
