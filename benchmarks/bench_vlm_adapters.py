"""MMA against LoRA on the same tiny LLaVA, side by side in one run: what each trains, costs and learns.

Both methods adapt one `LlavaForConditionalGeneration` (CLIP tower, 2-layer GELU projector, LLaMA-style LLM):

- `mma`: `MMAConfig()`, LaVIN's published recipe (router adapters on every LLM and CLIP attention input, hidden 8;
  the tuner's modality token), projector trained in full;
- `lora`: the LLaVA-1.5 recipe (`benchmarks.models.llava_lora_config`): r=128, alpha=256, dropout 0.05 on every
  linear layer of the LLM, projector trained in full.

Measured: trainable parameters; the training step (forward + backward + AdamW) interleaved in one process, median of
the paired ratios (`timing.py`), in wall time and in the thread's CPU time; the step's peak memory, each method in its own child process (`memory.py`,
`child.py`); and multiple-choice accuracy on held-out synthetic ScienceQA questions (`transformers_lavin.data`) after
the same training steps on the same batches, image and text-only questions apart.

The LLM must already read and answer, or there is nothing to adapt: as in `lavin-demo`, a tiny LaVIN's LLM is first
pretrained on the set's text with each picture described in words (`scripts/demo.py`), then the LLaVA is built
around that LLM (same weights; its vocabulary gains the image token) with a fresh frozen CLIP whose 16-pixel patches
are the 2x2 grid cells the synthetic shapes are drawn in, so each image is 4 tokens, laid out where the description
was. Prompts come from the LaVIN processor (the layout the LLM was pretrained on).

    python -m benchmarks.bench_vlm_adapters                # ~5 min on 1 CPU thread -> results/vlm-adapters-cpu.*
    python -m benchmarks.bench_vlm_adapters --size toy     # seconds: the smoke test's size
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import datasets
import torch
import transformers
from peft import get_peft_model
from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, get_cosine_schedule_with_warmup

from transformers_lavin import MMAConfig
from transformers_lavin.data import load_scienceqa, write_synthetic_scienceqa
from transformers_lavin.evaluation.multiple_choice import _prompt_text, score_choice_texts
from transformers_lavin.processing_lavin import LavinProcessor
from transformers_lavin.scripts.demo import (
    PROMPT_FORMAT,
    answer_with_option_text,
    build_demo_model,
    prompt_answer_batch,
)
from transformers_lavin.scripts.demo import pretrain_language_model as pretrain_demo_llm

from .bench_training import make_optimizer, training_step
from .child import run_in_child
from .machine import describe_machine
from .memory import MemoryMeter, mib
from .models import count_parameters, llava_lora_config
from .report import _table
from .timing import Metrics, interleave, paired_ratio, summary, timed

METHODS = ("mma", "lora")
RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Each method at its recipe's learning rate, LaVIN's MMA (9e-3 at batch 32; `lavin-demo` uses 1e-2) and LLaVA-1.5's
# LoRA (2e-4), and at rates around it, since a tiny model may prefer others: each method's rate is then chosen by
# accuracy on a validation split, and the test split is scored for every run.
LEARNING_RATES = {"mma": (3e-3, 1e-2, 3e-2), "lora": (2e-4, 1e-3, 3e-3)}


@dataclass(frozen=True)
class Size:
    """How much data, pretraining, adaptation and timing one run does."""

    num_train: int
    num_val: int
    num_test: int
    pretrain_steps: int
    steps: int
    batch_size: int
    repeats: int
    warmup: int
    learning_rates: dict[str, tuple[float, ...]]


SIZES = {
    "cpu": Size(
        6000,
        256,
        512,
        pretrain_steps=600,
        steps=300,
        batch_size=16,
        repeats=30,
        warmup=3,
        learning_rates=LEARNING_RATES,
    ),
    "toy": Size(
        64,
        8,
        8,
        pretrain_steps=2,
        steps=2,
        batch_size=4,
        repeats=2,
        warmup=0,
        learning_rates={"mma": (1e-2,), "lora": (1e-3,)},
    ),
}


def llava_from_lavin(lavin, seed: int) -> LlavaForConditionalGeneration:
    """
    A LLaVA around `lavin`'s LLM (weights copied; the vocabulary gains LaVIN's image token, with a zero output row)
    and a fresh CLIP of the same width and depth whose 16-pixel patches give one token per synthetic grid cell.
    """
    text_config = lavin.config.text_config.to_dict() | {"vocab_size": lavin.config.image_token_id + 1}
    vision = lavin.config.vision_config
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=vision.hidden_size,
            intermediate_size=vision.intermediate_size,
            num_hidden_layers=vision.num_hidden_layers,
            num_attention_heads=vision.num_attention_heads,
            image_size=vision.image_size,
            patch_size=vision.image_size // 2,
        ),
        text_config=text_config,
        image_token_index=lavin.config.image_token_id,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    torch.manual_seed(seed)
    llava = LlavaForConditionalGeneration(config).eval()
    llm = lavin.model.language_model.state_dict()
    vocab = lavin.config.text_config.vocab_size
    with torch.no_grad():
        for name, value in llava.model.language_model.state_dict().items():
            if name == "embed_tokens.weight":
                value[:vocab] = llm[name]
            else:
                value.copy_(llm[name])
        llava.lm_head.weight.zero_()
        llava.lm_head.weight[:vocab] = lavin.lm_head.weight
    return llava


class DataSize(Protocol):
    """What `prepare` reads from a size: the data splits and the LLM's text pretraining."""

    num_train: int
    num_val: int
    num_test: int
    pretrain_steps: int
    batch_size: int


