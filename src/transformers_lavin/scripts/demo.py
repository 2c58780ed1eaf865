"""The offline LaVIN demo (console script `lavin-demo`): MMA fine-tuning of a tiny LaVIN, start to finish, on CPU.

1. writes the synthetic ScienceQA-style set and builds a tiny LaVIN (CLIP-style vision tower + LLaMA-style LLM) with a
   word-level tokenizer trained on the set's text;
2. pretrains the tiny LLM alone on text, the stand-in for LaVIN's pretrained LLaMA: MMA adapts an LLM that can
   already read and answer, and a random one cannot. In this text the picture is described in words where the image
   will go ("Image: red circle top left"), so the LLM learns to answer from that slot, never from pixels;
3. measures multiple-choice accuracy on held-out questions (image and text-only apart, with chance levels);
4. freezes the LLM and the vision tower and fine-tunes only the MMA adapters, projector and modality embedding with
   TRL's `SFTTrainer`: the visual tokens must now tell the LLM what the words told it;
5. measures again, saves the adapter, reloads it with `PeftModel.from_pretrained` and checks it answers the same;
6. writes `training_loss.png` and `routing_weights.png` and prints where everything is.

Nothing is downloaded. The synthetic image questions (shape, colour, count, position) can be answered only from the
image, so their accuracy shows whether the visual path learned anything.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
from peft import PeftModel
from tqdm.auto import tqdm
from transformers import AutoModelForImageTextToText
from trl import SFTConfig

from ..cli_errors import add_debug_argument, user_errors
from ..cli_flags import UnderscoreArgumentParser
from ..conversion.staging import apply_umask
from ..data import OPTION_LETTERS, load_scienceqa, write_synthetic_scienceqa
from ..data.sft_datasets import raw_prompt_completion
from ..evaluation.multiple_choice import ANSWER_PREFIX, MultipleChoiceResult, _prompt_text, score_choice_texts
from ..hub.local_card import write_local_adapter_card
from ..mma import compute_routing_table
from ..testing_utils import build_tiny_lavin, build_word_tokenizer, tiny_lavin_config
from ..training import BASE_MODEL_DIR, MMAArguments, build_trainer
from .plots import plot_routing_weights, plot_training_loss

# LaVIN's prompt (question, context, options), answered with the option's text: "The answer is circle."
PROMPT_FORMAT = "QCM-A"
# The published recipe (attention adapters, bottleneck 8), without dropout for this short run.
DEMO_MMA = MMAArguments(mma_dropout=0.0)


@dataclass(frozen=True)
class DemoSize:
    """How big the demo's data is and how long each stage trains."""

    num_train: int
    num_test: int
    pretrain_steps: int
    steps: int
    batch_size: int
    learning_rate: float


SIZES = {
    # The README's demo: a few minutes on 2 CPU cores.
    "full": DemoSize(num_train=6000, num_test=512, pretrain_steps=600, steps=1200, batch_size=16, learning_rate=1e-2),
    # What the tests run: half the MMA steps.
    "quick": DemoSize(num_train=6000, num_test=512, pretrain_steps=600, steps=600, batch_size=16, learning_rate=1e-2),
}
PRETRAIN_LEARNING_RATE = 1e-3


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = UnderscoreArgumentParser(
        prog="lavin-demo", description="Offline demo: fine-tune a tiny LaVIN's MMA adapters on synthetic ScienceQA."
    )
    parser.add_argument("--output_dir", default="lavin-demo", help="Where data, adapter, plots and results go.")
    parser.add_argument("--size", choices=sorted(SIZES), default="full", help="Preset size (quick: the tests').")
    parser.add_argument("--quick", action="store_true", help="Same as --size quick.")
    parser.add_argument("--num_train", type=int, help="Training problems (overrides the preset).")
    parser.add_argument("--num_test", type=int, help="Held-out problems (overrides the preset).")
    parser.add_argument("--pretrain_steps", type=int, help="Text pretraining steps of the tiny LLM (overrides).")
    parser.add_argument("--steps", type=int, help="MMA fine-tuning steps (overrides the preset).")
    parser.add_argument("--learning_rate", type=float, help="Peak learning rate (overrides the preset).")
    parser.add_argument("--batch_size", type=int, help="Batch size (overrides the preset).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the model, the data and training.")
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch (default: torch's choice, one per core). A run is a function of its seed: "
        "measured identical with 1 and 2 threads; recorded in results.json.",
    )
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    preset = SIZES["quick" if args.quick else args.size]
    for name in ("num_train", "num_test", "pretrain_steps", "steps", "learning_rate", "batch_size"):
        if getattr(args, name) is None:
            setattr(args, name, getattr(preset, name))
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be positive; got {args.threads}.")
    if min(args.num_train, args.num_test, args.steps, args.batch_size) < 1 or args.pretrain_steps < 0:
        parser.error("num_train, num_test, steps and batch_size must be positive, pretrain_steps not negative.")
    return args


