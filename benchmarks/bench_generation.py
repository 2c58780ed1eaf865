"""Inference cost: time to first token with an image and decode speed, for LaVIN+MMA, LLaVA and the base LaVIN.

All four models are built in one process and generate from identical image prompts, interleaved:
- `llava`: LLaVA-1.5 as served (LoRA merged, so no adapter cost), 256 image tokens;
- `lavin`: the base LaVIN without adapters, 6 image tokens;
- `mma`: LaVIN with MMA unmerged (the PEFT model as trained);
- `mma_merged`: MMA merged for image prompts (`merge_and_unload(modality="image")`).

The time of each step is read inside `generate` by a logits processor, which runs right after each forward: the first
stamp gives the time to first token (vision tower + prefill), the spacing of the others the decode rate.

    python -m benchmarks.bench_generation --shape cpu
    python -m benchmarks.bench_generation --shape 7b --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from .inputs import build_inputs, family_of
from .machine import describe_machine
from .models import PAD_TOKEN_ID, build_model
from .shapes import BenchShape, get_shape
from .timing import Metrics, interleave, paired_ratio, summary, synchronizer, timed

GENERATION_KINDS = ("llava", "lavin", "mma", "mma_merged")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# `wall`: elapsed time. `cpu`: the CPU time of the calling thread, which on CPU with one torch thread is all the
# model's work and leaves out the time other processes take the core away (a shared machine's noise).
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


class StepClock(LogitsProcessor):
    """Records the time at which each generation step's logits are ready; changes nothing."""

    def __init__(self, synchronize: Callable[[], None], now: Callable[[], float] = time.perf_counter):
        self.synchronize = synchronize
        self.now = now
        self.stamps: list[float] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.synchronize()
        self.stamps.append(self.now())
        return scores


def generation_task(
    model: torch.nn.Module,
    inputs: dict,
    new_tokens: int,
    synchronize: Callable[[], None],
    now: Callable[[], float] = time.perf_counter,
) -> Callable[[], Metrics]:
    """A task that greedily generates exactly `new_tokens` tokens and returns TTFT and decode tokens/s."""
    if new_tokens < 2:
        raise ValueError("new_tokens must be at least 2 to measure a decode rate.")

    def task() -> Metrics:
        clock = StepClock(synchronize, now)
        synchronize()
        start = now()
        model.generate(
            **inputs,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            logits_processor=LogitsProcessorList([clock]),
            pad_token_id=PAD_TOKEN_ID,
        )
        first, last = clock.stamps[0], clock.stamps[-1]
        return {
            "ttft_seconds": first - start,
            "decode_tokens_per_second": (len(clock.stamps) - 1) / (last - first),
        }

    return task


def build_models(
    kinds: tuple[str, ...], shape: BenchShape, device: str = "cpu", dtype: str = "float32"
) -> dict[str, torch.nn.Module]:
    """The inference models of `kinds` at `shape`, in eval mode: build them once and pass them to every measurement
    (at 7B each one is 13 GB)."""
    return {kind: build_model(kind, shape, device=device, dtype=DTYPES[dtype]).eval() for kind in kinds}


def generation_speed(
    shape: str = "cpu",
    overrides: dict | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    repeats: int = 5,
    warmup: int = 1,
    kinds: tuple[str, ...] = GENERATION_KINDS,
    threads: int | None = None,
    clock: str = "wall",
    models: dict[str, torch.nn.Module] | None = None,
) -> dict:
    """TTFT and decode tokens/s of each kind, interleaved, with the MMA-vs-LLaVA and MMA-vs-base ratios (on `models`
    when given, else on models built here)."""
    now = _clock(clock, device, threads)
    if threads:
        torch.set_num_threads(threads)
    bench_shape = get_shape(shape, **(overrides or {}))
    synchronize = synchronizer(device)
    models = models if models is not None else build_models(kinds, bench_shape, device, dtype)
    tasks, lengths = {}, {}
    for kind in kinds:
        model = models[kind]
        inputs = build_inputs(
            family_of(kind),
            bench_shape,
            batch_size=1,
            text_len=bench_shape.prompt_len,
            device=device,
            dtype=DTYPES[dtype],
        )
        lengths[kind] = inputs["input_ids"].shape[1]
        tasks[kind] = generation_task(model, inputs, bench_shape.new_tokens, synchronize, now)
    with torch.inference_mode():
        results = interleave(tasks, repeats=repeats, warmup=warmup)
    report = {
        "prompt_length": lengths,
        "new_tokens": bench_shape.new_tokens,
        "ttft_seconds": summary(results, "ttft_seconds"),
        "decode_tokens_per_second": summary(results, "decode_tokens_per_second"),
        "ratios": {},
        "runs": results,
    }
    pairs = [("mma", "llava"), ("mma_merged", "llava"), ("mma", "lavin"), ("mma_merged", "lavin")]
    for numerator, denominator in pairs:
        if numerator in tasks and denominator in tasks:
            report["ratios"][f"{numerator}_over_{denominator}"] = {
                metric: paired_ratio(results, metric, numerator, denominator)
                for metric in ("ttft_seconds", "decode_tokens_per_second")
            }
    return report


