"""Markdown summary and memory plot of one `gpu_check` run: what each section measured, against the GPU targets.

python -m benchmarks.gpu_report benchmarks/results/gpu   # -> summary.md, memory_over_steps.png in that folder
"""

import argparse
import json
from pathlib import Path

from matplotlib.figure import Figure

# bf16 LLaMA-7B + ViT-L/14: 4 N T FLOPs per sample at 512 tokens is 3.5e14 FLOP/s for 25 samples/s.
TARGET_SAMPLES_PER_SECOND = 25.0
TARGET_MEMORY_GIB = 24.0
TARGET_UNMERGED_DECODE = 0.98
TARGET_MERGED_DECODE = 0.98


def _load(folder: Path, name: str) -> dict | None:
    path = folder / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _largest_batch(row: dict, cap: str) -> str:
    fit = row.get("fits", {}).get(cap, {})
    verified = fit.get("verified_batch")
    if verified == 0:
        return "none"
    if verified is None:
        # The search stopped after its tries ran out of memory: the measured batch bounds it from below.
        failed = min((failure["batch"] for failure in fit.get("failed", [])), default=None)
        ran = row["batch_size"] if row["peak_gib"] <= fit.get("cap_gib", 0) else None
        if failed is None:
            return "-"
        return f"{ran}-{failed - 1} ({failed} ran out)" if ran else f"< {failed}"
    return f"{verified}{' (the most tried)' if fit.get('capped_at_max') and verified == 64 else ''}"


def _throughput_rows(throughput: dict) -> list[str]:
    lines = [
        "| model | checkpointing | 4-bit LLM | tokens/sample | samples/s | % of dense peak | % of measured matmul "
        "| peak GiB (batch 8) | largest batch in 24 GB | in 80 GB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in throughput["rows"]:
        name = "LaVIN + MMA" if row["kind"] == "mma" else "LLaVA-1.5 + LoRA r=128"
        lines.append(
            f"| {name} | {'yes' if row['gradient_checkpointing'] else 'no'} | {'NF4' if row['load_in_4bit'] else '-'} "
            f"| {row['sequence_length']} | {row['samples_per_second']:.2f} "
            f"| {100 * row['utilisation_of_datasheet_peak']:.1f} | {100 * row['utilisation_of_measured_matmul']:.1f} "
            f"| {row['peak_gib']:.1f} | {_largest_batch(row, '24GB')} | {_largest_batch(row, '80GB')} |"
        )
    return lines


def _memory_plot(memory: dict, path: Path) -> dict:
    steps = memory["steps"]
    figure = Figure(figsize=(7, 3.5))
    axes = figure.subplots()
    numbers = [step["step"] for step in steps]
    for key, label in (("allocated_gib", "allocated"), ("reserved_gib", "reserved"), ("peak_gib", "peak so far")):
        axes.plot(numbers, [step[key] for step in steps], label=label)
    axes.set_xlabel("training step")
    axes.set_ylabel("GiB")
    axes.set_title(f"LaVIN-7B + MMA, bf16, batch {memory['batch_size']}, checkpointing: memory per step")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    allocated = [step["allocated_gib"] for step in steps[1:]]
    return {"steps": len(steps), "allocated_spread_gib": max(allocated) - min(allocated), "last": steps[-1]}


def render(folder: Path) -> str:
    """The summary of the run in `folder`; writes `memory_over_steps.png` there too."""
    summary = _load(folder, "gpu_check") or {}
    machine = summary.get("machine", {})
    lines = [
        f"# GPU check: {machine.get('gpu', '?')}, torch {machine.get('torch', '?')}, "
        f"transformers {machine.get('transformers', '?')}, peft {machine.get('peft', '?')}",
        "",
        "Random weights at LLaMA-7B + CLIP ViT-L/14 shapes, bf16. Sections (return code or timeout): "
        + ", ".join(f"{name} {info.get('returncode', info)}" for name, info in summary.get("sections", {}).items()),
        "",
    ]
    throughput = _load(folder, "throughput")
    if throughput:
        best = max(row["samples_per_second"] for row in throughput["rows"] if row["kind"] == "mma")
        lines += [
            "## Training throughput and memory",
            "",
            f"Batch {throughput['batch_size']}; utilisation from 4 N T FLOPs per sample against the datasheet's "
            f"{throughput['peak_tflops_datasheet']:.0f} TFLOP/s and against the {throughput['matmul_bf16_tflops_measured']:.0f} "
            "TFLOP/s a large bf16 matmul reached on this device.",
            "",
            *_throughput_rows(throughput),
            "",
            f"Target >= {TARGET_SAMPLES_PER_SECOND:.0f} samples/s: best MMA row {best:.2f} "
            f"({'met' if best >= TARGET_SAMPLES_PER_SECOND else 'not met'}).",
            "",
        ]
    memory = _load(folder, "memory_over_steps")
    if memory and memory.get("steps"):
        plot = _memory_plot(memory, folder / "memory_over_steps.png")
        lines += [
            "## Memory over training steps",
            "",
            f"{plot['steps']} steps ran in the section's time (200 asked); allocated memory after step 1 varies by "
            f"{plot['allocated_spread_gib'] * 1024:.1f} MiB, last step: allocated {plot['last']['allocated_gib']:.2f} "
            f"GiB, reserved {plot['last']['reserved_gib']:.2f} GiB, peak {plot['last']['peak_gib']:.2f} GiB "
            "(`memory_over_steps.png`).",
            "",
        ]
    generation = _load(folder, "generation")
    if generation:
        paired = generation["paired_steps"]
        unmerged, merged = paired["mma_decode_speed_over_lavin"], paired["mma_merged_decode_speed_over_lavin"]
        ttft = paired["ttft"]["mma_over_lavin"]["median"]
        lines += [
            "## Generation",
            "",
            f"Paired decode steps ({paired['decode_pairs']} rounds): unmerged MMA decodes at {unmerged:.3f}x the base "
            f"(target >= {TARGET_UNMERGED_DECODE}: {'met' if unmerged >= TARGET_UNMERGED_DECODE else 'not met'}), "
            f"merged at {merged:.3f}x (target within 2%: {'met' if merged >= TARGET_MERGED_DECODE else 'not met'}); "
            f"time to first token with an image, MMA / base LaVIN: {ttft:.2f}x.",
            "",
        ]
    for name in ("fsdp", "fsdp-rerun"):
        fsdp = _load(folder, name)
        if fsdp:
            lines += [f"## Launchers ({name}.json)", ""]
            for launcher, result in fsdp.items():
                lines.append(
                    f"- `{launcher}`: return code {result['returncode']}, {result['seconds']:.0f} s, adapter written: "
                    f"{result['adapter_written']}, {len(result['loss_lines'])} loss lines"
                )
            lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    folder = parser.parse_args().folder
    (folder / "summary.md").write_text(render(folder))
    print((folder / "summary.md").read_text())


if __name__ == "__main__":
    main()
