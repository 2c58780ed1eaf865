"""LaVIN on TRL's `SFTTrainer`: the base model, the adapters, the trainer, and what a finished run writes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..conversion.staging import apply_umask
from .arguments import (
    LavinModelArguments,
    MMAArguments,
    check_gradient_checkpointing,
    check_model_arguments,
    torch_dtype,
)
from .checkpoints import BASE_MODEL_DIR, reloadable_name, save_aside

if TYPE_CHECKING:
    import datasets
    import torch
    from trl import SFTConfig, SFTTrainer


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


def record_base_model(
    model, processor, model_name_or_path: str | None, output_dir: Path, is_main_process: bool
) -> str:
    """
    Where the adapter's base model lives, written into the model's `name_or_path` (PEFT records it as the adapter's
    `base_model_name_or_path`, which `from_pretrained(adapter_dir)` and `lavin-eval --adapter` load from any
    directory): the Hub id or absolute folder it was loaded from, or, for a base built here (tiny, or assembled from
    parts), `output_dir/base_model`, where it is saved now, before PEFT wraps it in place.
    """
    if model_name_or_path is not None:
        base_model = reloadable_name(model_name_or_path)
    else:
        base_dir = output_dir / BASE_MODEL_DIR
        if is_main_process:

            def save_base(directory: str) -> None:
                model.save_pretrained(directory)
                processor.save_pretrained(directory)

            save_aside(base_dir, save_base, replace_directory=True)
        base_model = str(base_dir.resolve())
    model.config._name_or_path = model.name_or_path = base_model
    return base_model


def write_run_outputs(trainer: SFTTrainer, output_dir: Path, base_model: str, dataset_names: Sequence[str]) -> dict:
    """The model card (README.md) and the loss and routing plots of a finished run; returns the paths written."""
    from huggingface_hub import ModelCard

    from ..hub.cards import _is_hub_id
    from ..hub.local_card import write_local_adapter_card
    from ..mma import compute_routing_table
    from ..scripts.plots import plot_routing_weights, plot_training_loss

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
    # TRL's card first: its metadata (the base model only as a Hub id), tags, training procedure, framework versions
    # and citations, which the LaVIN/MMA card keeps beside its own usage snippet and adapter settings.
    hub_datasets = [name for name in dataset_names if _is_hub_id(name)]
    trainer.create_model_card(dataset_name=hub_datasets[0] if hub_datasets else None)
    written["model_card"] = write_local_adapter_card(
        output_dir,
        trainer.model,
        base_model=base_model,
        datasets=dataset_names,
        metrics=metrics,
        trainer_card=ModelCard.load(output_dir / "README.md"),
    )
    return written


def _is_mma(model) -> bool:
    config = getattr(model, "peft_config", {}).get("default")
    return str(getattr(config, "peft_type", "")) in ("MMA", "PeftType.MMA")


def save_run(trainer: SFTTrainer, processor, output_dir: Path, base_model: str, dataset_names: Sequence[str]) -> None:
    """
    Save the trained adapter (written aside and moved into place), its processor, model card and plots. Every
    process calls this (FSDP and DeepSpeed gather the weights in `save_model`); only the main one writes files.
    """
    save_aside(output_dir, trainer.save_model, replace_directory=False)
    if trainer.is_world_process_zero():
        processor.save_pretrained(output_dir)
        written = write_run_outputs(trainer, output_dir, base_model, dataset_names)
        trainer.accelerator.print(
            f"Adapter saved to {output_dir}, with " + ", ".join(p.name for p in written.values())
        )


__all__ = [
    "OutputModesCallback",
    "adapter_config",
    "build_trainer",
    "load_model_and_processor",
    "record_base_model",
    "save_run",
    "trainable_parameters",
    "write_run_outputs",
]