def answer_with_option_text(dataset: datasets.Dataset) -> datasets.Dataset:
    """Rewrite each completion from `The answer is B.` to the option's text, `The answer is circle.`."""

    def rewrite(row: dict) -> dict:
        text = row["choices"][OPTION_LETTERS.index(row["answer"])]
        return {
            "completion": [{"role": "assistant", "content": [{"type": "text", "text": f"{ANSWER_PREFIX}{text}."}]}]
        }

    return dataset.map(rewrite)


def build_demo_model(data_dir: Path, seed: int):
    """
    The demo's tiny LaVIN: a word-level tokenizer trained on the data set's text, an LLM 64 wide with 2 layers, a
    4-block vision tower 64 wide on 32-pixel images, 4 visual tokens and LaVIN's 128-wide projector.
    """
    problems = json.loads((data_dir / "problems.json").read_text())
    descriptions = json.loads((data_dir / "descriptions.json").read_text())["descriptions"]
    fields = ("question", "hint", "lecture", "solution")
    corpus = [problem[field] for problem in problems.values() for field in fields]
    corpus += [" ".join(problem["choices"]) for problem in problems.values()]
    corpus += list(descriptions.values()) + ["Image: N/A Question: Context: Options: Response: The answer is"]
    tokenizer = build_word_tokenizer(corpus, vocab_size=1500)
    config = tiny_lavin_config(
        text_hidden_size=64,
        text_layers=2,
        vision_hidden_size=64,
        vision_layers=4,
        image_size=32,
        patch_size=4,
        vision_feature_layers=[1, 2, 3, 4],
        projector_hidden_size=128,
        tokenizer=tokenizer,
        # Larger than transformers' 0.02 so that the frozen LM head can make confident predictions.
        initializer_range=0.2,
    )
    return build_tiny_lavin(seed=seed, config=config, tokenizer=tokenizer)


