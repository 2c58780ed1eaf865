"""Interleaved measurements: warm-ups, then repeats in alternating order, medians and pairwise median ratios.

Each repeat runs every task once, in forward order on even repeats and reversed on odd ones (A B, B A, ...), so a slow
drift of the machine (thermal, other load) hits both sides of a pair alike; the ratio is taken within each repeat
and its median reported.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

Metrics = dict[str, float]


def synchronizer(device: str | torch.device) -> Callable[[], None]:
    """A function that waits for the device's queued work (a no-op on CPU)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def timed(function: Callable[[], object], synchronize: Callable[[], None]) -> Callable[[], Metrics]:
    """Wrap `function` into a task that returns its wall time as `{"seconds": ...}`."""

    def task() -> Metrics:
        synchronize()
        start = time.perf_counter()
        function()
        synchronize()
        return {"seconds": time.perf_counter() - start}

    return task


def interleave(tasks: dict[str, Callable[[], Metrics]], repeats: int, warmup: int) -> dict[str, list[Metrics]]:
    """Run `warmup` untimed rounds, then `repeats` rounds in alternating order; return each task's metrics."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"Need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}.")
    names = list(tasks)
    for _ in range(warmup):
        for name in names:
            tasks[name]()
    results: dict[str, list[Metrics]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else reversed(names):
            results[name].append(tasks[name]())
    return results


def summary(results: dict[str, list[Metrics]], metric: str) -> dict[str, float]:
    """Median of `metric` per task."""
    return {name: statistics.median(run[metric] for run in runs) for name, runs in results.items()}


def paired_ratio(results: dict[str, list[Metrics]], metric: str, numerator: str, denominator: str) -> dict:
    """Median, min and max over repeats of `metric[numerator] / metric[denominator]`, taken repeat by repeat."""
    ratios = [a[metric] / b[metric] for a, b in zip(results[numerator], results[denominator], strict=True)]
    return {
        "median": statistics.median(ratios),
        "min": min(ratios),
        "max": max(ratios),
        "repeats": len(ratios),
    }
