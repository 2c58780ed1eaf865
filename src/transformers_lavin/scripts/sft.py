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
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import SFTConfig, SFTTrainer, TrlParser

from .. import MMAConfig, build_lavin_from_parts
from ..cli_errors import UserInputError, user_errors
from ..conversion.staging import replace
from ..data import DEFAULT_PROMPT_FORMAT, load_scienceqa, write_synthetic_scienceqa
from ..distributed.engines import check_requested_engine
from ..testing_utils import build_tiny_lavin, tiny_lavin_config

logger = logging.getLogger(__name__)

BASE_MODEL_DIR = "base_model"
ADAPTER_CONFIG_NAME = "adapter_config.json"


@dataclass
class ScriptArguments:
    """Where the training data comes from."""

    dataset_dir: str | None = field(
        default=None,
        metadata={
            "help": "ScienceQA folder in the official layout (problems.json, pid_splits.json, images/). With "
            "--synthetic, where the synthetic set is written (default: <output_dir>/synthetic_scienceqa)."
        },
    )
    synthetic: bool = field(default=False, metadata={"help": "Write and train on the synthetic ScienceQA-style set."})
    synthetic_num_train: int = field(default=256, metadata={"help": "Training problems of the synthetic set."})
    synthetic_num_eval: int = field(
        default=64, metadata={"help": "Validation and test problems of the synthetic set."}
    )
    synthetic_image_size: int = field(default=32, metadata={"help": "Image side of the synthetic set, in pixels."})
    train_split: str = field(default="train", metadata={"help": "Split to train on (a key of pid_splits.json)."})
    eval_split: str | None = field(default=None, metadata={"help": "Split to evaluate the loss on, if any."})
    prompt_format: str = field(default=DEFAULT_PROMPT_FORMAT, metadata={"help": "ScienceQA prompt format."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N problems only."})
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "Reuse an output_dir that holds an earlier run: its base model, adapter and checkpoints are "
            "replaced. Also lets --synthetic write into a --dataset_dir that holds other data."
        },
    )


@dataclass
class LavinModelArguments:
    """The base model: exactly one of a saved LaVIN, pretrained parts to assemble, or a tiny random model."""

    model_name_or_path: str | None = field(default=None, metadata={"help": "LaVIN directory or Hub id."})
    vision_model: str | None = field(
        default=None, metadata={"help": "CLIP directory or Hub id, to assemble a fresh LaVIN (with --language_model)."}
    )
    language_model: str | None = field(
        default=None,
        metadata={"help": "Causal LM directory or Hub id, to assemble a fresh LaVIN (with --vision_model)."},
    )
    tiny: bool = field(default=False, metadata={"help": "A tiny random LaVIN built in code (no download)."})
    tiny_text_hidden_size: int = field(default=64, metadata={"help": "Width of the tiny LLM."})
    tiny_text_layers: int = field(default=2, metadata={"help": "Layers of the tiny LLM."})
    tiny_image_size: int = field(default=32, metadata={"help": "Image side of the tiny vision tower."})
    tiny_patch_size: int = field(default=8, metadata={"help": "Patch side of the tiny vision tower."})
    tiny_initializer_range: float = field(
        default=0.2,
        metadata={
            "help": "Weight scale of the tiny random LLM. Larger than transformers' 0.02 so that the frozen LM head "
            "can express confident predictions; at 0.02 its logits stay near uniform whatever the adapters do."
        },
    )
    model_revision: str | None = field(default=None, metadata={"help": "Revision of a Hub model."})
    dtype: str | None = field(
        default=None, metadata={"help": "Weights' dtype: 'bfloat16', 'float16', 'float32' or 'auto'."}
    )
    attn_implementation: str | None = field(default=None, metadata={"help": "'sdpa', 'eager', 'flash_attention_2'."})
    load_in_4bit: bool = field(
        default=False, metadata={"help": "LaVIN-lite: load the LLM in 4 bits (bitsandbytes NF4); needs a CUDA GPU."}
    )


@dataclass
class MMAArguments:
    """MMA adapter options (see `transformers_lavin.MMAConfig`); defaults are the published LaVIN-7B recipe."""

    mma_adapter_hidden_size: int = field(default=8, metadata={"help": "Bottleneck width of every adapter."})
    mma_groups: int = field(default=2, metadata={"help": "Groups of the adapters' up-projections."})
    mma_scale: float = field(default=1.0, metadata={"help": "Scale of the adapter branch."})
    mma_temperature: float = field(default=10.0, metadata={"help": "Router softmax temperature."})
    mma_dropout: float = field(default=0.1, metadata={"help": "Dropout on the adapters' bottleneck."})
    mma_adapter_type: str = field(default="attn", metadata={"help": "'attn' or 'block' (also the LLM MLPs)."})
    mma_vision_adapter_type: str = field(
        default="router", metadata={"help": "'router', 'router_block', 'normal' or 'none'."}
    )

    def to_peft_config(self) -> MMAConfig:
        return MMAConfig(
            adapter_hidden_size=self.mma_adapter_hidden_size,
            groups=self.mma_groups,
            scale=self.mma_scale,
            temperature=self.mma_temperature,
            dropout=self.mma_dropout,
            adapter_type=self.mma_adapter_type,
            vision_adapter_type=self.mma_vision_adapter_type,
        )


