"""Fine-tune LaVIN's MMA adapters with TRL's `SFTTrainer` (console script `lavin-train`).

Arguments follow TRL's scripts: dataclasses parsed by `TrlParser`, so every `SFTConfig` option works on the command
line or in a YAML file given with `--config`. Examples:

```bash
# A LaVIN saved with save_pretrained (or a Hub id), on ScienceQA in its official layout
lavin-train --model_name_or_path path/to/lavin-7b --dataset_dir data/scienceqa --output_dir lavin-7b-sqa \
    --per_device_train_batch_size 4 --gradient_accumulation_steps 8 --learning_rate 1.125e-3 \
    --num_train_epochs 20 --lr_scheduler_type cosine --warmup_steps 0.1 --weight_decay 0.02 --max_length 512

# LaVIN-lite: the same with a 4-bit LLM
lavin-train --model_name_or_path path/to/lavin-7b --load_in_4bit --dataset_dir data/scienceqa --output_dir out

# A fresh LaVIN from pretrained parts
lavin-train --vision_model openai/clip-vit-large-patch14 --language_model path/to/llama-7b-hf ...

# Offline smoke run: a tiny random LaVIN on the synthetic set
lavin-train --tiny --synthetic --output_dir /tmp/lavin-tiny --max_steps 20 --bf16 false --gradient_checkpointing false
```
See docs/training.md for multi-GPU (DDP, FSDP, DeepSpeed) launches.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..cli_errors import UserInputError, user_errors
from ..conversion.staging import apply_umask, replace
from .sft_arguments import (
    ARGUMENT_CLASSES,
    LavinModelArguments,
    LavinScriptArguments,
    MMAArguments,
    check_gradient_checkpointing,
    check_model_arguments,
    parse_args,
    resume_target,
    torch_dtype,
    validate_arguments,
)

if TYPE_CHECKING:
    import datasets
    import torch
    from trl import SFTConfig, SFTTrainer

logger = logging.getLogger(__name__)

BASE_MODEL_DIR = "base_model"
ADAPTER_CONFIG_NAME = "adapter_config.json"


def load_model_and_processor(model_args: LavinModelArguments, seed: int = 0, trust_remote_code: bool = False):
    """
    Build or load the base LaVIN and its processor from `model_args`.

    Args:
        model_args: The base model options.
        seed: Seed of a model built here (tiny, or assembled from parts).
        trust_remote_code: Passed to `from_pretrained` for a saved model (TRL keeps it in `SFTConfig`).

    Returns:
        `(model, processor)`: a frozen-to-be [`LavinForConditionalGeneration`] and its [`LavinProcessor`].
    """
    import torch

    check_model_arguments(model_args)
    from_parts = model_args.vision_model is not None or model_args.language_model is not None
    dtype = torch_dtype(model_args.dtype)
    if model_args.tiny:
        from ..testing_utils import build_tiny_lavin, tiny_lavin_config

        config = tiny_lavin_config(
            text_hidden_size=model_args.tiny_text_hidden_size,
            text_layers=model_args.tiny_text_layers,
            image_size=model_args.tiny_image_size,
            patch_size=model_args.tiny_patch_size,
            initializer_range=model_args.tiny_initializer_range,
        )
        model, processor = build_tiny_lavin(seed=seed, config=config)
        if isinstance(dtype, torch.dtype):
            model = model.to(dtype)
        return model, processor
    if from_parts:
        from .. import build_lavin_from_parts

        return build_lavin_from_parts(
            model_args.vision_model,
            model_args.language_model,
            dtype=dtype,
            seed=seed,
            revision=model_args.model_revision,
        )
    from transformers import AutoModelForImageTextToText, AutoProcessor

    kwargs = {"revision": model_args.model_revision, "dtype": dtype, "trust_remote_code": trust_remote_code}
    if model_args.attn_implementation is not None:
        kwargs["attn_implementation"] = model_args.attn_implementation
    if model_args.load_in_4bit:
        from ..quantization import lavin_lite_quantization_config

        kwargs["quantization_config"] = lavin_lite_quantization_config(bits=4)
    model = AutoModelForImageTextToText.from_pretrained(model_args.model_name_or_path, **kwargs)
    processor = AutoProcessor.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=trust_remote_code,
    )
    return model, processor


def write_synthetic_set(script_args: LavinScriptArguments, root: Path, seed: int) -> None:
    """Write the synthetic ScienceQA-style set that `--synthetic` and its size options ask for into `root`."""
    from ..data import write_synthetic_scienceqa

    write_synthetic_scienceqa(
        root,
        overwrite=script_args.overwrite,
        num_train=script_args.synthetic_num_train,
        num_val=script_args.synthetic_num_eval,
        num_test=script_args.synthetic_num_eval,
        image_size=script_args.synthetic_image_size,
        seed=seed,
    )


def _scienceqa_root(script_args: LavinScriptArguments, training_args: SFTConfig) -> Path:
    if not script_args.synthetic:
        return Path(script_args.dataset_dir)
    root = Path(script_args.dataset_dir or Path(training_args.output_dir) / "synthetic_scienceqa")
    # Rank 0 writes while the other ranks wait, so no process reads a half-written file.
    with training_args.main_process_first(local=False, desc="writing the synthetic set"):
        if training_args.process_index == 0:
            seed = training_args.data_seed if training_args.data_seed is not None else training_args.seed
            write_synthetic_set(script_args, root, seed)
    return root


def load_datasets(
    script_args: LavinScriptArguments, training_args: SFTConfig
) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """
    The training (and, when `--eval_strategy` is not `no`, evaluation) split as read, before any tokenizer is known.
    Rows over `--max_images_per_sample` are refused or dropped here, before anything is written.
    """
    from ..data import load_scienceqa
    from ..data.sft_datasets import check_images_per_row, dataset_format, load_sft_dataset

    evaluate = training_args.eval_strategy != "no"
    if script_args.dataset_name is not None:
        load = partial(load_sft_dataset, script_args.dataset_name, script_args.dataset_config)
    else:
        root = _scienceqa_root(script_args, training_args)

        def load(split: str) -> datasets.Dataset:
            return load_scienceqa(root, split, prompt_format=script_args.prompt_format)

    train = load(split=script_args.dataset_train_split)
    dataset_format(train)  # fail now on columns no format fits
    if script_args.max_train_samples is not None:
        train = train.select(range(min(script_args.max_train_samples, len(train))))
    limit = {"max_images": script_args.max_images_per_sample, "drop": script_args.drop_unsupported_rows}
    train = check_images_per_row(train, what="training", **limit)
    evaluation = None
    if evaluate:
        evaluation = load(split=script_args.dataset_test_split)
        evaluation = check_images_per_row(evaluation, what="evaluation", **limit)
    return train, evaluation


def prepare_for_lavin(
    dataset: datasets.Dataset, processor, prompt_format: str, reference_text: bool
) -> datasets.Dataset:
    """
    The rows as LaVIN trains on them: ScienceQA (either layout, `reference_text`) as the reference's plain prompt and
    answer strings, without a chat template; plain-text rows with BOS and EOS; conversational rows as they are (the
    chat template renders them).
    """
    from ..data.sft_datasets import (
        add_special_tokens_to_text,
        dataset_format,
        raw_prompt_completion,
        scienceqa_hub_to_text,
    )

    bos, eos = processor.tokenizer.bos_token, processor.tokenizer.eos_token
    kind = dataset_format(dataset)
    if kind == "scienceqa":
        return scienceqa_hub_to_text(dataset, bos, eos, prompt_format)
    if reference_text:
        return raw_prompt_completion(dataset, bos, eos)
    if kind in ("text", "prompt_completion"):
        return add_special_tokens_to_text(dataset, bos, eos)
    return dataset


def adapter_config(model_args: LavinModelArguments, mma_args: MMAArguments):
    """The PEFT config `--peft_method` chooses: MMA from the `--mma_*` options, or LoRA from TRL's `--lora_*`."""
    if model_args.peft_method == "mma":
        return mma_args.to_peft_config()
    from trl import get_peft_config

    model_args.use_peft = True
    return get_peft_config(model_args)