def prepare(workdir: Path, size: DataSize, seed: int) -> dict:
    """
    Write the data, pretrain the tiny LLM on text, build and save the LLaVA base (`base_dir`) and the tiny LaVIN whose
    LLM was pretrained (`lavin_dir`, the same LLM weights). Returns paths and numbers.
    """
    data_dir = write_synthetic_scienceqa(
        workdir / "data", num_train=size.num_train, num_val=size.num_val, num_test=size.num_test, seed=seed
    )
    train = answer_with_option_text(load_scienceqa(data_dir, "train", prompt_format=PROMPT_FORMAT))
    lavin, processor = build_demo_model(data_dir, seed)
    descriptions = json.loads((data_dir / "descriptions.json").read_text())["descriptions"]
    settings = argparse.Namespace(pretrain_steps=size.pretrain_steps, batch_size=size.batch_size, seed=seed)
    losses = pretrain_demo_llm(lavin, processor, train, descriptions, settings)
    base_dir = workdir / "llava-base"
    llava_from_lavin(lavin, seed).save_pretrained(base_dir)
    processor.save_pretrained(base_dir)
    lavin_dir = workdir / "lavin-base"
    lavin.save_pretrained(lavin_dir)
    processor.save_pretrained(lavin_dir)
    return {
        "data_dir": str(data_dir),
        "base_dir": str(base_dir),
        "lavin_dir": str(lavin_dir),
        "pretrain_losses": [losses[0], losses[-1]],
    }


def prepared_splits(prepared: dict) -> tuple[LavinProcessor, datasets.Dataset, datasets.Dataset, datasets.Dataset]:
    """What `prepare` wrote, read back: the processor, the training rows (answers as option text), val and test."""
    processor = LavinProcessor.from_pretrained(prepared["base_dir"])
    data_dir = Path(prepared["data_dir"])
    train = answer_with_option_text(load_scienceqa(data_dir, "train", prompt_format=PROMPT_FORMAT))
    val = load_scienceqa(data_dir, "val", prompt_format=PROMPT_FORMAT)
    test = load_scienceqa(data_dir, "test", prompt_format=PROMPT_FORMAT)
    return processor, train, val, test


def adapted(method: str, base_dir: str | Path) -> torch.nn.Module:
    """The LLaVA base with `method`'s adapters, in training mode."""
    base = LlavaForConditionalGeneration.from_pretrained(base_dir)
    config = MMAConfig() if method == "mma" else llava_lora_config()
    return get_peft_model(base, config).train()


def collate(rows: list[dict], processor: LavinProcessor) -> dict[str, torch.Tensor]:
    """Prompt (with its image tokens) + answer + EOS per row, right-padded; the loss is on the answer only."""
    tokenizer = processor.tokenizer
    sequences, images = [], []
    for row in rows:
        prompt = processor(images=[list(row["images"])], text=[tokenizer.bos_token + _prompt_text(row["prompt"])])
        answer = tokenizer.encode(_prompt_text(row["completion"]), add_special_tokens=False) + [tokenizer.eos_token_id]
        sequences.append((list(prompt["input_ids"][0]), answer))
        if "pixel_values" in prompt:
            images.append(torch.as_tensor(prompt["pixel_values"]))
    batch = prompt_answer_batch(sequences, tokenizer.pad_token_id)
    return batch | ({"pixel_values": torch.cat(images)} if images else {})


def training_batches(train: datasets.Dataset, processor: LavinProcessor, size: Size, seed: int) -> list[dict]:
    """The same batches, in the same order, for every method."""
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(train), (size.steps, size.batch_size), generator=generator).tolist()
    return [collate([train[i] for i in pick], processor) for pick in picks]


