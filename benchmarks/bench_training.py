"""Training cost: LaVIN+MMA against LLaVA-1.5+LoRA on the same backbones and identical batches.

- step time (forward + backward + AdamW step), both models in one process, interleaved, median ratio MMA / LLaVA;
- peak memory of the step, each model in its own child process;
- trainable parameters;
- throughput of one model (samples/s, peak memory, utilisation): the GPU measurement, with bf16, gradient
  checkpointing and a 4-bit base as options.

    python -m benchmarks.bench_training --shape cpu
    python -m benchmarks.bench_training --shape 7b --device cuda --dtype bfloat16 --throughput_only \
        --gradient_checkpointing --load_in_4bit --batch_size 16
"""

from __future__ import annotations

import argparse
import gc
import json

import torch

from .child import run_in_child
from .inputs import build_inputs, family_of
from .machine import describe_machine, peak_bf16_tflops
from .memory import MemoryMeter, mib
from .models import build_model, count_parameters, parameter_count
from .shapes import BenchShape, get_shape
from .timing import interleave, paired_ratio, summary, synchronizer, timed

COMPARED = ("mma", "llava_lora")
ADAPTER_MARKERS = ("mma_", "lora_")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def make_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters (fused: one kernel on GPU, vectorised on CPU)."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(parameters, lr=1e-4, weight_decay=0.02, fused=True)


def release_memory(*holders: object) -> None:
    """Drop the given references and hand cached GPU memory back, so that child processes can use it."""
    for holder in holders:
        if isinstance(holder, dict):
            holder.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def training_step(model: torch.nn.Module, batch: dict, optimizer: torch.optim.Optimizer) -> None:
    loss = model(**batch, use_cache=False).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _setup(kind: str, shape: BenchShape, device: str, dtype: str, batch_size: int, **build) -> tuple:
    model = build_model(kind, shape, device=device, dtype=DTYPES[dtype], **build)
    model.train()
    batch = build_inputs(
        family_of(kind),
        shape,
        batch_size=batch_size,
        text_len=shape.text_len,
        answer_len=shape.answer_len,
        device=device,
        dtype=DTYPES[dtype],
    )
    return model, batch, make_optimizer(model)


def training_time(
    shape: str = "cpu",
    overrides: dict | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    repeats: int = 5,
    warmup: int = 2,
    load_in_4bit: bool = False,
    gradient_checkpointing: bool = False,
    threads: int | None = None,
) -> dict:
    """Step time of MMA and LLaVA+LoRA, interleaved in one process; median times and median paired ratio."""
    if threads:
        torch.set_num_threads(threads)
    bench_shape = get_shape(shape, **(overrides or {}))
    build = {"load_in_4bit": load_in_4bit, "gradient_checkpointing": gradient_checkpointing}
    synchronize = synchronizer(device)
    tasks, lengths = {}, {}
    for kind in COMPARED:
        model, batch, optimizer = _setup(kind, bench_shape, device, dtype, bench_shape.batch_size, **build)
        lengths[kind] = batch["input_ids"].shape[1]
        tasks[kind] = timed(lambda m=model, b=batch, o=optimizer: training_step(m, b, o), synchronize)
    results = interleave(tasks, repeats=repeats, warmup=warmup)
    release_memory(tasks)
    return {
        "sequence_length": lengths,
        "batch_size": bench_shape.batch_size,
        "step_seconds": summary(results, "seconds"),
        "ratio_mma_over_llava_lora": paired_ratio(results, "seconds", "mma", "llava_lora"),
        "all_step_seconds": {name: [run["seconds"] for run in runs] for name, runs in results.items()},
    }


