"""Targets and the Markdown rendering of a benchmark result (the JSON written by `run_all`)."""

from __future__ import annotations


def _get(result: dict, *path: str):
    value = result
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def check_targets(result: dict) -> list[dict]:
    """The issue's targets, each with the measured value and whether it is met (`None`: not measured here)."""
    training, generation = result.get("training", {}), result.get("generation", {})
    ratios = generation.get("ratios", {})
    merged_decode = _get(ratios, "mma_merged_over_lavin", "decode_tokens_per_second", "median")
    paired = generation.get("paired_steps", {})
    targets = [
        (
            "training step time, MMA / LLaVA+LoRA",
            "<= 0.60",
            _get(training, "time", "ratio_mma_over_llava_lora", "median"),
            lambda v: v <= 0.60,
        ),
        (
            "training peak memory, MMA / LLaVA+LoRA",
            "<= 0.70",
            _get(training, "memory", "ratio_peak_mma_over_llava_lora"),
            lambda v: v <= 0.70,
        ),
        (
            "time to first token (image prompt), MMA / LLaVA",
            "<= 0.30",
            _get(ratios, "mma_over_llava", "ttft_seconds", "median"),
            lambda v: v <= 0.30,
        ),
        (
            "decode tokens/s, MMA unmerged / base",
            ">= 0.95",
            _get(ratios, "mma_over_lavin", "decode_tokens_per_second", "median"),
            lambda v: v >= 0.95,
        ),
        ("decode tokens/s, MMA merged / base", "0.98 - 1.02", merged_decode, lambda v: abs(v - 1) <= 0.02),
        (
            "time to first token, MMA unmerged / base (paired steps)",
            "<= 1.05",
            _get(paired, "ttft", "mma_over_lavin", "median"),
            lambda v: v <= 1.05,
        ),
        (
            "decode speed, MMA unmerged / base (paired steps)",
            ">= 0.98",
            paired.get("mma_decode_speed_over_lavin"),
            lambda v: v >= 0.98,
        ),
        (
            "decode speed, MMA merged / base (paired steps)",
            "0.98 - 1.02",
            paired.get("mma_merged_decode_speed_over_lavin"),
            lambda v: abs(v - 1) <= 0.02,
        ),
    ]
    rows = [
        {"target": name, "goal": goal, "measured": value, "met": None if value is None else bool(test(value))}
        for name, goal, value, test in targets
    ]
    on_gpu_7b = result.get("settings", {}).get("shape") == "7b" and "cuda" in result.get("settings", {}).get(
        "device", ""
    )
    bf16_rows = [
        row
        for row in training.get("throughput", [])
        if not row.get("load_in_4bit") and not row.get("gradient_checkpointing") and "samples_per_second" in row
    ]
    rate = bf16_rows[0]["samples_per_second"] if (on_gpu_7b and bf16_rows) else None
    rows.append(
        {
            "target": "7B training, samples/s at 512 tokens on one GPU (bf16)",
            "goal": ">= 25",
            "measured": rate,
            "met": None if rate is None else rate >= 25,
        }
    )
    return rows


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.3e}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(cell) for cell in row) + " |" for row in rows]
    return lines + [""]