def ttft_by_prompt_length(
    shape: str = "cpu",
    device: str = "cpu",
    dtype: str = "float32",
    prompt_lens: tuple[int, ...] = (16, 64, 256),
    repeats: int = 3,
    warmup: int = 1,
    threads: int | None = None,
    clock: str = "wall",
    models: dict[str, torch.nn.Module] | None = None,
) -> dict:
    """TTFT ratio MMA / LLaVA for several prompt lengths: the ratio tends to (7 + P) / (257 + P) as P grows."""
    now = _clock(clock, device, threads)
    if threads:
        torch.set_num_threads(threads)
    bench_shape = get_shape(shape)
    synchronize = synchronizer(device)
    kinds = ("mma", "llava")
    models = models if models is not None else build_models(kinds, bench_shape, device, dtype)
    rows = []
    for prompt_len in prompt_lens:
        tasks = {}
        for kind in kinds:
            model = models[kind]
            inputs = build_inputs(
                family_of(kind), bench_shape, batch_size=1, text_len=prompt_len, device=device, dtype=DTYPES[dtype]
            )
            tasks[kind] = generation_task(model, inputs, 2, synchronize, now)
        with torch.inference_mode():
            results = interleave(tasks, repeats=repeats, warmup=warmup)
        rows.append(
            {
                "prompt_len": prompt_len,
                "ttft_seconds": summary(results, "ttft_seconds"),
                "ratio_mma_over_llava": paired_ratio(results, "ttft_seconds", "mma", "llava")["median"],
            }
        )
    return {"rows": rows}


def decode_step(model: torch.nn.Module, inputs: dict) -> Callable[[], None]:
    """A function running one decode step (one new token on the prompt's KV cache), the cache reset each call."""
    with torch.inference_mode():
        prefill = model(**inputs, use_cache=True)
    cache = prefill.cache
    length = inputs["input_ids"].shape[1]
    token = prefill.logits[:, -1:].argmax(-1)
    attention_mask = torch.ones(1, length + 1, dtype=torch.long, device=token.device)
    position_ids = torch.tensor([[length]], device=token.device)
    modality_ids = torch.ones(1, dtype=torch.long, device=token.device)

    def step() -> None:
        with torch.inference_mode():
            model(
                input_ids=token,
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=cache,
                modality_ids=modality_ids,
                use_cache=True,
            )
        cache.crop(-1)  # drop the new entry, so every call sees the same cache

    return step


