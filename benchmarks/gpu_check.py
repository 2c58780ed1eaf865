"""The GPU evidence in one prepared run: 7B-shape training throughput and memory, memory over 200 steps, generation at
7B, and the FSDP launchers on one GPU. Every section runs in its own process under a share of one time budget and
writes its JSON as it goes, so a section that fails or runs out of time costs only itself.

    bash benchmarks/gpu_check.sh                                     # on a GPU: 7B, bf16, about 8 minutes
    python -m benchmarks.gpu_check --shape toy --device cpu --dtype float32 --out /tmp/gpu-check   # dry run

Sections, in order (what runs first is what matters most):
- `throughput`: training samples/s, peak memory and utilisation of LaVIN+MMA (512 tokens) and LLaVA-1.5+LoRA r=128
  (762 tokens), with and without gradient checkpointing, and with an NF4 LLM (LaVIN-lite); peak memory at two batch
  sizes gives each configuration's memory line, from which the largest batch for a 24 GB and an 80 GB card is
  predicted and then run under an allocator cap of that card's usable memory.
- `memory_over_steps`: 200 MMA training steps on batches of varying length, image and text-only, with the allocated
  and reserved memory after every step (does it grow?).
- `generation`: time to first token and decode speed of LLaVA, the base LaVIN, MMA unmerged and merged, at batch 1.
- `fsdp`: `accelerate launch` with `examples/accelerate/fsdp.yaml` through `lavin-train`, and `train_fsdp` under
  torchrun, a few steps each on one GPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .bench_generation import (
    GENERATION_KINDS,
    build_models,
    generation_speed,
    paired_step_ratios,
    ttft_by_prompt_length,
)
from .bench_training import DTYPES, _setup, llm_parameters, training_step
from .child import REPO_ROOT
from .inputs import build_inputs
from .machine import describe_machine, peak_bf16_tflops
from .models import BOS_TOKEN_ID
from .shapes import BenchShape, get_shape

SECTIONS = ("throughput", "memory_over_steps", "generation", "fsdp")
# Each section's share of the budget; what one leaves unused passes to the next.
SHARES = {"throughput": 0.36, "memory_over_steps": 0.14, "generation": 0.27, "fsdp": 0.23}
# (kind, gradient checkpointing, 4-bit LLM), most important first.
THROUGHPUT_CONFIGS = (
    ("mma", False, False),
    ("llava_lora", False, False),
    ("mma", True, False),
    ("llava_lora", True, False),
    ("mma", True, True),
    ("mma", False, True),
)
# Memory the allocator may use on a card of that size: the card's GiB less ~1 GiB for the CUDA context and
# libraries (what `torch.cuda.mem_get_info` reports free on an idle 24 GB / 80 GB card).
CARDS_GIB = {"24GB": 23.0, "80GB": 78.5}
MAX_FIT_BATCH = 64  # larger fits are reported as predicted, not run
GIB = 2**30


def _now() -> float:
    return time.monotonic()


def _write(path: Path, data: dict) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    temporary.replace(path)


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Meter:
    """Allocated bytes on CUDA (current and peak since reset); on CPU zeros, so the dry run exercises the code."""

    def __init__(self, device: str):
        self.cuda = torch.device(device).type == "cuda"

    def allocated(self) -> int:
        if not self.cuda:
            return 0
        torch.cuda.synchronize()
        return torch.cuda.memory_allocated()

    def reserved(self) -> int:
        return torch.cuda.memory_reserved() if self.cuda else 0

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak(self) -> int:
        if not self.cuda:
            return 0
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()


def _is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def _timed_steps(step: Callable[[], None], count: int, synchronize: Callable[[], None]) -> list[float]:
    times = []
    for _ in range(count):
        synchronize()
        start = time.perf_counter()
        step()
        synchronize()
        times.append(time.perf_counter() - start)
    return times


def _synchronizer(device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)


def _batch(kind: str, shape: BenchShape, batch_size: int, device: str, dtype: str) -> dict:
    family = "llava" if kind.startswith("llava") else "lavin"
    return build_inputs(
        family,
        shape,
        batch_size=batch_size,
        text_len=shape.text_len,
        answer_len=shape.answer_len,
        device=device,
        dtype=DTYPES[dtype],
    )


def _fit_on_card(
    run_step: Callable[[int], None], predicted: int, cap_gib: float, device: str, total_bytes: int
) -> dict:
    """Run two steps at the predicted largest batch with the allocator capped at `cap_gib`; one retry 10% smaller."""
    result: dict = {"cap_gib": cap_gib, "predicted_batch": predicted}
    if predicted < 1:
        result["verified_batch"] = 0
        return result
    batch = min(predicted, MAX_FIT_BATCH)
    result["capped_at_max"] = predicted > MAX_FIT_BATCH
    if torch.device(device).type != "cuda":
        batch = min(batch, 2)  # dry run: the code path only
    if total_bytes:
        torch.cuda.set_per_process_memory_fraction(cap_gib * GIB / total_bytes)
    try:
        for attempt in (batch, max(1, math.floor(batch * 0.9))):
            try:
                _free()
                start = time.perf_counter()
                run_step(attempt)
                run_step(attempt)
                result |= {"verified_batch": attempt, "two_steps_seconds": time.perf_counter() - start}
                return result
            except Exception as error:  # noqa: BLE001 - out of memory is the answer, anything else is reported
                result.setdefault("failed", []).append({"batch": attempt, "error": str(error)[:300]})
                if not _is_oom(error) or attempt == 1:
                    return result
        return result
    finally:
        if total_bytes:
            torch.cuda.set_per_process_memory_fraction(1.0)
        _free()


def throughput(args: argparse.Namespace, out: Path, deadline: float) -> None:
    """Training throughput and memory of each configuration, and the largest batch for a 24 GB and an 80 GB card."""
    shape = get_shape(args.shape)
    device, dtype, batch_size = args.device, args.dtype, args.batch_size
    cuda = torch.device(device).type == "cuda"
    total = torch.cuda.get_device_properties(0).total_memory if cuda else 0
    peak_tflops = peak_bf16_tflops(torch.cuda.get_device_name(0)) if cuda else None
    synchronize = _synchronizer(device)
    meter = Meter(device)
    report: dict = {"batch_size": batch_size, "peak_tflops_datasheet": peak_tflops, "rows": []}
    if cuda:  # the measured ceiling: a large bf16 matrix product
        a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
        for _ in range(3):
            a @ a
        times = _timed_steps(lambda: a @ a, 10, synchronize)
        report["matmul_bf16_tflops_measured"] = 2 * 8192**3 / statistics.median(times) / 1e12
        del a
    for kind, checkpointing, four_bit in THROUGHPUT_CONFIGS:
        row: dict = {"kind": kind, "gradient_checkpointing": checkpointing, "load_in_4bit": four_bit}
        report["rows"].append(row)
        if _now() > deadline - 20:
            row["skipped"] = "time budget"
            continue
        model = optimizer = None
        try:
            _free()
            meter.reset()
            baseline = meter.allocated()
            build_start = time.perf_counter()
            model, batch, optimizer = _setup(
                kind,
                shape,
                device,
                dtype,
                batch_size,
                load_in_4bit=four_bit,
                gradient_checkpointing=checkpointing,
            )
            row["build_seconds"] = time.perf_counter() - build_start
            row["model_gib"] = (meter.allocated() - baseline) / GIB

            def step(rows: int, model=model, optimizer=optimizer, kind=kind) -> None:
                training_step(model, _batch(kind, shape, rows, device, dtype), optimizer)

            def full_step(model=model, batch=batch, optimizer=optimizer) -> None:
                training_step(model, batch, optimizer)

            _timed_steps(full_step, args.warmup, synchronize)
            half = max(1, batch_size // 2)
            meter.reset()
            step(half)
            peak_half = meter.peak() - baseline
            meter.reset()
            seconds = statistics.median(_timed_steps(full_step, args.repeats, synchronize))
            peak_full = meter.peak() - baseline
            tokens = batch["input_ids"].shape[1]
            flop = 4 * llm_parameters(model) * tokens
            rate = batch_size / seconds
            row |= {
                "batch_size": batch_size,
                "sequence_length": tokens,
                "step_seconds": seconds,
                "samples_per_second": rate,
                "tokens_per_second": rate * tokens,
                "achieved_tflops_estimate": rate * flop / 1e12,
                "utilisation_of_datasheet_peak": rate * flop / (peak_tflops * 1e12) if peak_tflops else None,
                "utilisation_of_measured_matmul": (
                    rate * flop / (report["matmul_bf16_tflops_measured"] * 1e12)
                    if "matmul_bf16_tflops_measured" in report
                    else None
                ),
                "peak_gib": peak_full / GIB,
                f"peak_gib_at_batch_{half}": peak_half / GIB,
            }
            if cuda and batch_size > half:
                per_sample = (peak_full - peak_half) / (batch_size - half)
                fixed = peak_full - per_sample * batch_size
                row |= {"memory_per_sample_gib": per_sample / GIB, "memory_fixed_gib": fixed / GIB}
            else:
                per_sample, fixed = 1.0, 0.0
            row["fits"] = {}
            for card, cap in CARDS_GIB.items():
                if _now() > deadline - 15:
                    row["fits"][card] = {"skipped": "time budget"}
                    continue
                predicted = math.floor((cap * GIB - fixed) / per_sample) if per_sample > 0 else MAX_FIT_BATCH
                row["fits"][card] = _fit_on_card(step, predicted, cap, device, total)
        except Exception as error:  # noqa: BLE001 - report and go on with the next configuration
            row["error"] = f"{type(error).__name__}: {str(error)[:500]}"
        finally:
            model = optimizer = batch = step = full_step = None
            _free()
        _write(out / "throughput.json", report)
        print(json.dumps(row), flush=True)
    _write(out / "throughput.json", report)


def _text_only(batch: dict) -> dict:
    """The same rows with no image: BOS + the text, no pixels (LaVIN routes them on its text-only path)."""
    text = batch["input_ids"][:, 7:]
    bos = torch.full_like(text[:, :1], BOS_TOKEN_ID)
    input_ids = torch.cat([bos, text], dim=1)
    labels = torch.cat([torch.full_like(bos, -100), batch["labels"][:, 7:]], dim=1)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}


def memory_over_steps(args: argparse.Namespace, out: Path, deadline: float) -> None:
    """MMA training (bf16, checkpointing) for `args.steps` steps on a mix of lengths and modalities; memory per step."""
    base = get_shape(args.shape)
    device, dtype = args.device, args.dtype
    meter, synchronize = Meter(device), _synchronizer(device)
    rows = args.memory_batch_size
    model, _, optimizer = _setup("mma", base, device, dtype, rows, gradient_checkpointing=True)
    rng = random.Random(0)
    pool = []  # 8 batches: lengths from half to the full sample, every 4th one text-only
    for index in range(8):
        text_len = rng.randint(base.text_len // 2, base.text_len)
        shape = get_shape(args.shape, text_len=text_len, answer_len=min(base.answer_len, text_len))
        batch = _batch("mma", shape, rows, device, dtype)
        pool.append(_text_only(batch) if index % 4 == 3 else batch)
    meter.reset()
    report: dict = {"batch_size": rows, "gradient_checkpointing": True, "steps": []}
    start = _now()
    for step in range(args.steps):
        if _now() > deadline - 5:
            report["stopped_early"] = "time budget"
            break
        batch = pool[rng.randrange(len(pool))]
        seconds = _timed_steps(lambda b=batch: training_step(model, b, optimizer), 1, synchronize)[0]
        report["steps"].append(
            {
                "step": step + 1,
                "tokens": batch["input_ids"].shape[1],
                "image": "pixel_values" in batch,
                "seconds": seconds,
                "allocated_gib": meter.allocated() / GIB,
                "reserved_gib": meter.reserved() / GIB,
                "peak_gib": meter.peak() / GIB,
            }
        )
        if step % 20 == 19:
            _write(out / "memory_over_steps.json", report)
    steps = report["steps"]
    if len(steps) >= 20:
        late = steps[len(steps) // 10 :]
        report["summary"] = {
            "steps_run": len(steps),
            "seconds": _now() - start,
            "allocated_gib_first_last": [late[0]["allocated_gib"], steps[-1]["allocated_gib"]],
            "reserved_gib_first_last": [late[0]["reserved_gib"], steps[-1]["reserved_gib"]],
            "peak_gib_first_last": [late[0]["peak_gib"], steps[-1]["peak_gib"]],
            "allocated_growth_mib_after_warmup": (steps[-1]["allocated_gib"] - late[0]["allocated_gib"]) * 1024,
        }
    _write(out / "memory_over_steps.json", report)


def generation(args: argparse.Namespace, out: Path, deadline: float) -> None:
    """TTFT and decode speed of the four inference models, built once."""
    shape = get_shape(args.shape)
    build_start = time.perf_counter()
    models = build_models(GENERATION_KINDS, shape, args.device, args.dtype)
    report: dict = {"build_seconds": time.perf_counter() - build_start}
    common = {"shape": args.shape, "device": args.device, "dtype": args.dtype, "models": models}
    # 32 new tokens give the decode rate; the paired single steps below measure the MMA / base ratio more finely.
    report["generation"] = generation_speed(**common, overrides={"new_tokens": 32}, repeats=args.repeats, warmup=1)
    report["generation"].pop("runs", None)
    _write(out / "generation.json", report)
    if _now() < deadline - 30:
        report["paired_steps"] = paired_step_ratios(**common, decode_pairs=args.decode_pairs, ttft_pairs=20)
        _write(out / "generation.json", report)
    if _now() < deadline - 15:
        report["ttft_sweep"] = ttft_by_prompt_length(**common, prompt_lens=(16, 128, 512), repeats=3)
    _write(out / "generation.json", report)


def _launch(command: list[str], timeout: float, output_dir: Path) -> dict:
    start = _now()
    try:
        completed = subprocess.run(
            command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=max(5.0, timeout), env=os.environ
        )
        returncode, text = completed.returncode, completed.stdout + completed.stderr
    except subprocess.TimeoutExpired as expired:
        partial = expired.stdout or b""
        returncode, text = "timeout", partial.decode(errors="replace") if isinstance(partial, bytes) else partial
    lines = [line for line in text.splitlines() if line.strip() and "it/s]" not in line and "s/it]" not in line]
    losses = [line.strip() for line in lines if "loss" in line]
    return {
        "command": " ".join(command),
        "returncode": returncode,
        "seconds": _now() - start,
        "adapter_written": (output_dir / "adapter_model.safetensors").is_file(),
        "loss_lines": losses[-6:],
        "output_tail": "\n".join(lines)[-2500:],
    }


def fsdp(args: argparse.Namespace, out: Path, deadline: float) -> None:
    """`accelerate launch` (examples/accelerate/fsdp.yaml) through lavin-train, train_fsdp under torchrun, and
    lavin-train on a 4-bit base (LaVIN-lite) loaded from the directory an earlier run saved."""
    cuda = torch.device(args.device).type == "cuda"
    scratch = Path(args.scratch)
    common = ["--tiny", "--synthetic", "--synthetic_num_train", "64", "--max_steps", "6", "--overwrite", "true"]
    gpu_flags = ["--bf16", "true"] if cuda else ["--bf16", "false", "--use_cpu", "true"]
    report: dict = {}
    accelerate_dir = scratch / "fsdp-accelerate"
    report["accelerate_fsdp_lavin_train"] = _launch(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "examples/accelerate/fsdp.yaml"]
        + ["--num_processes", "1", "--main_process_port", "29511", "-m", "transformers_lavin.scripts.sft"]
        + common
        + gpu_flags
        + ["--output_dir", str(accelerate_dir), "--gradient_checkpointing", "false", "--logging_steps", "1"]
        + ["--per_device_train_batch_size", "4", "--report_to", "none", "--save_strategy", "no"],
        (deadline - _now()) * 0.55,
        accelerate_dir,
    )
    _write(out / "fsdp.json", report)
    torchrun_dir = scratch / "fsdp-torchrun"
    report["torchrun_train_fsdp"] = _launch(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port", "29512"]
        + ["-m", "transformers_lavin.scripts.train_fsdp"]
        + common
        + ["--bf16", "true" if cuda else "false", "--output_dir", str(torchrun_dir), "--logging_steps", "1"]
        + ["--per_device_train_batch_size", "4"],
        (deadline - _now()) * 0.5,
        torchrun_dir,
    )
    _write(out / "fsdp.json", report)
    # LaVIN-lite through Trainer on one device: the base the runs above saved, loaded in 4 bits.
    base = next((d / "base_model" for d in (accelerate_dir, torchrun_dir) if (d / "base_model").is_dir()), None)
    if base is not None:
        lite_dir = scratch / "lite-4bit"
        report["lavin_train_4bit"] = _launch(
            [sys.executable, "-m", "transformers_lavin.scripts.sft", "--model_name_or_path", str(base)]
            + ["--load_in_4bit", "true", "--synthetic", "--synthetic_num_train", "64", "--max_steps", "6"]
            + ["--overwrite", "true", "--output_dir", str(lite_dir), "--logging_steps", "1", "--report_to", "none"]
            + ["--per_device_train_batch_size", "4", "--save_strategy", "no"]
            + gpu_flags,
            deadline - _now() - 3,
            lite_dir,
        )
    _write(out / "fsdp.json", report)


def run_section(args: argparse.Namespace) -> None:
    out = Path(args.out)
    deadline = _now() + args.section_seconds
    torch.manual_seed(0)
    {"throughput": throughput, "memory_over_steps": memory_over_steps, "generation": generation, "fsdp": fsdp}[
        args.section
    ](args, out, deadline)


def orchestrate(args: argparse.Namespace) -> None:
    """Every section in its own process, each under its share of the budget; a summary of what came back."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = _now()
    summary: dict = {"machine": describe_machine(args.device), "settings": vars(args).copy(), "sections": {}}
    _write(out / "gpu_check.json", summary)
    sections = SECTIONS if args.sections is None else args.sections.split(",")
    # Shares of the sections asked for, so that a subset splits the whole budget among itself.
    remaining_share = sum(SHARES[section] for section in sections)
    for section in sections:
        left = args.budget_s - (_now() - start)
        share = SHARES[section] / remaining_share
        remaining_share -= SHARES[section]
        seconds = left * share if remaining_share > 1e-9 else left
        if seconds < 20:
            summary["sections"][section] = {"skipped": f"{left:.0f} s left of the budget"}
            continue
        section_args = [arg for arg in sys.argv[1:] if arg != "--"] + ["--section", section]
        section_args += ["--section_seconds", f"{seconds * 0.92:.0f}"]
        section_start = _now()
        print(f"== {section}: {seconds:.0f} s", flush=True)
        try:
            completed = subprocess.run(
                [sys.executable, "-m", "benchmarks.gpu_check", *section_args], cwd=REPO_ROOT, timeout=seconds
            )
            status = completed.returncode
        except subprocess.TimeoutExpired:
            status = "timeout"
        summary["sections"][section] = {"returncode": status, "seconds": _now() - section_start}
        _write(out / "gpu_check.json", summary)
    summary["seconds"] = _now() - start
    _write(out / "gpu_check.json", summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="7b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    parser.add_argument("--batch_size", type=int, default=8, help="Batch of the throughput rows.")
    parser.add_argument("--memory_batch_size", type=int, default=4, help="Batch of the memory-over-steps run.")
    parser.add_argument("--steps", type=int, default=200, help="Steps of the memory-over-steps run.")
    parser.add_argument("--repeats", type=int, default=4, help="Timed repeats (training steps, generations).")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed warm-up training steps.")
    parser.add_argument("--decode_pairs", type=int, default=200, help="Rounds of the paired decode steps.")
    parser.add_argument("--budget_s", type=float, default=450, help="Seconds for all sections together.")
    parser.add_argument("--sections", default=None, help=f"Comma-separated subset of {','.join(SECTIONS)}.")
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "gpu"))
    parser.add_argument("--scratch", default="/tmp/lavin-gpu-check", help="Where the FSDP runs write.")
    parser.add_argument("--section", choices=SECTIONS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--section_seconds", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.section:
        run_section(args)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