def to_markdown(result: dict) -> str:
    """A human-readable report of one `run_all` result."""
    machine, settings = result["machine"], result["settings"]
    lines = [f"# Benchmark: shape `{settings['shape']}` on {settings['device']} ({settings['dtype']})", ""]
    lines += ["## Machine", ""]
    lines += _table(["field", "value"], [[key, value] for key, value in machine.items()])
    lines += ["## Settings", ""]
    lines += _table(["field", "value"], [[key, value] for key, value in settings.items() if key != "shape_fields"])
    lines += _table(["shape field", "value"], [[key, value] for key, value in settings["shape_fields"].items()])

    lines += ["## Targets", ""]
    lines += _table(
        ["target", "goal", "measured", "met"],
        [[row["target"], row["goal"], row["measured"], row["met"]] for row in result["targets"]],
    )

    training = result.get("training", {})
    if "time" in training:
        time, memory = training["time"], training["memory"]
        ratio = time["ratio_mma_over_llava_lora"]
        lines += ["## Training step (forward + backward + AdamW)", ""]
        lines += _table(
            ["model", "tokens/sample", "batch", "median step s", "model MiB", "peak MiB", "peak - model MiB"],
            [
                [
                    kind,
                    time["sequence_length"][kind],
                    time["batch_size"],
                    time["step_seconds"][kind],
                    memory[kind]["model_mib"],
                    memory[kind]["peak_mib"],
                    memory[kind]["overhead_mib"],
                ]
                for kind in ("mma", "llava_lora")
            ],
        )
        lines += [
            f"MMA / LLaVA+LoRA step time: median {_fmt(ratio['median'])} (min {_fmt(ratio['min'])}, "
            f"max {_fmt(ratio['max'])}, {ratio['repeats']} paired repeats). Peak memory: "
            f"{_fmt(memory['ratio_peak_mma_over_llava_lora'])}; peak minus resident model: "
            f"{_fmt(memory['ratio_overhead_mma_over_llava_lora'])} (meter: {memory['mma']['meter']}).",
            "",
        ]
    if "parameters" in training:
        lines += ["## Trainable parameters", ""]
        lines += _table(
            ["shape", "MMA trainable", "LLaVA+LoRA trainable", "ratio", "MMA total", "LLaVA+LoRA total"],
            [
                [
                    name,
                    counts["mma"]["trainable"],
                    counts["llava_lora"]["trainable"],
                    counts["ratio_mma_over_llava_lora"],
                    counts["mma"]["total"],
                    counts["llava_lora"]["total"],
                ]
                for name, counts in training["parameters"].items()
            ],
        )
    if training.get("throughput"):
        lines += ["## MMA training throughput", ""]
        header = ["4-bit", "grad. ckpt", "batch", "tokens", "step s", "samples/s", "est. TFLOP/s", "util.", "peak MiB"]
        rows = []
        for row in training["throughput"]:
            if "error" in row:
                rows.append([row["load_in_4bit"], row["gradient_checkpointing"], "error", row["error"][-80:]])
                rows[-1] += [None] * (len(header) - len(rows[-1]))
                continue
            rows.append(
                [
                    row["load_in_4bit"],
                    row["gradient_checkpointing"],
                    row["batch_size"],
                    row["sequence_length"],
                    row["step_seconds"],
                    row["samples_per_second"],
                    row["achieved_tflops_estimate"],
                    row["utilisation"],
                    row["peak_mib"],
                ]
            )
        lines += _table(header, rows)
        lines += ["Utilisation = samples/s x 4 N T FLOP (N: LLM parameters, T: tokens) / the device's dense peak.", ""]

    generation = result.get("generation")
    if generation:
        lines += ["## Generation (batch 1, greedy)", ""]
        lines += _table(
            ["model", "prompt tokens", "median TTFT s", "median decode tokens/s"],
            [
                [
                    kind,
                    generation["prompt_length"][kind],
                    generation["ttft_seconds"][kind],
                    generation["decode_tokens_per_second"][kind],
                ]
                for kind in generation["ttft_seconds"]
            ],
        )
        lines += _table(
            ["ratio (median of paired repeats)", "TTFT", "decode tokens/s"],
            [
                [name, values["ttft_seconds"]["median"], values["decode_tokens_per_second"]["median"]]
                for name, values in generation["ratios"].items()
            ],
        )
    if generation and generation.get("ttft_sweep"):
        lines += ["TTFT against prompt length (text tokens after the image):", ""]
        lines += _table(
            ["prompt tokens", "MMA TTFT s", "LLaVA TTFT s", "MMA / LLaVA"],
            [
                [
                    row["prompt_len"],
                    row["ttft_seconds"]["mma"],
                    row["ttft_seconds"]["llava"],
                    row["ratio_mma_over_llava"],
                ]
                for row in generation["ttft_sweep"]["rows"]
            ],
        )
    paired = generation.get("paired_steps") if generation else None
    if paired:
        lines += [
            f"MMA against the base LaVIN, step by step ({paired['decode_pairs']} alternating decode steps, "
            f"{paired['ttft_pairs']} alternating first tokens; time ratios, median and quartiles per round):",
            "",
        ]
        lines += _table(
            ["model", "decode step time / base", "decode speed / base", "TTFT / base"],
            [
                [
                    kind,
                    f"{_fmt(paired['decode_step'][f'{kind}_over_lavin']['median'])} "
                    f"({_fmt(paired['decode_step'][f'{kind}_over_lavin']['q1'])}-"
                    f"{_fmt(paired['decode_step'][f'{kind}_over_lavin']['q3'])})",
                    paired[f"{kind}_decode_speed_over_lavin"],
                    f"{_fmt(paired['ttft'][f'{kind}_over_lavin']['median'])} "
                    f"({_fmt(paired['ttft'][f'{kind}_over_lavin']['q1'])}-"
                    f"{_fmt(paired['ttft'][f'{kind}_over_lavin']['q3'])})",
                ]
                for kind in ("mma", "mma_merged")
            ],
        )
    if result.get("notes"):
        lines += ["## Notes", ""] + [f"- {note}" for note in result["notes"]] + [""]
    return "\n".join(lines)
