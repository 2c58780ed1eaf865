"""The offline LaVIN demo (console script `lavin-demo`): MMA fine-tuning of a tiny LaVIN, start to finish, on CPU.

1. builds a tiny random LaVIN (CLIP-style vision tower + LLaMA-style LLM) and writes the synthetic ScienceQA-style set;
2. measures multiple-choice accuracy on held-out questions (image and text-only apart, with chance levels);
3. fine-tunes the MMA adapters, projector and modality embedding with TRL's `SFTTrainer`;
4. measures again, saves the adapter, reloads it with `PeftModel.from_pretrained` and checks it answers the same;
5. writes `training_loss.png` and `routing_weights.png` and prints where everything is.

Nothing is downloaded. The synthetic image questions (shape, colour, count, position) can be answered only from the
image, so their accuracy shows whether the visual path learned anything.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
from peft import PeftModel
from transformers import AutoModelForImageTextToText
from trl import SFTConfig

from ..data import OPTION_LETTERS, load_scienceqa, write_synthetic_scienceqa
from ..mma import compute_routing_table
from .multiple_choice import ANSWER_PREFIX, MultipleChoiceResult, score_choice_texts
from .plots import plot_routing_weights, plot_training_loss
from .sft import BASE_MODEL_DIR, LavinModelArguments, MMAArguments, build_trainer, load_model_and_processor

# LaVIN's prompt (question, context, options), answered with the option's text: "The answer is circle."
PROMPT_FORMAT = "QCM-A"
# A random frozen LLM brings no skill, so the adapters get the room LaVIN-7B's pretrained LLM does not need: also
# before each MLP ("block"), and a wider bottleneck.
DEMO_MMA = MMAArguments(mma_adapter_type="block", mma_adapter_hidden_size=32, mma_dropout=0.0)


@dataclass(frozen=True)
class DemoSize:
    """How big the demo's model and data are and how long it trains."""

    num_train: int
    num_test: int
    epochs: float
    text_hidden_size: int
    text_layers: int
    batch_size: int
    learning_rate: float


SIZES = {
    # The README's demo: a few minutes on 2 CPU cores.
    "full": DemoSize(
        num_train=1024, num_test=256, epochs=3, text_hidden_size=64, text_layers=2, batch_size=16, learning_rate=1e-2
    ),
    # What the tests run: the whole pipeline in about a minute.
    "quick": DemoSize(
        num_train=128, num_test=48, epochs=2, text_hidden_size=64, text_layers=2, batch_size=16, learning_rate=1e-2
    ),
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="lavin-demo", description="Offline demo: fine-tune a tiny LaVIN's MMA adapters on synthetic ScienceQA."
    )
    parser.add_argument("--output_dir", default="lavin-demo", help="Where data, adapter, plots and results go.")
    parser.add_argument("--size", choices=sorted(SIZES), default="full", help="Preset size (quick: the tests').")
    parser.add_argument("--quick", action="store_true", help="Same as --size quick.")
    parser.add_argument("--num_train", type=int, help="Training problems (overrides the preset).")
    parser.add_argument("--num_test", type=int, help="Held-out problems (overrides the preset).")
    parser.add_argument("--epochs", type=float, help="Training epochs (overrides the preset).")
    parser.add_argument("--learning_rate", type=float, help="Peak learning rate (overrides the preset).")
    parser.add_argument("--batch_size", type=int, help="Batch size (overrides the preset).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the model, the data and training.")
    args = parser.parse_args(argv)
    preset = SIZES["quick" if args.quick else args.size]
    for name in ("num_train", "num_test", "epochs", "learning_rate", "batch_size"):
        if getattr(args, name) is None:
            setattr(args, name, getattr(preset, name))
    args.text_hidden_size, args.text_layers = preset.text_hidden_size, preset.text_layers
    if args.num_train < 1 or args.num_test < 1 or args.epochs <= 0 or args.batch_size < 1:
        parser.error("num_train, num_test, epochs and batch_size must be positive.")
    return args


def answer_with_option_text(dataset: datasets.Dataset) -> datasets.Dataset:
    """Rewrite each completion from `The answer is B.` to the option's text, `The answer is circle.`."""

    def rewrite(row: dict) -> dict:
        text = row["choices"][OPTION_LETTERS.index(row["answer"])]
        return {
            "completion": [{"role": "assistant", "content": [{"type": "text", "text": f"{ANSWER_PREFIX}{text}."}]}]
        }

    return dataset.map(rewrite)


