"""Does MMA keep a VLM's text-only ability while it learns images? MMA, LoRA and LoRA with text replay, over seeds.

LaVIN's claim: the router inside every MMA adapter lets one model switch between a text-only path and an image path,
so learning images does not cost the LLM its text ability. Measured on the tiny LLaVA of `bench_vlm_adapters` (its
LLM first pretrained on the synthetic set's text, as in `lavin-demo`; same builder, imported), fine-tuned on
**image questions only**, and scored on held-out image and text-only questions before and after:

- `mma`: `MMAConfig()` on the LLaVA (the tuner's modality token), projector trained in full;
- `lora`: the LLaVA-1.5 recipe (r=128, alpha=256, dropout 0.05 on every linear layer of the LLM), projector in full;
- `lora_text`: the same LoRA, each step's batch holding the same image rows as the other methods' plus `text_rows`
  text-only questions of the training split (the questions the LLM was pretrained on): the usual remedy, replay;
- `mma_text`: MMA with the same text rows mixed in (the paper's own setting trains on mixed batches);
- `lavin_mma`: the tiny LaVIN whose LLM is the same pretrained one (its own vision path: LaVIN's projector and its
  own modality token), with `MMAConfig()`, on the same image rows.

Every method runs the same number of optimizer steps on the same image rows in the same order (AdamW, cosine
schedule, `bench_vlm_adapters.fine_tune`). Each seed draws its own data set, LLM pretraining, vision tower, batches
and adapter initialisation; each method's learning rate is chosen per seed, from three around its recipe's, by
accuracy on that seed's validation split (image and text-only questions together, as `bench_vlm_adapters` does);
the test split is scored for every run, and selection by image validation accuracy alone is reported beside it.

    python -m benchmarks.bench_text_retention              # ~21 min CPU time, 1 thread -> results/text-retention-cpu.*
    python -m benchmarks.bench_text_retention --size toy   # seconds: the smoke test's size
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import datasets
import torch
import transformers
from matplotlib.figure import Figure
from peft import get_peft_model
from transformers import AutoModelForImageTextToText

from transformers_lavin import MMAConfig
from transformers_lavin.evaluation.multiple_choice import score_choice_texts
from transformers_lavin.mma import compute_routing_table
from transformers_lavin.processing_lavin import LavinProcessor

from .bench_vlm_adapters import LEARNING_RATES, collate, fine_tune, prepare, prepared_splits
from .machine import describe_machine
from .models import count_parameters, llava_lora_config
from .report import _table

METHODS = ("mma", "lora", "lora_text", "mma_text", "lavin_mma")
LABELS = {
    "mma": "LLaVA + MMA",
    "lora": "LLaVA + LoRA",
    "lora_text": "LLaVA + LoRA, text rows mixed in",
    "mma_text": "LLaVA + MMA, text rows mixed in",
    "lavin_mma": "LaVIN + MMA",
}
# Which saved base each method adapts, whether with LoRA (else MMA), and whether its batches hold text-only rows.
BASES = {
    "mma": "base_dir",
    "lora": "base_dir",
    "lora_text": "base_dir",
    "mma_text": "base_dir",
    "lavin_mma": "lavin_dir",
}
WITH_LORA = {"lora", "lora_text"}
WITH_TEXT_ROWS = {"lora_text", "mma_text"}
RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Size:
    """How much data, pretraining and adaptation one seed does, and which seeds run."""

    num_train: int
    num_val: int
    num_test: int
    pretrain_steps: int
    steps: int
    batch_size: int  # image rows per step (every method), and the LLM's pretraining batch
    text_rows: int  # text-only rows added to each step of `lora_text`
    seeds: tuple[int, ...]
    learning_rates: dict[str, tuple[float, ...]]


SIZES = {
    "cpu": Size(
        6000,
        256,
        512,
        pretrain_steps=600,
        steps=300,
        batch_size=16,
        text_rows=16,
        seeds=(0, 1, 2),
        learning_rates={
            "mma": LEARNING_RATES["mma"],
            "lora": LEARNING_RATES["lora"],
            "lora_text": LEARNING_RATES["lora"],
            "mma_text": LEARNING_RATES["mma"],
            "lavin_mma": LEARNING_RATES["mma"],
        },
    ),
    "toy": Size(
        64,
        16,
        16,
        pretrain_steps=2,
        steps=2,
        batch_size=4,
        text_rows=4,
        seeds=(0, 1),
        learning_rates={
            "mma": (1e-2,),
            "lora": (1e-3, 3e-3),
            "lora_text": (1e-3,),
            "mma_text": (1e-2,),
            "lavin_mma": (1e-2,),
        },
    ),
}


def adapted(method: str, prepared: dict) -> torch.nn.Module:
    """The method's saved base (the LLaVA, or the LaVIN for `lavin_mma`) with its adapters, in training mode."""
    base = AutoModelForImageTextToText.from_pretrained(prepared[BASES[method]])
    config = llava_lora_config() if method in WITH_LORA else MMAConfig()
    return get_peft_model(base, config).train()