def training_memory(
    kind: str,
    shape: str = "cpu",
    overrides: dict | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    steps: int = 2,
    load_in_4bit: bool = False,
    gradient_checkpointing: bool = False,
    threads: int | None = None,
) -> dict:
    """
    Peak memory of `steps` training steps of one model (run it in a fresh process: see `run_in_child`).

    Returns MiB relative to the process before the model was built: `model` (resident after building), `peak`
    (highest during the steps: weights + activations + gradients + optimizer states) and `overhead` = peak - model.
    """
    if threads:
        torch.set_num_threads(threads)
    bench_shape = get_shape(shape, **(overrides or {}))
    meter = MemoryMeter(device)
    baseline = meter.current()
    model, batch, optimizer = _setup(
        kind,
        bench_shape,
        device,
        dtype,
        bench_shape.batch_size,
        load_in_4bit=load_in_4bit,
        gradient_checkpointing=gradient_checkpointing,
    )
    resident = meter.current()
    meter.reset_peak()
    for _ in range(steps):
        training_step(model, batch, optimizer)
    peak = meter.peak()
    return {
        "meter": meter.kind,
        "baseline_mib": mib(baseline),
        "model_mib": mib(resident - baseline),
        "peak_mib": mib(peak - baseline),
        "overhead_mib": mib(peak - resident),
    }


def llm_parameters(model: torch.nn.Module) -> int:
    """Base parameters of the LLM and its head (adapters left out, 4-bit counted unpacked): the N of 4 N T."""
    parts = (model.get_decoder(), model.get_output_embeddings())
    return sum(
        parameter_count(parameter)
        for part in parts
        for name, parameter in part.named_parameters()
        if not any(marker in name for marker in ADAPTER_MARKERS)
    )


def training_throughput(
    kind: str = "mma",
    shape: str = "7b",
    overrides: dict | None = None,
    device: str = "cuda",
    dtype: str = "bfloat16",
    batch_size: int | None = None,
    repeats: int = 5,
    warmup: int = 2,
    load_in_4bit: bool = False,
    gradient_checkpointing: bool = False,
    peak_tflops: float | None = None,
    threads: int | None = None,
) -> dict:
    """
    Samples per second and peak memory of one model's training step (run it in a fresh process).

    Utilisation uses LAVIN.md's estimate of 4 N T FLOP per sample (N = LLM parameters, T = tokens: forward plus the
    activation backward; frozen weights need no weight gradients), about 1.4e13 for LLaMA-7B at 512 tokens; it
    ignores the vision tower and attention, so it slightly understates the work done.
    """
    if threads:
        torch.set_num_threads(threads)
    bench_shape = get_shape(shape, **(overrides or {}))
    batch_size = batch_size or bench_shape.batch_size
    meter = MemoryMeter(device)
    baseline = meter.current()
    model, batch, optimizer = _setup(
        kind,
        bench_shape,
        device,
        dtype,
        batch_size,
        load_in_4bit=load_in_4bit,
        gradient_checkpointing=gradient_checkpointing,
    )
    resident = meter.current()
    meter.reset_peak()
    results = interleave(
        {kind: timed(lambda: training_step(model, batch, optimizer), synchronizer(device))}, repeats, warmup
    )
    peak = meter.peak()
    seconds = summary(results, "seconds")[kind]
    tokens = batch["input_ids"].shape[1]
    flop_per_sample = 4 * llm_parameters(model) * tokens
    samples_per_second = batch_size / seconds
    if peak_tflops is None and torch.device(device).type == "cuda":
        peak_tflops = peak_bf16_tflops(torch.cuda.get_device_name(torch.device(device)))
    achieved = samples_per_second * flop_per_sample
    return {
        "kind": kind,
        "dtype": dtype,
        "load_in_4bit": load_in_4bit,
        "gradient_checkpointing": gradient_checkpointing,
        "batch_size": batch_size,
        "sequence_length": tokens,
        "step_seconds": seconds,
        "samples_per_second": samples_per_second,
        "flop_per_sample_estimate": flop_per_sample,
        "achieved_tflops_estimate": achieved / 1e12,
        "peak_tflops": peak_tflops,
        "utilisation": achieved / (peak_tflops * 1e12) if peak_tflops else None,
        "model_mib": mib(resident - baseline),
        "peak_mib": mib(peak - baseline),
        "meter": meter.kind,
    }