def prompt_answer_batch(sequences: list[tuple[list[int], list[int]]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """`(prompt ids, answer ids)` pairs as one right-padded batch whose loss is on the answers only."""
    length = max(len(prompt) + len(answer) for prompt, answer in sequences)
    input_ids = torch.full((len(sequences), length), pad_token_id)
    labels = torch.full_like(input_ids, -100)
    attention_mask = torch.zeros_like(input_ids)
    for i, (prompt, answer) in enumerate(sequences):
        input_ids[i, : len(prompt) + len(answer)] = torch.tensor(prompt + answer)
        labels[i, len(prompt) : len(prompt) + len(answer)] = torch.tensor(answer)
        attention_mask[i, : len(prompt) + len(answer)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def pretrain_language_model(
    model, processor, rows: datasets.Dataset, descriptions: dict[str, str], args: argparse.Namespace
) -> list[float]:
    """
    Train the tiny LLM alone (decoder and LM head) on the text of the training problems, the stand-in for an LLM's
    own pretraining. Each picture is replaced by its description in words, written where the image will go, so the
    LLM learns to answer from that slot. Returns the losses.
    """
    tokenizer, config = processor.tokenizer, model.config
    parameters = [*model.model.language_model.parameters(), *model.lm_head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=PRETRAIN_LEARNING_RATE)
    generator = torch.Generator().manual_seed(args.seed)
    model.train()
    losses = []
    for _ in tqdm(
        range(args.pretrain_steps), desc="Pretraining the tiny LLM on text", disable=args.pretrain_steps == 0
    ):
        batch = [rows[i] for i in torch.randint(len(rows), (args.batch_size,), generator=generator).tolist()]
        sequences = []
        for row in batch:
            slot = descriptions[row["id"]] if row["images"] else config.no_image_text
            prompt = [
                tokenizer.bos_token_id,
                *tokenizer.encode(config.image_prefix + slot + _prompt_text(row["prompt"])),
            ]
            answer = tokenizer.encode(_prompt_text(row["completion"])) + [tokenizer.eos_token_id]
            sequences.append((prompt, answer))
        loss = model(**prompt_answer_batch(sequences, tokenizer.pad_token_id)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    return losses


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
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"Seed {args.seed}, {torch.get_num_threads()} torch threads (the same seed gives the same numbers)")
    torch.manual_seed(args.seed)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    data_dir = write_synthetic_scienceqa(
        output_dir / "synthetic_scienceqa", num_train=args.num_train, num_val=0, num_test=args.num_test, seed=args.seed
    )
    train = answer_with_option_text(load_scienceqa(data_dir, "train", prompt_format=PROMPT_FORMAT))
    test = load_scienceqa(data_dir, "test", prompt_format=PROMPT_FORMAT)
    print(f"{len(train)} training and {len(test)} held-out synthetic problems in {data_dir}")

    model, processor = build_demo_model(data_dir, args.seed)
    descriptions = json.loads((data_dir / "descriptions.json").read_text())["descriptions"]
    pretrain_losses = pretrain_language_model(model, processor, train, descriptions, args)
    if pretrain_losses:
        print(f"Tiny LLM pretrained on text: loss {pretrain_losses[0]:.3f} -> {pretrain_losses[-1]:.3f}")
    base_dir = (output_dir / BASE_MODEL_DIR).resolve()  # absolute: the adapter reloads from any directory
    model.save_pretrained(base_dir)  # the frozen base, before PEFT wraps the model in place
    processor.save_pretrained(base_dir)
    apply_umask(base_dir)
    model.name_or_path = model.config._name_or_path = str(base_dir)  # the adapter's base_model_name_or_path

    before = score_choice_texts(model, processor, test)
    print(_describe("Before fine-tuning", before))

    training_args = SFTConfig(
        output_dir=str(output_dir / "trainer"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        weight_decay=0.02,
        logging_steps=20,
        save_strategy="no",
        report_to=[],
        seed=args.seed,
        bf16=False,  # CPU: full precision is faster and exact
        activation_checkpointing=False,  # tiny activations; checkpointing would only slow it down
        max_length=None,
        use_cpu=True,
        disable_tqdm=True,
    )
    # LaVIN's ScienceQA strings, concatenated as the reference does (no chat template), as the scoring reads them.
    tokenizer = processor.tokenizer
    train_text = raw_prompt_completion(train, tokenizer.bos_token, tokenizer.eos_token)
    trainer = build_trainer(model, processor, train_text, training_args, DEMO_MMA)
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
    write_local_adapter_card(
        adapter_dir,
        peft_model,
        base_model=str(base_dir),
        datasets=[str(data_dir)],
        metrics={"image accuracy": round(after.summary()["image_accuracy"], 3)},
    )
    apply_umask(adapter_dir)
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
        "torch_threads": torch.get_num_threads(),
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


@user_errors("lavin-demo")
def main(argv: Sequence[str]) -> None:
    """Console entry point `lavin-demo`."""
    logging.basicConfig(level=logging.WARNING)
    run_demo(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