def split_by_modality(rows: datasets.Dataset) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(rows with an image, text-only rows)."""
    has_image = [len(images) > 0 for images in rows["images"]]
    image = rows.select([i for i, flag in enumerate(has_image) if flag])
    text = rows.select([i for i, flag in enumerate(has_image) if not flag])
    return image, text


def retention_batches(
    image_rows: datasets.Dataset, text_rows: datasets.Dataset, processor: LavinProcessor, size: Size, seed: int
) -> dict[str, list[dict]]:
    """
    `image_only`: `steps` batches of `batch_size` image rows; `with_text`: the same image rows, step by step, each
    batch followed by `text_rows` text-only rows.
    """
    generator = torch.Generator().manual_seed(seed)
    image_picks = torch.randint(len(image_rows), (size.steps, size.batch_size), generator=generator).tolist()
    text_picks = torch.randint(len(text_rows), (size.steps, size.text_rows), generator=generator).tolist()
    image_only, with_text = [], []
    for images, texts in zip(image_picks, text_picks, strict=True):
        rows = [image_rows[i] for i in images]
        image_only.append(collate(rows, processor))
        with_text.append(collate(rows + [text_rows[i] for i in texts], processor))
    return {"image_only": image_only, "with_text": with_text}


def question_digest(dataset: datasets.Dataset) -> str:
    """A fingerprint of which questions, in which order, a score was computed on."""
    return hashlib.sha256(json.dumps(list(dataset["id"])).encode()).hexdigest()[:16]


def score(model: torch.nn.Module, processor: LavinProcessor, dataset: datasets.Dataset) -> dict:
    """Accuracy on image and on text-only questions, and which questions were answered right (`1`) or wrong."""
    result = score_choice_texts(model, processor, dataset)
    summary = result.summary()
    return {
        "image_accuracy": summary["image_accuracy"],
        "text_accuracy": summary["text_accuracy"],
        "accuracy": summary["accuracy"],
        "num_image": summary["num_image"],
        "num_text": summary["num_text"],
        "image_chance": summary["image_chance"],
        "text_chance": summary["text_chance"],
        "questions": question_digest(dataset),
        "correct": "".join("1" if flag else "0" for flag in result.correct),
    }


def changed(before: str, after: str, has_image: Sequence[bool], with_image: bool) -> dict[str, int]:
    """Questions of one kind answered right before and wrong after (`lost`), and the other way (`gained`)."""
    pairs = [(b, a) for b, a, flag in zip(before, after, has_image, strict=True) if flag == with_image]
    return {
        "lost": sum(b == "1" and a == "0" for b, a in pairs),
        "gained": sum(b == "0" and a == "1" for b, a in pairs),
    }


def routing(model: torch.nn.Module) -> dict:
    """
    MMA's routing weights per LLM layer for text-only inputs and inputs with an image, and `routing_gap`, the mean over
    layers of how differently the two are routed (|w0(text) - w0(image)|, 0: the same mix of the two up-projections).
    Empty for LoRA.
    """
    table = compute_routing_table(model)
    if table is None:
        return {}
    return {
        "routing_text": table[:, 0].tolist(),
        "routing_image": table[:, 1].tolist(),
        "routing_gap": (table[:, 0, 0] - table[:, 1, 0]).abs().mean().item(),
    }


def _progress(started: float, message: str) -> None:
    print(f"[{time.perf_counter() - started:6.0f} s] {message}", file=sys.stderr, flush=True)


def run_seed(size: Size, seed: int, workdir: Path, started: float) -> dict:
    """One seed: data, pretraining, both bases scored, every method at every learning rate trained and scored."""
    wall, cpu = time.perf_counter(), time.process_time()
    prepared = prepare(workdir, size, seed)
    _progress(started, f"seed {seed}: LLM pretrained on text, LLaVA and LaVIN bases saved")
    processor, train, val, test = prepared_splits(prepared)
    image_rows, text_rows = split_by_modality(train)
    batches = retention_batches(image_rows, text_rows, processor, size, seed)
    test_has_image = [len(images) > 0 for images in test["images"]]

    before = {}
    for base_key in ("base_dir", "lavin_dir"):
        base = AutoModelForImageTextToText.from_pretrained(prepared[base_key])
        before[base_key] = {"val": score(base, processor, val), "test": score(base, processor, test)}
    entry = {
        "seed": seed,
        "pretrain_losses": prepared["pretrain_losses"],
        "num_train_image_rows": len(image_rows),
        "num_train_text_rows": len(text_rows),
        "test_ids": list(test["id"]),
        "before": {"llava": before["base_dir"], "lavin": before["lavin_dir"]},
        "methods": {},
    }
    for method in METHODS:
        method_batches = batches["with_text" if method in WITH_TEXT_ROWS else "image_only"]
        runs = []
        for learning_rate in size.learning_rates[method]:
            torch.manual_seed(seed)
            model = adapted(method, prepared)
            losses = fine_tune(model, method_batches, learning_rate)
            runs.append(
                {
                    "learning_rate": learning_rate,
                    "loss_first": losses[0],
                    "loss_last_10": statistics.mean(losses[-10:]),
                    "val": score(model, processor, val),
                    "test": score(model, processor, test),
                    **routing(model),
                }
            )
            _progress(started, f"seed {seed}: {method} at lr {learning_rate} trained and scored")
        base_before = before[BASES[method]]["test"]
        for run in runs:
            run["test_changes"] = {
                kind: changed(base_before["correct"], run["test"]["correct"], test_has_image, kind == "image")
                for kind in ("image", "text")
            }
        entry["methods"][method] = {
            "parameters": count_parameters(model),
            "runs": runs,
            "chosen": _best(runs, "accuracy"),
            "chosen_by_image_val": _best(runs, "image_accuracy"),
        }
    entry["wall_seconds"] = round(time.perf_counter() - wall, 1)
    entry["cpu_seconds"] = round(time.process_time() - cpu, 1)
    return entry


def _best(runs: list[dict], key: str) -> int:
    """Index of the run with the best validation `key` (the first, i.e. lowest learning rate, on a tie)."""
    return max(range(len(runs)), key=lambda i: runs[i]["val"][key])


def _spread(values: Sequence[float]) -> dict:
    return {
        "mean": statistics.mean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "values": list(values),
    }


def aggregate(seeds: list[dict], selection: str = "chosen") -> dict:
    """Per method, over seeds: before and after (the run `selection` names) image and text-only test accuracy."""
    out = {}
    for method in METHODS:
        before_key = "lavin" if BASES[method] == "lavin_dir" else "llava"
        series = {key: [] for key in ("image_before", "image_after", "text_before", "text_after")}
        lost, gained, rates = [], [], []
        for entry in seeds:
            before = entry["before"][before_key]["test"]
            method_entry = entry["methods"][method]
            run = method_entry["runs"][method_entry[selection]]
            for kind in ("image", "text"):
                series[f"{kind}_before"].append(before[f"{kind}_accuracy"])
                series[f"{kind}_after"].append(run["test"][f"{kind}_accuracy"])
            lost.append(run["test_changes"]["text"]["lost"])
            gained.append(run["test_changes"]["text"]["gained"])
            rates.append(run["learning_rate"])
        summary = {key: _spread(values) for key, values in series.items()}
        for kind in ("image", "text"):
            deltas = [a - b for a, b in zip(series[f"{kind}_after"], series[f"{kind}_before"], strict=True)]
            summary[f"{kind}_change"] = _spread(deltas)
        summary["text_lost"], summary["text_gained"], summary["learning_rates"] = lost, gained, rates
        out[method] = summary
    return out


def run(size_name: str = "cpu", seeds: Sequence[int] | None = None, threads: int = 1, workdir: str | None = None):
    """The whole measurement over seeds; returns the JSON-serialisable result."""
    torch.set_num_threads(threads)
    size = SIZES[size_name]
    if seeds is not None:
        size = replace(size, seeds=tuple(seeds))
    started, cpu = time.perf_counter(), time.process_time()
    per_seed = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(workdir or scratch)
        for seed in size.seeds:
            per_seed.append(run_seed(size, seed, root / f"seed-{seed}", started))
    return {
        "settings": {"size": size_name, **asdict(size), "threads": threads},
        "summary": aggregate(per_seed),
        "summary_by_image_val": aggregate(per_seed, "chosen_by_image_val"),
        "seeds": per_seed,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": round(time.process_time() - cpu, 1),
    }


def _pm(spread: dict, signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{spread['mean']:{sign}.3f} ± {spread['std']:.3f}"


def _summary_rows(summary: dict) -> list[list]:
    return [
        [
            LABELS[method],
            _pm(s["image_before"]),
            _pm(s["image_after"]),
            _pm(s["image_change"], signed=True),
            _pm(s["text_before"]),
            _pm(s["text_after"]),
            _pm(s["text_change"], signed=True),
            f"{sum(s['text_lost'])} / {sum(s['text_gained'])}",
            ", ".join(f"{rate:g}" for rate in s["learning_rates"]),
        ]
        for method, s in summary.items()
    ]


SUMMARY_HEADER = [
    "method",
    "image acc. before",
    "image acc. after",
    "image change",
    "text-only acc. before",
    "text-only acc. after",
    "text-only change",
    "text questions lost / gained (all seeds)",
    "learning rate per seed",
]


def to_markdown(result: dict) -> str:
    """A human-readable report of one `run` result."""
    settings, seeds = result["settings"], result["seeds"]
    first = seeds[0]["before"]["llava"]["test"]
    lines = [
        f"# Text-only accuracy through image fine-tuning: MMA and LoRA, with and without text rows (size "
        f"`{settings['size']}`)",
        "",
        f"Seeds {', '.join(str(entry['seed']) for entry in seeds)}; mean ± standard deviation over seeds (sample "
        f"standard deviation, n={len(seeds)}); test split per seed: {first['num_image']} image and "
        f"{first['num_text']} text-only questions, the same questions before and after. Every method: "
        f"{settings['steps']} steps on the same {settings['batch_size']} image questions per step; `lora_text` and "
        f"`mma_text` add {settings['text_rows']} text-only training questions to each step. Learning rate per seed and method: best "
        "validation accuracy (image and text-only questions together) of the rates tried.",
        "",
        "## Test accuracy before and after",
        "",
    ]
    lines += _table(SUMMARY_HEADER, _summary_rows(result["summary"]))
    lines += [
        "Text questions lost / gained: test questions answered right before and wrong after / the other way. Routing "
        "gap (per seed, below): mean over LLM layers of |w0(text-only) - w0(image)|, how differently MMA's router "
        "mixes the two up-projections for the two modalities (0: identically).",
        "",
    ]
    lines += [
        "## The same runs, learning rate chosen by image validation accuracy alone",
        "",
    ]
    lines += _table(SUMMARY_HEADER, _summary_rows(result["summary_by_image_val"]))
    lines += ["## Per seed (chosen runs)", ""]
    rows = []
    for entry in seeds:
        for method in METHODS:
            method_entry = entry["methods"][method]
            run = method_entry["runs"][method_entry["chosen"]]
            before = entry["before"]["lavin" if BASES[method] == "lavin_dir" else "llava"]["test"]
            rows.append(
                [
                    entry["seed"],
                    LABELS[method],
                    run["learning_rate"],
                    before["image_accuracy"],
                    run["test"]["image_accuracy"],
                    before["text_accuracy"],
                    run["test"]["text_accuracy"],
                    f"{run['test_changes']['text']['lost']} / {run['test_changes']['text']['gained']}",
                    run.get("routing_gap"),
                ]
            )
    lines += _table(
        [
            "seed",
            "method",
            "learning rate",
            "image before",
            "image after",
            "text-only before",
            "text-only after",
            "text lost / gained",
            "routing gap (MMA)",
        ],
        rows,
    )
    lines += ["## Every run", ""]
    rows = [
        [
            entry["seed"],
            method,
            run["learning_rate"],
            run["val"]["accuracy"],
            run["val"]["image_accuracy"],
            run["test"]["image_accuracy"],
            run["test"]["text_accuracy"],
            run["loss_first"],
            run["loss_last_10"],
        ]
        for entry in seeds
        for method in METHODS
        for run in entry["methods"][method]["runs"]
    ]
    header = [
        "seed",
        "method",
        "learning rate",
        "val acc.",
        "val image acc.",
        "test image acc.",
        "test text acc.",
        "first loss",
        "last-10 loss",
    ]
    lines += _table(header, rows)
    parameters = [[LABELS[method], seeds[0]["methods"][method]["parameters"]["trainable"]] for method in METHODS]
    lines += ["## Trainable parameters", ""] + _table(["method", "trainable"], parameters)
    lines += ["## Machine and settings", ""]
    lines += _table(["field", "value"], [[key, value] for key, value in result.get("machine", {}).items()])
    lines += _table(["field", "value"], [[key, value] for key, value in settings.items()])
    seconds = ", ".join(f"seed {e['seed']}: {e['wall_seconds']} s wall, {e['cpu_seconds']} s CPU" for e in seeds)
    lines += [
        f"Wall time {result['wall_seconds']} s, process CPU time {result['cpu_seconds']} s ({seconds}).",
        "",
    ]
    return "\n".join(lines)


COLORS = {"before": "#bbbbbb", "after": "#4c78a8"}


def plot(result: dict, path: str | Path) -> Path:
    """Before/after bars (mean over seeds, standard deviation as error bars) with each seed's dots, per method."""
    figure = Figure(figsize=(13, 4.6), dpi=110, layout="constrained")
    axes_pair = figure.subplots(1, 2, sharey=True)
    summary, seeds = result["summary"], result["seeds"]
    width = 0.36
    for axes, kind, title in zip(
        axes_pair, ("image", "text"), ("image questions", "text-only questions"), strict=True
    ):
        for index, method in enumerate(METHODS):
            for offset, stage in ((-width / 2, "before"), (width / 2, "after")):
                spread = summary[method][f"{kind}_{stage}"]
                x = index + offset
                axes.bar(
                    x,
                    spread["mean"],
                    width,
                    yerr=spread["std"],
                    color=COLORS[stage],
                    capsize=3,
                    label=stage if index == 0 else None,
                )
                jitter = [(i - (len(spread["values"]) - 1) / 2) * 0.05 for i in range(len(spread["values"]))]
                axes.scatter([x + j for j in jitter], spread["values"], s=12, color="black", zorder=3)
        chance = statistics.mean(_chance(entry, kind) for entry in seeds)
        axes.axhline(chance, color="#d62728", linestyle="--", linewidth=1, label="chance")
        axes.set_xticks(range(len(METHODS)), [LABELS[m].replace(", ", ",\n") for m in METHODS], fontsize=8)
        axes.set_title(f"Test accuracy, {title}")
        axes.set_ylim(0, 1)
        axes.grid(axis="y", alpha=0.3)
    axes_pair[0].set_ylabel(f"accuracy (mean ± std over {len(seeds)} seeds; dots: seeds)")
    figure.legend(*axes_pair[0].get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=8)
    figure.suptitle(
        f"Fine-tuning on image questions ({result['settings']['steps']} steps; the 'text rows mixed in' rows also on "
        "text-only questions): held-out accuracy before and after"
    )
    path = Path(path)
    figure.savefig(path)
    return path


