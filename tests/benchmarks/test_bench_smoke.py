"""Smoke test of the benchmark code paths at toy size: structure, sequence lengths, parameter counts, finite ratios.

Speed is not asserted: these are not timed tests.
"""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks import bench_generation, bench_training
from benchmarks.child import REPO_ROOT, run_in_child
from benchmarks.inputs import build_inputs
from benchmarks.models import build_model, count_parameters, lavin_image_token_id, llava_image_token_id
from benchmarks.report import check_targets, to_markdown
from benchmarks.shapes import get_shape

TOY = get_shape("toy")


def _positive_finite(value: float) -> bool:
    return math.isfinite(value) and value > 0


def test_inputs_share_text_and_pixels_and_place_each_models_image_tokens():
    lavin = build_inputs("lavin", TOY, batch_size=2, text_len=10, answer_len=3)
    llava = build_inputs("llava", TOY, batch_size=2, text_len=10, answer_len=3)
    assert lavin["input_ids"].shape == (2, 1 + 6 + 10)
    assert llava["input_ids"].shape == (2, 1 + (56 // 14) ** 2 + 10)
    torch.testing.assert_close(lavin["input_ids"][:, -10:], llava["input_ids"][:, -10:])
    torch.testing.assert_close(lavin["pixel_values"], llava["pixel_values"])
    assert (lavin["input_ids"][:, 1:7] == lavin_image_token_id(TOY)).all()
    assert (llava["input_ids"][:, 1:17] == llava_image_token_id(TOY)).all()
    assert not (llava["input_ids"][:, 17:] == llava_image_token_id(TOY)).any()  # text never uses LLaVA's image id
    for batch in (lavin, llava):
        assert (batch["labels"][:, :-3] == -100).all()
        torch.testing.assert_close(batch["labels"][:, -3:], batch["input_ids"][:, -3:])


def test_trainable_parameters_match_hand_counts():
    # LoRA r=128 on the 7 LLM linears (width 64, MLP 128, 2 layers) + the projector (32 -> 64 -> 64, with biases).
    lora_per_layer = 4 * 128 * (64 + 64) + 2 * 128 * (64 + 128) + 128 * (128 + 64)
    projector = (32 * 64 + 64) + (64 * 64 + 64)
    assert count_parameters(build_model("llava_lora", TOY))["trainable"] == 2 * lora_per_layer + projector
    # MMA: per adapter down (w*8+8), two grouped ups (w*4+w each), router (w*2+2); 6 CLIP (w=32) + 2 LLM (w=64)
    # adapters, LaVIN's projector (32 -> 128 -> 64) and modality embedding (2 x 64).
    adapter = lambda w: (w * 8 + 8) + 2 * (w * 4 + w) + (w * 2 + 2)  # noqa: E731
    lavin_parts = (32 * 128 + 128) + (128 * 64 + 64) + 2 * 64
    assert count_parameters(build_model("mma", TOY))["trainable"] == 6 * adapter(32) + 2 * adapter(64) + lavin_parts


def test_training_time_and_memory_paths():
    timing = bench_training.training_time(shape="toy", repeats=2, warmup=0)
    assert timing["sequence_length"] == {"mma": 1 + 6 + TOY.text_len, "llava_lora": 1 + 16 + TOY.text_len}
    assert all(len(times) == 2 for times in timing["all_step_seconds"].values())
    assert _positive_finite(timing["ratio_mma_over_llava_lora"]["median"])
    memory = bench_training.training_memory("mma", shape="toy", steps=1)
    assert memory["peak_mib"] >= memory["model_mib"] - 1e-9 and memory["overhead_mib"] >= 0


def test_throughput_reports_rate_and_estimate():
    row = bench_training.training_throughput(
        kind="mma", shape="toy", device="cpu", dtype="float32", repeats=1, warmup=0, peak_tflops=1.0
    )
    assert row["sequence_length"] == 1 + 6 + TOY.text_len
    llm = (64 * 512) * 2 + 2 * (4 * 64 * 64 + 3 * 64 * 128 + 2 * 64) + 64  # embeddings + head, layers, final norm
    assert row["flop_per_sample_estimate"] == 4 * llm * row["sequence_length"]
    assert _positive_finite(row["samples_per_second"]) and 0 < row["utilisation"] < 1


def test_generation_path_and_report():
    generation = bench_generation.generation_speed(shape="toy", repeats=1, warmup=0)
    assert generation["prompt_length"]["llava"] == 1 + 16 + TOY.prompt_len
    assert generation["prompt_length"]["mma"] == generation["prompt_length"]["mma_merged"] == 1 + 6 + TOY.prompt_len
    for ratios in generation["ratios"].values():
        assert _positive_finite(ratios["ttft_seconds"]["median"])
        assert _positive_finite(ratios["decode_tokens_per_second"]["median"])
    sweep = bench_generation.ttft_by_prompt_length("toy", prompt_lens=(4, 8), repeats=1, warmup=0)
    assert [row["prompt_len"] for row in sweep["rows"]] == [4, 8]
    assert all(_positive_finite(row["ratio_mma_over_llava"]) for row in sweep["rows"])
    generation["ttft_sweep"] = sweep
    paired = bench_generation.paired_step_ratios("toy", decode_pairs=3, ttft_pairs=2)
    assert paired["decode_step"]["mma_over_lavin"]["rounds"] == 3 and paired["ttft"]["mma_over_lavin"]["rounds"] == 2
    speed = paired["mma_decode_speed_over_lavin"]
    assert _positive_finite(speed) and speed == 1 / paired["decode_step"]["mma_over_lavin"]["median"]
    generation["paired_steps"] = paired
    result = {
        "machine": {"cpu_model": "test"},
        "settings": {"shape": "toy", "device": "cpu", "dtype": "float32", "shape_fields": TOY.to_dict()},
        "generation": generation,
    }
    result["targets"] = check_targets(result)
    measured = {row["target"]: row for row in result["targets"]}
    assert measured["decode tokens/s, MMA unmerged / base"]["met"] is not None
    assert measured["decode speed, MMA unmerged / base (paired steps)"]["measured"] == speed
    assert measured["training step time, MMA / LLaVA+LoRA"]["met"] is None  # not measured in this result
    markdown = to_markdown(result)
    assert "## Generation" in markdown and "TTFT against prompt length" in markdown and "step by step" in markdown


def test_cpu_clock_measures_and_refuses_settings_it_cannot_measure():
    threads = torch.get_num_threads()
    try:
        generation = bench_generation.generation_speed(
            shape="toy", repeats=1, warmup=0, kinds=("lavin", "mma"), threads=1, clock="cpu"
        )
    finally:
        torch.set_num_threads(threads)  # the benchmark sets it for the process
    assert _positive_finite(generation["ratios"]["mma_over_lavin"]["decode_tokens_per_second"]["median"])
    with pytest.raises(ValueError, match="--threads 1"):
        bench_generation.generation_speed(shape="toy", repeats=1, warmup=0, threads=2, clock="cpu")


def test_child_process_runs_from_the_repository_root_and_reports_failures():
    assert run_in_child("os:getcwd") == str(REPO_ROOT)
    with pytest.raises(RuntimeError, match="failed"):
        run_in_child("os:no_such_function")