def paired_step_ratios(
    shape: str = "cpu",
    device: str = "cpu",
    dtype: str = "float32",
    decode_pairs: int = 300,
    ttft_pairs: int = 40,
    threads: int | None = None,
    models: dict[str, torch.nn.Module] | None = None,
) -> dict:
    """
    MMA's cost against the base LaVIN, measured step by step: single decode steps (one token on the prompt's KV
    cache) and whole times to first token (`generate(max_new_tokens=1)`: vision tower and prefill), alternating
    between the models call by call (A B C, C B A, ...) and taking the time ratio within each round. A slow phase of
    the machine then hits both sides of a ratio, which whole-generation repeats cannot ensure on a shared machine.

    Returns:
        For `mma` and `mma_merged`, the median and quartiles of `time / base time` per round, for `decode_step` and
        `ttft`, and the decode speed ratio `1 / median time ratio`.
    """
    if threads:
        torch.set_num_threads(threads)
    bench_shape = get_shape(shape)
    synchronize = synchronizer(device)
    kinds = ("lavin", "mma", "mma_merged")
    models = models if models is not None else build_models(kinds, bench_shape, device, dtype)
    inputs = build_inputs(
        "lavin", bench_shape, batch_size=1, text_len=bench_shape.prompt_len, device=device, dtype=DTYPES[dtype]
    )

    def first_token(model: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                model.generate(**inputs, max_new_tokens=1, do_sample=False, pad_token_id=PAD_TOKEN_ID)

        return run

    measured = {
        "decode_step": ({kind: decode_step(models[kind], inputs) for kind in kinds}, decode_pairs),
        "ttft": ({kind: first_token(models[kind]) for kind in kinds}, ttft_pairs),
    }
    report: dict = {"decode_pairs": decode_pairs, "ttft_pairs": ttft_pairs}
    for name, (functions, rounds) in measured.items():
        results = interleave({kind: timed(f, synchronize) for kind, f in functions.items()}, rounds, warmup=2)
        report[name] = {
            "seconds": summary(results, "seconds"),
            **{f"{kind}_over_lavin": _quartiles(results, kind) for kind in kinds[1:]},
        }
    for kind in kinds[1:]:
        report[f"{kind}_decode_speed_over_lavin"] = 1 / report["decode_step"][f"{kind}_over_lavin"]["median"]
    return report


def _quartiles(results: dict[str, list[Metrics]], kind: str) -> dict[str, float]:
    ratios = [a["seconds"] / b["seconds"] for a, b in zip(results[kind], results["lavin"], strict=True)]
    low, median, high = statistics.quantiles(ratios, n=4)
    return {"median": statistics.median(ratios), "q1": low, "q3": high, "rounds": len(ratios)}


def _clock(name: str, device: str, threads: int | None) -> Callable[[], float]:
    if name not in CLOCKS:
        raise ValueError(f"Unknown clock {name!r}; choose from {', '.join(CLOCKS)}.")
    if name == "cpu" and (torch.device(device).type != "cpu" or threads != 1):
        raise ValueError("--clock cpu measures one thread's CPU time: use it with --device cpu --threads 1.")
    return CLOCKS[name]


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--shape", default="cpu", help="toy, cpu or 7b (see benchmarks/shapes.py).")
    parser.add_argument("--device", default="cpu", help="cpu or cuda.")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="Weights dtype.")
    parser.add_argument("--prompt_len", type=int, default=None, help="Override the prompt's text tokens.")
    parser.add_argument("--new_tokens", type=int, default=None, help="Override the tokens generated per call.")
    parser.add_argument("--repeats", type=int, default=5, help="Timed repeats per model.")
    parser.add_argument("--warmup", type=int, default=1, help="Untimed warm-up repeats per model.")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads on CPU (0: torch's default); see README."
    )
    parser.add_argument(
        "--clock",
        default="wall",
        choices=sorted(CLOCKS),
        help="wall: elapsed time; cpu: the thread's CPU time (CPU, 1 thread), robust to other load on the machine.",
    )
    return parser


def run(args: argparse.Namespace) -> dict:
    overrides = {"prompt_len": args.prompt_len, "new_tokens": args.new_tokens}
    settings = {"shape": args.shape, "overrides": overrides, "device": args.device, "dtype": args.dtype}
    clock = getattr(args, "clock", "wall")
    if args.threads:
        torch.set_num_threads(args.threads)
    # The same four models serve every measurement: weights never depend on the prompt sizes.
    models = build_models(GENERATION_KINDS, get_shape(args.shape), args.device, args.dtype)
    result = generation_speed(
        **settings, repeats=args.repeats, warmup=args.warmup, threads=args.threads, clock=clock, models=models
    )
    sweep = ttft_by_prompt_length(
        args.shape, args.device, args.dtype, threads=args.threads, clock=clock, models=models
    )
    settings |= {"repeats": args.repeats, "warmup": args.warmup, "clock": clock}
    paired = paired_step_ratios(args.shape, args.device, args.dtype, threads=args.threads, models=models)
    return {"settings": settings, **result, "ttft_sweep": sweep, "paired_steps": paired}


def main() -> None:
    args = add_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0])).parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps({"machine": describe_machine(args.device), "generation": run(args)}, indent=2))


if __name__ == "__main__":
    main()