def fine_tune(model: torch.nn.Module, batches: list[dict], learning_rate: float) -> list[float]:
    """AdamW (weight decay 0.02, as LaVIN), cosine schedule with 5% warm-up. Returns the losses."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.02)
    schedule = get_cosine_schedule_with_warmup(optimizer, max(1, len(batches) // 20), len(batches))
    model.train()
    losses = []
    for batch in batches:
        loss = model(**batch, use_cache=False).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def step_memory(method: str, base_dir: str, batch_file: str, steps: int = 2, threads: int = 1) -> dict:
    """Peak memory of `steps` training steps of one method (run it in a fresh process: see `run_in_child`)."""
    torch.set_num_threads(threads)
    meter = MemoryMeter("cpu")
    baseline = meter.current()
    model = adapted(method, base_dir)
    batch = torch.load(batch_file)
    optimizer = make_optimizer(model)
    resident = meter.current()
    meter.reset_peak()
    for _ in range(steps):
        training_step(model, batch, optimizer)
    peak = meter.peak()
    return {
        "model_mib": mib(resident - baseline),
        "peak_mib": mib(peak - baseline),
        "overhead_mib": mib(peak - resident),
    }


def with_thread_time(task: Callable[[], Metrics]) -> Callable[[], Metrics]:
    """
    Add the calling thread's CPU time (`cpu_seconds`) to a `timing.timed` task: with one thread, the step's own work,
    which other processes on a shared machine barely change.
    """

    def measured() -> Metrics:
        start = time.thread_time()
        metrics = task()
        return metrics | {"cpu_seconds": time.thread_time() - start}

    return measured


def accuracy(model, processor: LavinProcessor, test: datasets.Dataset) -> dict:
    summary_ = score_choice_texts(model, processor, test).summary()
    keys = ("image_accuracy", "text_accuracy", "accuracy", "image_chance", "text_chance", "num_image", "num_text")
    return {key: summary_[key] for key in keys}


def _progress(started: float, message: str) -> None:
    print(f"[{time.perf_counter() - started:6.0f} s] {message}", file=sys.stderr, flush=True)


def run(size_name: str = "cpu", seed: int = 0, threads: int = 1, workdir: str | None = None) -> dict:
    """The whole comparison; returns the JSON-serialisable result."""
    torch.set_num_threads(threads)
    size = SIZES[size_name]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(workdir or scratch)
        prepared = prepare(work, size, seed)
        _progress(started, "LLM pretrained on text, LLaVA base saved")
        processor, train, val, test = prepared_splits(prepared)
        batches = training_batches(train, processor, size, seed)
        base = LlavaForConditionalGeneration.from_pretrained(prepared["base_dir"])
        result = {"before": accuracy(base, processor, test), "methods": {}}

        for method in METHODS:
            runs = []
            for learning_rate in size.learning_rates[method]:
                torch.manual_seed(seed)
                model = adapted(method, prepared["base_dir"])
                losses = fine_tune(model, batches, learning_rate)
                _progress(started, f"{method} at lr {learning_rate} trained; scoring")
                runs.append(
                    {
                        "learning_rate": learning_rate,
                        "loss_first": losses[0],
                        "loss_last_10": statistics.mean(losses[-10:]),
                        "val_accuracy": accuracy(model, processor, val)["accuracy"],
                        **accuracy(model, processor, test),
                    }
                )
            chosen = max(runs, key=lambda run: run["val_accuracy"])
            result["methods"][method] = {"parameters": count_parameters(model), "runs": runs, "chosen": chosen}

        # Step time: both methods in this process, alternating, on one training batch.
        tasks, models = {}, {}
        for method in METHODS:
            models[method] = adapted(method, prepared["base_dir"])
            optimizer = make_optimizer(models[method])
            step = timed(lambda m=models[method], o=optimizer: training_step(m, batches[0], o), lambda: None)
            tasks[method] = with_thread_time(step)
        _progress(started, "timing the training step")
        times = interleave(tasks, repeats=size.repeats, warmup=size.warmup)
        result["step_seconds"] = summary(times, "seconds")
        result["step_ratio_mma_over_lora"] = paired_ratio(times, "seconds", "mma", "lora")
        result["step_cpu_seconds"] = summary(times, "cpu_seconds")
        result["step_cpu_ratio_mma_over_lora"] = paired_ratio(times, "cpu_seconds", "mma", "lora")
        del tasks, models

        batch_file = work / "batch.pt"
        torch.save(batches[0], batch_file)
        result["memory"] = {
            method: run_in_child(
                "benchmarks.bench_vlm_adapters:step_memory",
                method=method,
                base_dir=prepared["base_dir"],
                batch_file=str(batch_file),
                threads=threads,
            )
            for method in METHODS
        }
    result["memory"]["ratio_peak_mma_over_lora"] = (
        result["memory"]["mma"]["peak_mib"] / result["memory"]["lora"]["peak_mib"]
    )
    result["settings"] = {"size": size_name, **asdict(size), "seed": seed, "threads": threads}
    result["pretrain_losses"] = prepared["pretrain_losses"]
    result["sequence_length"] = batches[0]["input_ids"].shape[1]
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    return result


def to_markdown(result: dict) -> str:
    """A human-readable report of one `run` result."""
    settings, methods = result["settings"], result["methods"]
    lines = [f"# MMA against LoRA on the same tiny LLaVA (size `{settings['size']}`)", "", "## Machine", ""]
    lines += _table(["field", "value"], [[key, value] for key, value in result["machine"].items()])
    lines += ["## Settings", ""]
    lines += _table(["field", "value"], [[key, value] for key, value in settings.items()])
    best = {method: methods[method]["chosen"] for method in METHODS}
    memory, ratio = result["memory"], result["step_ratio_mma_over_lora"]
    cpu_ratio = result["step_cpu_ratio_mma_over_lora"]
    lines += ["## Side by side", ""]
    lines += _table(
        ["", "MMA", "LoRA r=128", "MMA / LoRA"],
        [
            [
                "trainable parameters",
                methods["mma"]["parameters"]["trainable"],
                methods["lora"]["parameters"]["trainable"],
                methods["mma"]["parameters"]["trainable"] / methods["lora"]["parameters"]["trainable"],
            ],
            [
                "training step, wall s (median)",
                result["step_seconds"]["mma"],
                result["step_seconds"]["lora"],
                f"{ratio['median']:.3g} (paired median; {ratio['min']:.3g}-{ratio['max']:.3g})",
            ],
            [
                "training step, thread CPU s (median)",
                result["step_cpu_seconds"]["mma"],
                result["step_cpu_seconds"]["lora"],
                f"{cpu_ratio['median']:.3g} (paired median; {cpu_ratio['min']:.3g}-{cpu_ratio['max']:.3g})",
            ],
            [
                "step peak memory, MiB",
                memory["mma"]["peak_mib"],
                memory["lora"]["peak_mib"],
                memory["ratio_peak_mma_over_lora"],
            ],
            ["step memory above the model, MiB", memory["mma"]["overhead_mib"], memory["lora"]["overhead_mib"], None],
            ["learning rate (best on validation)", best["mma"]["learning_rate"], best["lora"]["learning_rate"], None],
            ["test accuracy, image questions", best["mma"]["image_accuracy"], best["lora"]["image_accuracy"], None],
            ["test accuracy, text questions", best["mma"]["text_accuracy"], best["lora"]["text_accuracy"], None],
        ],
    )
    before = result["before"]
    lines += [f"## Accuracy after {settings['steps']} steps (batch {settings['batch_size']}), every run", ""]
    rows = [["base (untrained projector)", None, None, before["image_accuracy"], before["text_accuracy"], None, None]]
    rows += [
        [
            method,
            run["learning_rate"],
            run["val_accuracy"],
            run["image_accuracy"],
            run["text_accuracy"],
            run["loss_first"],
            run["loss_last_10"],
        ]
        for method in METHODS
        for run in methods[method]["runs"]
    ]
    header = [
        "method",
        "learning rate",
        "val accuracy",
        "test image acc.",
        "test text acc.",
        "first loss",
        "last-10 loss",
    ]
    lines += _table(header, rows)
    lines += [
        f"Chance: image {before['image_chance']:.3f} (n={before['num_image']}), text {before['text_chance']:.3f} "
        f"(n={before['num_text']}). Tokens per training sequence (first batch): {result['sequence_length']}. "
        f"Wall time {result['wall_seconds']} s.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu", help="cpu (minutes) or toy (seconds).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps runs comparable).")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="Directory for <tag>.json and <tag>.md.")
    parser.add_argument("--tag", default=None, help="File name stem (default: vlm-adapters-<size>).")
    args = parser.parse_args()
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    machine = describe_machine("cpu")
    result = {"machine": machine, **run(args.size, args.seed, args.threads)}
    tag = args.tag or f"vlm-adapters-{args.size}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    markdown = to_markdown(result)
    (args.out / f"{tag}.md").write_text(markdown + "\n")
    print(markdown)


if __name__ == "__main__":
    main()
