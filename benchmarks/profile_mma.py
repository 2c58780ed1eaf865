"""Where MMA's inference time goes, part by part, against the base LaVIN at the same shape.

Times, interleaved with the base model (medians of the repeats):
- the vision tower with and without the routed vision adapters (`get_image_features`);
- the routing pass (`run_routing_pass`: the two modality tokens through the decoder), once per parameter state;
- one decode step (a one-token forward on a KV cache) of the base, of MMA unmerged and of MMA merged;
- the LLM adapters alone in a decode step (`MMALayer.adapt` on one token, every layer);
- the floor: a decode step whose adapters only do the two matmuls every unmerged adapter needs (`adapter_floor`);
and the number of aten operators one decode step runs (torch.profiler), the cost that dominates small steps.

    python -m benchmarks.profile_mma --shape cpu --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from transformers_lavin.mma import MMALayer
from transformers_lavin.mma.routing import find_router, run_routing_pass

from .bench_generation import DTYPES, decode_step
from .inputs import build_inputs
from .models import build_model
from .shapes import get_shape
from .timing import interleave, summary, synchronizer, timed


def _count_ops(function: callable) -> int:
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        function()
    return sum(event.count for event in profiler.key_averages() if event.key.startswith("aten::"))


def profile_inference(
    shape: str = "cpu", device: str = "cpu", dtype: str = "float32", repeats: int = 7, warmup: int = 2
) -> dict:
    """The part-by-part times (seconds) and decode operator counts described in the module docstring."""
    bench_shape = get_shape(shape)
    models = {
        kind: build_model(kind, bench_shape, device=device, dtype=DTYPES[dtype]).eval()
        for kind in ("lavin", "mma", "mma_merged")
    }
    inputs = build_inputs(
        "lavin", bench_shape, batch_size=1, text_len=bench_shape.prompt_len, device=device, dtype=DTYPES[dtype]
    )
    synchronize = synchronizer(device)
    router = find_router(models["mma"])
    with torch.inference_mode():
        routing = router.rows(torch.ones(1, dtype=torch.long, device=device))
    adapters = [m for m in models["mma"].modules() if isinstance(m, MMALayer) and m.routing_key is not None]
    one_token = torch.randn(1, 1, bench_shape.llm_hidden, device=device, dtype=DTYPES[dtype])

    def run_adapters() -> None:
        with torch.inference_mode():
            for adapter in adapters:
                adapter.adapt(one_token, routing)

    def vision(model: torch.nn.Module) -> callable:
        def run() -> None:
            with torch.inference_mode():
                model.get_image_features(inputs["pixel_values"])

        return run

    def routing_pass() -> None:
        with torch.inference_mode():
            run_routing_pass(router.decoder, router.modality_embeddings())

    steps = {kind: decode_step(model, inputs) for kind, model in models.items()}
    tasks = {
        "vision_base": timed(vision(models["lavin"]), synchronize),
        "vision_mma": timed(vision(models["mma"]), synchronize),
        "routing_pass": timed(routing_pass, synchronize),
        "llm_adapters_one_token": timed(run_adapters, synchronize),
        **{f"decode_step_{kind}": timed(step, synchronize) for kind, step in steps.items()},
    }
    seconds = summary(interleave(tasks, repeats=repeats, warmup=warmup), "seconds")
    return {
        "seconds": seconds,
        "decode_aten_ops": {kind: _count_ops(step) for kind, step in steps.items()},
        "llm_adapters": len(adapters),
    }


def adapter_floor(
    shape: str = "cpu", device: str = "cpu", dtype: str = "float32", rounds: int = 300
) -> dict[str, float]:
    """
    The least an unmerged adapter can cost a decode step, measured beside MMA: a third model whose LLM adapters are
    replaced by the two matmuls any unmerged adapter needs, `x + (A x + a) M + c` for the image rows' `M`, `c` prepared
    beforehand, with no routing hook at all. Alternating decode steps (as `paired_step_ratios`), median time ratio to
    the base LaVIN per round.
    """
    bench_shape = get_shape(shape)
    kinds = ("lavin", "mma", "floor")
    models = {
        kind: build_model(
            "lavin" if kind == "lavin" else "mma", bench_shape, device=device, dtype=DTYPES[dtype]
        ).eval()
        for kind in kinds
    }
    router = find_router(models["floor"])
    with torch.inference_mode():
        table = router.table()
        for layer in router.llm_layers:
            up, bias = layer.mixed_up_projection("default", table[layer.routing_key][1:])
            down = layer.mma_down["default"]

            def minimal(x, routing=None, down=down, up=up, bias=bias):
                return torch.baddbmm(x + bias, F.linear(x, down.weight, down.bias), up)

            layer.adapt = minimal
    router.remove()
    inputs = build_inputs(
        "lavin", bench_shape, batch_size=1, text_len=bench_shape.prompt_len, device=device, dtype=DTYPES[dtype]
    )
    steps = {kind: timed(decode_step(model, inputs), synchronizer(device)) for kind, model in models.items()}
    results = interleave(steps, repeats=rounds, warmup=2)
    return {
        f"{kind}_step_time_over_lavin": statistics.median(
            a["seconds"] / b["seconds"] for a, b in zip(results[kind], results["lavin"], strict=True)
        )
        for kind in kinds[1:]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU (0: torch's default).")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = profile_inference(args.shape, args.device, args.dtype, args.repeats, args.warmup)
    result["adapter_floor"] = adapter_floor(args.shape, args.device, args.dtype)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
