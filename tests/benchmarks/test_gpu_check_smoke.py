"""The GPU check's sections at toy size on CPU: what each writes, the text-only batches, the time budget.

Speed is not asserted (these are not timed tests); on CPU the memory meter reads zeros, so only the code paths and
the structure of the results are checked here.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from benchmarks import gpu_check, gpu_report
from benchmarks.inputs import build_inputs
from benchmarks.models import BOS_TOKEN_ID
from benchmarks.shapes import get_shape

TOY = get_shape("toy")


def _args(tmp_path, **overrides) -> argparse.Namespace:
    values = {
        "shape": "toy",
        "device": "cpu",
        "dtype": "float32",
        "batch_size": 4,
        "memory_batch_size": 2,
        "steps": 6,
        "repeats": 1,
        "warmup": 1,
        "decode_pairs": 4,
        "scratch": str(tmp_path / "scratch"),
    }
    return argparse.Namespace(**(values | overrides))


def test_text_only_batch_keeps_the_text_and_its_labels_and_drops_the_image():
    batch = build_inputs("lavin", TOY, batch_size=2, text_len=10, answer_len=3)
    text_only = gpu_check._text_only(batch)
    assert "pixel_values" not in text_only
    assert (text_only["input_ids"][:, 0] == BOS_TOKEN_ID).all()
    torch.testing.assert_close(text_only["input_ids"][:, 1:], batch["input_ids"][:, 1 + 6 :])
    torch.testing.assert_close(text_only["labels"][:, -3:], batch["input_ids"][:, -3:])
    assert (text_only["labels"][:, :-3] == -100).all()


def test_throughput_rows_report_rate_sequence_length_and_card_fits(tmp_path, monkeypatch):
    # Two of the six configurations cover every code path: LoRA on LLaVA, and MMA on a 4-bit LLM with checkpointing.
    configs = (("llava_lora", False, False), ("mma", True, True))
    monkeypatch.setattr(gpu_check, "THROUGHPUT_CONFIGS", configs)
    gpu_check.throughput(_args(tmp_path), tmp_path, deadline=time.monotonic() + 600)
    report = json.loads((tmp_path / "throughput.json").read_text())
    assert [(row["kind"], row["gradient_checkpointing"], row["load_in_4bit"]) for row in report["rows"]] == list(
        configs
    )
    for row in report["rows"]:
        assert "error" not in row, row
        llava = row["kind"] == "llava_lora"
        assert row["sequence_length"] == 1 + (TOY.num_patches if llava else 6) + TOY.text_len
        assert row["samples_per_second"] > 0
        assert abs(row["samples_per_second"] * row["step_seconds"] - row["batch_size"]) < 1e-6
        assert set(row["fits"]) == set(gpu_check.CARDS_GIB)
        assert all(fit["verified_batch"] >= 1 for fit in row["fits"].values())


def test_a_spent_budget_skips_every_throughput_configuration(tmp_path):
    gpu_check.throughput(_args(tmp_path), tmp_path, deadline=time.monotonic() - 1)
    rows = json.loads((tmp_path / "throughput.json").read_text())["rows"]
    assert len(rows) == len(gpu_check.THROUGHPUT_CONFIGS)
    assert all(row.get("skipped") == "time budget" for row in rows)


def test_memory_over_steps_mixes_lengths_and_modalities(tmp_path):
    gpu_check.memory_over_steps(_args(tmp_path, steps=24), tmp_path, deadline=time.monotonic() + 600)
    report = json.loads((tmp_path / "memory_over_steps.json").read_text())
    steps = report["steps"]
    assert [step["step"] for step in steps] == list(range(1, 25))
    assert {step["image"] for step in steps} == {True, False}
    assert len({step["tokens"] for step in steps}) > 1
    assert report["summary"]["steps_run"] == 24


def test_generation_reports_every_ratio(tmp_path):
    gpu_check.generation(_args(tmp_path), tmp_path, deadline=time.monotonic() + 600)
    report = json.loads((tmp_path / "generation.json").read_text())
    assert set(report["generation"]["ratios"]) == {
        "mma_over_llava",
        "mma_merged_over_llava",
        "mma_over_lavin",
        "mma_merged_over_lavin",
    }
    assert report["paired_steps"]["mma_decode_speed_over_lavin"] > 0
    assert [row["prompt_len"] for row in report["ttft_sweep"]["rows"]] == [16, 128, 512]


def test_a_subset_of_sections_shares_the_whole_budget(tmp_path, monkeypatch):
    # Two sections asked for split the budget between themselves in their shares' proportion (an earlier run gave
    # them their shares of the full set, leaving most of the budget unused).
    timeouts = {}

    def fake_run(command, cwd, timeout):
        timeouts[command[command.index("--section") + 1]] = timeout
        return argparse.Namespace(returncode=0)

    monkeypatch.setattr(gpu_check.subprocess, "run", fake_run)
    monkeypatch.setattr(gpu_check, "describe_machine", lambda device: {})
    monkeypatch.setattr(gpu_check.sys, "argv", ["gpu_check"])
    gpu_check.orchestrate(_args(tmp_path, budget_s=300.0, sections="fsdp,memory_over_steps", out=str(tmp_path)))
    assert set(timeouts) == {"fsdp", "memory_over_steps"}
    shares = gpu_check.SHARES["fsdp"] + gpu_check.SHARES["memory_over_steps"]
    assert abs(timeouts["fsdp"] - 300 * gpu_check.SHARES["fsdp"] / shares) < 2
    assert abs(timeouts["memory_over_steps"] - 300) < 2  # the last section gets what is left (all of it, here)


def test_gpu_report_states_the_committed_run_against_its_targets(tmp_path):
    # The committed H200 run, rendered again: the numbers in the summary are those of the JSON files.
    results = Path(gpu_check.REPO_ROOT) / "benchmarks" / "results" / "gpu"
    folder = shutil.copytree(results, tmp_path / "gpu")
    text = gpu_report.render(folder)
    rows = json.loads((results / "throughput.json").read_text())["rows"]
    best = max(row["samples_per_second"] for row in rows if row["kind"] == "mma")
    assert f"best MMA row {best:.2f} ({'met' if best >= 25 else 'not met'})" in text
    steps = json.loads((results / "memory_over_steps.json").read_text())["steps"]
    assert f"{len(steps)} steps ran" in text
    assert (folder / "memory_over_steps.png").stat().st_size > 10_000
    assert text == (results / "summary.md").read_text()