ARGUMENT_CLASSES = (ScriptArguments, SFTConfig, LavinModelArguments, MMAArguments)


def parse_args(
    argv: Sequence[str] | None = None,
) -> tuple[ScriptArguments, SFTConfig, LavinModelArguments, MMAArguments]:
    """Parse command-line arguments (and a YAML file given with `--config`) into the script's dataclasses."""
    parser = TrlParser(ARGUMENT_CLASSES)
    return tuple(parser.parse_args_and_config(args=argv))


def _dtype(name: str | None) -> torch.dtype | str | None:
    if name is None or name == "auto":
        return name
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"Unknown dtype {name!r}; use 'bfloat16', 'float16', 'float32' or 'auto'.")
    return dtype


def load_model_and_processor(model_args: LavinModelArguments, seed: int = 0):
    """
    Build or load the base LaVIN and its processor from `model_args`.

    Returns:
        `(model, processor)`: a frozen-to-be [`LavinForConditionalGeneration`] and its [`LavinProcessor`].
    """
    from_parts = model_args.vision_model is not None or model_args.language_model is not None
    sources = [model_args.model_name_or_path is not None, from_parts, model_args.tiny]
    if sum(sources) != 1:
        raise ValueError(
            "Give exactly one base model: --model_name_or_path (a LaVIN directory or Hub id), --vision_model with "
            "--language_model (to assemble one from pretrained parts), or --tiny (a tiny random model)."
        )
    if model_args.load_in_4bit and model_args.model_name_or_path is None:
        raise ValueError(
            "--load_in_4bit loads a saved LaVIN with --model_name_or_path. To quantise an assembled model, build it "
            "with build_lavin_from_parts, save_pretrained it, then train from that directory."
        )
    dtype = _dtype(model_args.dtype)
    if model_args.tiny:
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
        if model_args.vision_model is None or model_args.language_model is None:
            raise ValueError("Assembling a LaVIN needs both --vision_model and --language_model.")
        return build_lavin_from_parts(
            model_args.vision_model,
            model_args.language_model,
            dtype=dtype,
            seed=seed,
            revision=model_args.model_revision,
        )
    kwargs = {"revision": model_args.model_revision, "dtype": dtype}
    if model_args.attn_implementation is not None:
        kwargs["attn_implementation"] = model_args.attn_implementation
    if model_args.load_in_4bit:
        from ..quantization import lavin_lite_quantization_config

        kwargs["quantization_config"] = lavin_lite_quantization_config(bits=4)
    model = AutoModelForImageTextToText.from_pretrained(model_args.model_name_or_path, **kwargs)
    processor = AutoProcessor.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
    return model, processor


def load_datasets(
    script_args: ScriptArguments, training_args: SFTConfig
) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """The training (and optional evaluation) split, writing the synthetic set first with `--synthetic`."""
    if script_args.synthetic:
        root = Path(script_args.dataset_dir or Path(training_args.output_dir) / "synthetic_scienceqa")
        # Rank 0 writes while the other ranks wait, so no process reads a half-written file.
        with training_args.main_process_first(local=False, desc="writing the synthetic set"):
            if training_args.process_index == 0:
                write_synthetic_scienceqa(
                    root,
                    overwrite=script_args.overwrite,
                    num_train=script_args.synthetic_num_train,
                    num_val=script_args.synthetic_num_eval,
                    num_test=script_args.synthetic_num_eval,
                    image_size=script_args.synthetic_image_size,
                    seed=training_args.data_seed if training_args.data_seed is not None else training_args.seed,
                )
    elif script_args.dataset_dir is None:
        raise ValueError("Give --dataset_dir (a ScienceQA folder in the official layout) or --synthetic.")
    else:
        root = Path(script_args.dataset_dir)
    train = load_scienceqa(root, script_args.train_split, prompt_format=script_args.prompt_format)
    if script_args.max_train_samples is not None:
        train = train.select(range(min(script_args.max_train_samples, len(train))))
    evaluation = None
    if script_args.eval_split is not None:
        evaluation = load_scienceqa(root, script_args.eval_split, prompt_format=script_args.prompt_format)
    return train, evaluation


