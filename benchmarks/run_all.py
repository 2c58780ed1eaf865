"""Run every benchmark at one shape and write `benchmarks/results/<tag>.json` and `<tag>.md`.

python -m benchmarks.run_all --shape cpu                                   # a few minutes on 2 CPU cores
python -m benchmarks.run_all --shape 7b --device cuda --dtype bfloat16     # one GPU: comparison + throughput
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from . import bench_generation, bench_training
from .machine import describe_machine
from .report import check_targets, to_markdown
from .shapes import get_shape

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _load() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def run_all(args: argparse.Namespace) -> dict:
    """All benchmarks selected by `args`; the result as written to JSON."""
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = get_shape(
        args.shape,
        batch_size=args.batch_size,
        text_len=args.text_len,
        prompt_len=args.prompt_len,
        new_tokens=args.new_tokens,
    )
    machine = describe_machine(args.device) | {"load_average_before": _load()}
    result: dict = {
        "machine": machine,
        "settings": {
            "shape": args.shape,
            "device": args.device,
            "dtype": args.dtype,
            "load_in_4bit": args.load_in_4bit,
            "gradient_checkpointing": args.gradient_checkpointing,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "shape_fields": shape.to_dict(),
        },
    }
    if not args.skip_training:
        args.throughput = args.throughput or torch.device(args.device).type == "cuda"
        result["training"] = bench_training.run(args)
    if not args.skip_generation:
        generation_args = argparse.Namespace(**vars(args))
        generation_args.warmup = max(1, args.warmup - 1)
        result["generation"] = bench_generation.run(generation_args)
    machine["load_average_after"] = _load()
    result["targets"] = check_targets(result)
    result["notes"] = list(args.note or [])
    return result


def main() -> None:
    parser = bench_training.add_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument("--prompt_len", type=int, default=None, help="Override the generation prompt's text tokens.")
    parser.add_argument("--new_tokens", type=int, default=None, help="Override the tokens generated per call.")
    parser.add_argument("--skip_training", action="store_true")
    parser.add_argument("--skip_generation", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="Directory for <tag>.json and <tag>.md.")
    parser.add_argument("--tag", default=None, help="File name stem (default: <shape>-<device>).")
    parser.add_argument("--note", action="append", help="A note for the report (repeatable).")
    args = parser.parse_args()
    result = run_all(args)
    tag = args.tag or f"{args.shape}-{torch.device(args.device).type}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    markdown = to_markdown(result)
    (args.out / f"{tag}.md").write_text(markdown + "\n")
    print(markdown)


if __name__ == "__main__":
    main()