def _describe(name: str, result: MultipleChoiceResult) -> str:
    summary = result.summary()
    return (
        f"{name}: image questions {summary['image_accuracy']:.1%} (chance {summary['image_chance']:.1%}, "
        f"n={summary['num_image']}), text questions {summary['text_accuracy']:.1%} "
        f"(chance {summary['text_chance']:.1%}, n={summary['num_text']})"
    )


def run_demo(args: argparse.Namespace) -> dict:
    """Run the demo; returns the measured numbers and the paths written (also saved as `results.json`)."""
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    model_args = LavinModelArguments(
        tiny=True, tiny_text_hidden_size=args.text_hidden_size, tiny_text_layers=args.text_layers
    )
    model, processor = load_model_and_processor(model_args, seed=args.seed)
    base_dir = output_dir / BASE_MODEL_DIR
    model.save_pretrained(base_dir)  # before PEFT wraps the model in place
    processor.save_pretrained(base_dir)

    data_dir = write_synthetic_scienceqa(
        output_dir / "synthetic_scienceqa", num_train=args.num_train, num_val=0, num_test=args.num_test, seed=args.seed
    )
    train = answer_with_option_text(load_scienceqa(data_dir, "train", prompt_format=PROMPT_FORMAT))
    test = load_scienceqa(data_dir, "test", prompt_format=PROMPT_FORMAT)
    print(f"Tiny LaVIN built; {len(train)} training and {len(test)} held-out synthetic problems in {data_dir}")

    before = score_choice_texts(model, processor, test)
    print(_describe("Before fine-tuning", before))

    training_args = SFTConfig(
        output_dir=str(output_dir / "trainer"),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        weight_decay=0.02,
        logging_steps=5,
        save_strategy="no",
        report_to=[],
        seed=args.seed,
        bf16=False,  # CPU: full precision is faster and exact
        gradient_checkpointing=False,  # tiny activations; checkpointing would only slow it down
        max_length=None,
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = build_trainer(model, processor, train, training_args, DEMO_MMA)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in trainer.model.parameters())
    print(f"Training {trainable:,} of {total:,} parameters (MMA adapters, projector, modality embedding)")
    trainer.train()
    peft_model = trainer.model

    after = score_choice_texts(peft_model, processor, test)
    print(_describe("After fine-tuning ", after))

    adapter_dir = output_dir / "adapter"
    peft_model.save_pretrained(adapter_dir)
    processor.save_pretrained(adapter_dir)
    base = AutoModelForImageTextToText.from_pretrained(base_dir)
    reloaded = PeftModel.from_pretrained(base, adapter_dir)
    again = score_choice_texts(reloaded, processor, test)
    max_logit_diff = max(
        abs(a - b)
        for row_after, row_again in zip(after.choice_scores, again.choice_scores, strict=True)
        for a, b in zip(row_after, row_again, strict=True)
    )
    same_answers = after.predictions == again.predictions
    print(
        f"Reloaded adapter (PeftModel.from_pretrained): {'same' if same_answers else 'DIFFERENT'} answers, "
        f"largest choice-score difference {max_logit_diff:.2e}"
    )
    if not same_answers:
        raise RuntimeError("The reloaded adapter answers differently from the trained one; saving lost something.")

    loss_png = plot_training_loss(trainer.state.log_history, output_dir / "training_loss.png")
    routing_png = plot_routing_weights(compute_routing_table(peft_model), output_dir / "routing_weights.png")
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    results = {
        "before": before.summary(),
        "after": after.summary(),
        "reloaded_same_answers": same_answers,
        "reloaded_max_score_difference": max_logit_diff,
        "first_logged_loss": losses[0],
        "last_logged_loss": losses[-1],
        "trainable_parameters": trainable,
        "total_parameters": total,
        "settings": {key: value for key, value in vars(args).items()},
        "wall_time_s": round(time.perf_counter() - started, 1),
        "paths": {
            "data": str(data_dir),
            "base_model": str(base_dir),
            "adapter": str(adapter_dir),
            "training_loss_png": str(loss_png),
            "routing_weights_png": str(routing_png),
        },
    }
    results_path = output_dir / "results.json"
    results_path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"Training loss {losses[0]:.3f} -> {losses[-1]:.3f}; wall time {results['wall_time_s']} s")
    print("Written:")
    for name, path in {**results["paths"], "results": str(results_path)}.items():
        print(f"  {name:20s} {path}")
    return results


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point `lavin-demo`."""
    logging.basicConfig(level=logging.WARNING)
    run_demo(parse_args(argv))


if __name__ == "__main__":
    main()