def _chance(entry: dict, kind: str) -> float:
    return entry["before"]["llava"]["test"][f"{kind}_chance"]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size", choices=sorted(SIZES), default="cpu", help="cpu (~21 min CPU time) or toy (seconds)."
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="Seeds (default: the size's).")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (accuracy depends on it: keep 1).")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="Directory for <tag>.json, .md and .png.")
    parser.add_argument("--tag", default=None, help="File name stem (default: text-retention-<size>).")
    parser.add_argument("--workdir", default=None, help="Keep data and models here (default: a temporary folder).")
    parser.add_argument(
        "--render", type=Path, default=None, help="Only rewrite the .md and .png of this saved .json (no training)."
    )
    args = parser.parse_args(argv)
    if args.render is not None:
        result = json.loads(args.render.read_text())
        args.render.with_suffix(".md").write_text(to_markdown(result) + "\n")
        plot(result, args.render.with_suffix(".png"))
        return
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    result = {"machine": describe_machine("cpu"), **run(args.size, args.seeds, args.threads, args.workdir)}
    tag = args.tag or f"text-retention-{args.size}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{tag}.json").write_text(json.dumps(result, indent=1) + "\n")
    markdown = to_markdown(result)
    (args.out / f"{tag}.md").write_text(markdown + "\n")
    plot(result, args.out / f"{tag}.png")
    print(markdown)


if __name__ == "__main__":
    main()