class OutputModesCallback(TrainerCallback):
    """Gives each checkpoint the file modes of the process umask (safetensors writes its files 0600)."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            if checkpoint.is_dir():
                apply_umask(checkpoint)


def build_trainer(
    model,
    processor,
    train_dataset: datasets.Dataset,
    training_args: SFTConfig,
    mma_args: MMAArguments,
    eval_dataset: datasets.Dataset | None = None,
    callbacks: Sequence[TrainerCallback] | None = None,
    peft_config=None,
) -> SFTTrainer:
    """An `SFTTrainer` that wraps `model` in adapters (MMA from `mma_args` unless `peft_config` is given)."""
    from trl import SFTTrainer

    check_gradient_checkpointing(training_args)
    # Images are processed on the fly by TRL's vision collator, which needs the raw columns.
    training_args.remove_unused_columns = False
    return SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        peft_config=peft_config if peft_config is not None else mma_args.to_peft_config(),
        callbacks=[OutputModesCallback(), *(callbacks or [])],
    )


def trainable_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def earlier_run_outputs(output_dir: Path) -> list[str]:
    """What an earlier `lavin-train` run left in `output_dir`: its base model, adapter and checkpoints."""
    if not output_dir.is_dir():
        return []
    found = [name for name in (BASE_MODEL_DIR, ADAPTER_CONFIG_NAME) if (output_dir / name).exists()]
    return found + sorted(path.name for path in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if path.is_dir())


def check_output_dir(output_dir: Path, overwrite: bool, resuming: bool) -> None:
    """
    Refuse to train into an `output_dir` that holds an earlier run (unless `overwrite` or resuming it): the new base
    model and adapter would replace the old ones while the old checkpoints stayed, paired with the wrong base.
    """
    found = earlier_run_outputs(output_dir)
    if found and not (overwrite or resuming):
        raise UserInputError(
            f"--output_dir {str(output_dir)!r} holds an earlier run ({', '.join(found[:4])}"
            f"{', ...' if len(found) > 4 else ''}). Choose a new --output_dir, resume it with "
            "--resume_from_checkpoint true, or pass --overwrite to replace it."
        )


def _remove_earlier_run(output_dir: Path) -> None:
    # Checkpoints of an earlier run belong to its base model; with --overwrite they go, so none is paired wrongly.
    for name in earlier_run_outputs(output_dir):
        if name.startswith(PREFIX_CHECKPOINT_DIR):
            logger.warning("--overwrite: removing %s of the earlier run.", output_dir / name)
            shutil.rmtree(output_dir / name)


def save_aside(output_dir: Path, save: Callable[[str], None], replace_directory: bool) -> None:
    """
    Write with `save(directory)` into a hidden sibling, then move it into place: onto `output_dir` itself when
    `replace_directory`, else file by file into `output_dir` (which also holds checkpoints). A crash mid-write leaves
    the old files or the new ones, never a mix of half-written files. What is moved gets the modes a plain write
    would have given under the process umask.
    """
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=output_dir.parent))
    try:
        save(str(staged))
        if replace_directory:
            replace(staged, output_dir)
            return
        apply_umask(staged)
        output_dir.mkdir(parents=True, exist_ok=True)
        for path in sorted(staged.rglob("*")):
            target = output_dir / path.relative_to(staged)
            if path.is_dir():
                target.mkdir(exist_ok=True)
            else:
                os.replace(path, target)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def reloadable_name(name_or_path: str) -> str:
    """
    What an adapter should record as its base model: the absolute path of a local directory (a relative one would
    resolve from the working directory of whoever loads the adapter, or be taken for a Hub id), else the Hub id.
    """
    path = Path(name_or_path).expanduser()
    return str(path.resolve()) if path.is_dir() else name_or_path


def _dataset_names(script_args: LavinScriptArguments) -> list[str]:
    if script_args.dataset_name is not None:
        return [script_args.dataset_name]
    return ["synthetic ScienceQA-style set (lavin-train --synthetic)"] if script_args.synthetic else ["ScienceQA"]


def write_run_outputs(trainer: SFTTrainer, output_dir: Path, base_model: str, dataset_names: Sequence[str]) -> dict:
    """The model card (README.md) and the loss and routing plots of a finished run; returns the paths written."""
    from ..hub.local_card import write_local_adapter_card
    from ..mma import compute_routing_table
    from .plots import plot_routing_weights, plot_training_loss

    written = {}
    history = trainer.state.log_history
    if any("loss" in entry for entry in history):
        written["training_loss_png"] = plot_training_loss(history, output_dir / "training_loss.png")
    if getattr(trainer.model, "peft_type", None) == "MMA" or _is_mma(trainer.model):
        written["routing_weights_png"] = plot_routing_weights(
            compute_routing_table(trainer.model), output_dir / "routing_weights.png"
        )
    metrics = {key: value for key, value in (history[-1] if history else {}).items() if key.startswith("train_")}
    losses = [entry["loss"] for entry in history if "loss" in entry]
    if losses:
        metrics["last logged training loss"] = round(losses[-1], 4)
    written["model_card"] = write_local_adapter_card(
        output_dir, trainer.model, base_model=base_model, datasets=dataset_names, metrics=metrics
    )
    return written


def _is_mma(model) -> bool:
    config = getattr(model, "peft_config", {}).get("default")
    return str(getattr(config, "peft_type", "")) in ("MMA", "PeftType.MMA")


def run(
    script_args: LavinScriptArguments,
    training_args: SFTConfig,
    model_args: LavinModelArguments,
    mma_args: MMAArguments,
    callbacks: Sequence[TrainerCallback] | None = None,
) -> SFTTrainer:
    """
    Check the options, read the data, load the model, train the adapters and save them with a model card and plots
    (and the base model when it was built here). Nothing is written before the options and the data were checked: an
    `output_dir` holding an earlier run is refused unless `--overwrite` or resuming. The base model and the adapter
    are written aside and moved into place.
    """
    from ..distributed.engines import check_requested_engine

    # FSDP or DeepSpeed asked for but not runnable here (accelerate would fall back to DDP): stop before any work.
    check_requested_engine(training_args.distributed_state.distributed_type.name, training_args.use_cpu)
    validate_arguments(script_args, training_args, model_args, mma_args)
    output_dir = Path(training_args.output_dir)
    resuming = bool(resume_target(training_args.resume_from_checkpoint))
    check_output_dir(output_dir, script_args.overwrite, resuming)
    train_dataset, eval_dataset = load_datasets(script_args, training_args)
    model, processor = load_model_and_processor(
        model_args, seed=training_args.seed, trust_remote_code=training_args.trust_remote_code
    )
    reference_text = script_args.dataset_name is None  # ScienceQA in the official layout or the synthetic set
    train_dataset = prepare_for_lavin(train_dataset, processor, script_args.prompt_format, reference_text)
    if eval_dataset is not None:
        eval_dataset = prepare_for_lavin(eval_dataset, processor, script_args.prompt_format, reference_text)
    if training_args.process_index == 0 and script_args.overwrite and not resuming:
        _remove_earlier_run(output_dir)
    if model_args.model_name_or_path is not None:
        base_model = reloadable_name(model_args.model_name_or_path)
    else:
        # A base built here exists nowhere else: save it (before PEFT wraps it in place) so the adapter can reload.
        base_dir = output_dir / BASE_MODEL_DIR
        if training_args.process_index == 0:

            def save_base(directory: str) -> None:
                model.save_pretrained(directory)
                processor.save_pretrained(directory)

            save_aside(base_dir, save_base, replace_directory=True)
        base_model = str(base_dir.resolve())
    # PEFT writes the model's name_or_path into the adapter config (base_model_name_or_path), which
    # `AutoModelForImageTextToText.from_pretrained(adapter_dir)` and `lavin-eval --adapter` load from any directory.
    model.config._name_or_path = model.name_or_path = base_model
    trainer = build_trainer(
        model,
        processor,
        train_dataset,
        training_args,
        mma_args,
        eval_dataset,
        callbacks,
        peft_config=adapter_config(model_args, mma_args),
    )
    trainable, total = trainable_parameters(trainer.model)
    trainer.accelerator.print(
        f"Trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.4f}%): "
        f"{'the MMA adapters, projector and modality embedding' if model_args.peft_method == 'mma' else 'LoRA'}."
    )
    trainer.train(resume_from_checkpoint=resume_target(training_args.resume_from_checkpoint))
    # Every process calls save_model (FSDP and DeepSpeed gather the weights); only the main one writes files.
    save_aside(output_dir, trainer.save_model, replace_directory=False)
    if trainer.is_world_process_zero():
        processor.save_pretrained(output_dir)
        written = write_run_outputs(trainer, output_dir, base_model, _dataset_names(script_args))
        trainer.accelerator.print(
            f"Adapter saved to {output_dir}, with " + ", ".join(p.name for p in written.values())
        )
    return trainer


@user_errors("lavin-train")
def main(argv: Sequence[str]) -> None:
    """Console entry point `lavin-train`: `--help` is a short summary, `--help_all` lists every option (a bare
    `--debug` shows the traceback of an error)."""
    argv = list(argv)
    if any(flag in argv for flag in ("-h", "--help", "--help_all", "--help-all")):
        from .sft_arguments import LavinArgumentParser
        from .sft_help import short_help

        full = "--help_all" in argv or "--help-all" in argv
        print(LavinArgumentParser().format_help() if full else short_help(ARGUMENT_CLASSES))
        return
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run(*parse_args(argv))


__all__ = [
    "BASE_MODEL_DIR",
    "LavinModelArguments",
    "LavinScriptArguments",
    "MMAArguments",
    "build_trainer",
    "check_gradient_checkpointing",
    "load_model_and_processor",
    "main",
    "parse_args",
    "run",
    "save_aside",
    "validate_arguments",
]


if __name__ == "__main__":
    sys.exit(main())