def check_gradient_checkpointing(training_args: SFTConfig) -> None:
    """MMA's routing table must keep its gradient: use non-reentrant checkpointing (the only kind MMA supports)."""
    if not training_args.gradient_checkpointing:
        return
    kwargs = dict(training_args.gradient_checkpointing_kwargs or {})
    if kwargs.get("use_reentrant"):
        raise ValueError(
            "MMA needs non-reentrant gradient checkpointing (reentrant checkpointing drops the routers' gradient). "
            "Set gradient_checkpointing_kwargs={'use_reentrant': false} or --gradient_checkpointing false."
        )
    kwargs["use_reentrant"] = False
    training_args.gradient_checkpointing_kwargs = kwargs


def build_trainer(
    model,
    processor,
    train_dataset: datasets.Dataset,
    training_args: SFTConfig,
    mma_args: MMAArguments,
    eval_dataset: datasets.Dataset | None = None,
    callbacks: Sequence[TrainerCallback] | None = None,
) -> SFTTrainer:
    """An `SFTTrainer` that wraps `model` in MMA adapters (`peft_config`) and trains them on prompt-completion rows."""
    check_gradient_checkpointing(training_args)
    # Images are processed on the fly by TRL's vision collator, which needs the raw columns.
    training_args.remove_unused_columns = False
    return SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        peft_config=mma_args.to_peft_config(),
        callbacks=list(callbacks or []),
    )


def trainable_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def _resume_target(value: str | bool | None) -> str | bool | None:
    # `--resume_from_checkpoint true` (or `last`) means the newest checkpoint in output_dir, as Trainer's True does.
    if isinstance(value, str) and value.lower() in ("true", "last"):
        return True
    return value


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
    the old files or the new ones, never a mix of half-written files.
    """
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=output_dir.parent))
    try:
        save(str(staged))
        if replace_directory:
            replace(staged, output_dir)
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        for path in sorted(staged.rglob("*")):
            target = output_dir / path.relative_to(staged)
            if path.is_dir():
                target.mkdir(exist_ok=True)
            else:
                os.replace(path, target)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def run(
    script_args: ScriptArguments,
    training_args: SFTConfig,
    model_args: LavinModelArguments,
    mma_args: MMAArguments,
    callbacks: Sequence[TrainerCallback] | None = None,
) -> SFTTrainer:
    """
    Load the model and data, train the MMA adapters and save them (and the base model when it was built here).

    Everything is checked before anything is written to `output_dir`: an `output_dir` holding an earlier run is
    refused unless `--overwrite` or resuming. The base model and the adapter are written aside and moved into place.
    """
    # FSDP or DeepSpeed asked for but not runnable here (accelerate would fall back to DDP): stop before any work.
    check_requested_engine(training_args.distributed_state.distributed_type.name, training_args.use_cpu)
    output_dir = Path(training_args.output_dir)
    resuming = bool(_resume_target(training_args.resume_from_checkpoint))
    check_output_dir(output_dir, script_args.overwrite, resuming)
    train_dataset, eval_dataset = load_datasets(script_args, training_args)
    model, processor = load_model_and_processor(model_args, seed=training_args.seed)
    if training_args.process_index == 0 and script_args.overwrite and not resuming:
        _remove_earlier_run(output_dir)
    if model_args.model_name_or_path is None:
        # A base built here exists nowhere else: save it (before PEFT wraps it in place) so the adapter can reload,
        # and let the adapter's config name it.
        base_dir = output_dir / BASE_MODEL_DIR
        if training_args.process_index == 0:

            def save_base(directory: str) -> None:
                model.save_pretrained(directory)
                processor.save_pretrained(directory)

            save_aside(base_dir, save_base, replace_directory=True)
        model.config._name_or_path = str(base_dir)
    trainer = build_trainer(model, processor, train_dataset, training_args, mma_args, eval_dataset, callbacks)
    trainable, total = trainable_parameters(trainer.model)
    trainer.accelerator.print(
        f"Trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.4f}%): the MMA adapters, "
        "projector and modality embedding."
    )
    trainer.train(resume_from_checkpoint=_resume_target(training_args.resume_from_checkpoint))
    # Every process calls save_model (FSDP and DeepSpeed gather the weights); only the main one writes files.
    save_aside(output_dir, trainer.save_model, replace_directory=False)
    trainer.accelerator.print(f"Adapter saved to {output_dir}.")
    return trainer


@user_errors("lavin-train")
def main(argv: Sequence[str]) -> None:
    """Console entry point `lavin-train` (a bare `--debug` shows the traceback of an error)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run(*parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