def trainable_parameters(shapes: tuple[str, ...] = ("cpu", "7b")) -> dict:
    """Trainable and total parameters of MMA and LLaVA+LoRA, counted on the meta device (no memory)."""
    counts = {}
    for name in shapes:
        bench_shape = get_shape(name)
        counts[name] = {kind: count_parameters(build_model(kind, bench_shape, device="meta")) for kind in COMPARED}
        counts[name]["ratio_mma_over_llava_lora"] = (
            counts[name]["mma"]["trainable"] / counts[name]["llava_lora"]["trainable"]
        )
    return counts


def run(args: argparse.Namespace) -> dict:
    """The training benchmarks selected by `args` (see `add_arguments`)."""
    common = {
        "shape": args.shape,
        "overrides": shape_overrides(args),
        "device": args.device,
        "dtype": args.dtype,
        "load_in_4bit": args.load_in_4bit,
        "gradient_checkpointing": args.gradient_checkpointing,
        "threads": args.threads,
    }
    result: dict = {"settings": common | {"repeats": args.repeats, "warmup": args.warmup}}
    if not args.throughput_only:
        result["time"] = training_time(**common, repeats=args.repeats, warmup=args.warmup)
        result["memory"] = {
            kind: run_in_child("benchmarks.bench_training:training_memory", kind=kind, **common) for kind in COMPARED
        }
        result["memory"]["ratio_peak_mma_over_llava_lora"] = (
            result["memory"]["mma"]["peak_mib"] / result["memory"]["llava_lora"]["peak_mib"]
        )
        result["memory"]["ratio_overhead_mma_over_llava_lora"] = (
            result["memory"]["mma"]["overhead_mib"] / result["memory"]["llava_lora"]["overhead_mib"]
        )
        result["parameters"] = trainable_parameters(tuple(dict.fromkeys(("cpu", "7b", args.shape))))
    if args.throughput or args.throughput_only:
        result["throughput"] = throughput_matrix(args, common)
    return result


def throughput_matrix(args: argparse.Namespace, common: dict) -> list[dict]:
    """MMA's throughput with and without gradient checkpointing, and with a 4-bit base where asked or on CUDA."""
    quantised = (False, True) if (args.load_in_4bit or torch.device(args.device).type == "cuda") else (False,)
    checkpointing = (False, True)
    rows = []
    for load_in_4bit in quantised:
        for gradient_checkpointing in checkpointing:
            settings = common | {"load_in_4bit": load_in_4bit, "gradient_checkpointing": gradient_checkpointing}
            try:
                rows.append(
                    run_in_child(
                        "benchmarks.bench_training:training_throughput",
                        kind="mma",
                        batch_size=args.batch_size,
                        repeats=args.repeats,
                        warmup=args.warmup,
                        peak_tflops=args.peak_tflops,
                        **settings,
                    )
                )
            except RuntimeError as error:  # e.g. out of memory at this batch size: report it, keep the others
                rows.append(settings | {"kind": "mma", "error": str(error)[-600:]})
    return rows


def shape_overrides(args: argparse.Namespace) -> dict:
    return {"batch_size": args.batch_size, "text_len": args.text_len}


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--shape", default="cpu", help="toy, cpu or 7b (see benchmarks/shapes.py).")
    parser.add_argument("--device", default="cpu", help="cpu or cuda.")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="Backbone dtype.")
    parser.add_argument("--batch_size", type=int, default=None, help="Override the shape's training batch size.")
    parser.add_argument("--text_len", type=int, default=None, help="Override the shape's text tokens per sample.")
    parser.add_argument("--repeats", type=int, default=5, help="Timed repeats per model.")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed warm-up repeats per model.")
    parser.add_argument("--load_in_4bit", action="store_true", help="NF4 LLM (bitsandbytes).")
    parser.add_argument("--gradient_checkpointing", action="store_true", help="Non-reentrant checkpointing.")
    parser.add_argument("--throughput", action="store_true", help="Also run MMA's throughput matrix.")
    parser.add_argument("--throughput_only", action="store_true", help="Run only MMA's throughput matrix.")
    parser.add_argument("--peak_tflops", type=float, default=None, help="Device peak for utilisation.")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads on CPU (0: torch's default); see README."
    )
    return parser


def main() -> None:
    args = add_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0])).parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps({"machine": describe_machine(args.device), "training": run(args)}, indent=2))


if __name__ == "__main__":
    main()
