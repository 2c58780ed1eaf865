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
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..cli_errors import user_errors
from ..training.arguments import (
    ARGUMENT_CLASSES,
    LavinArgumentParser,
    LavinModelArguments,
    LavinScriptArguments,
    MMAArguments,
    parse_args,
    validate_arguments,
)

if TYPE_CHECKING:
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer


def run(
    script_args: LavinScriptArguments,
    training_args: SFTConfig,
    model_args: LavinModelArguments,
    mma_args: MMAArguments,
    callbacks: Sequence[TrainerCallback] | None = None,
) -> SFTTrainer | None:
    """
    Check the options, load the model and the data, train the adapters and save them with a model card and plots
    (and the base model when it was built here). Nothing is written before the options and the data were checked: an
    `output_dir` holding an earlier run is refused unless `--overwrite` or resuming. Resuming a run that already
    reached its last step trains nothing and returns `None`.
    """
    from ..data.training_datasets import load_training_datasets, training_dataset_names
    from ..distributed.engines import check_requested_engine
    from ..training import checkpoints, trainer

    # FSDP or DeepSpeed asked for but not runnable here (accelerate would fall back to DDP): stop before any work.
    check_requested_engine(training_args.distributed_state.distributed_type.name, training_args.use_cpu)
    validate_arguments(script_args, training_args, model_args, mma_args)
    output_dir = Path(training_args.output_dir)
    checkpoint = checkpoints.resume_point(output_dir, training_args.resume_from_checkpoint, script_args.overwrite)
    if checkpoint is not None and checkpoints.run_is_finished(checkpoint, training_args.max_steps):
        return None

    model, processor = trainer.load_model_and_processor(
        model_args, seed=training_args.seed, trust_remote_code=training_args.trust_remote_code
    )
    train_dataset, eval_dataset = load_training_datasets(script_args, training_args, processor)

    main_process = training_args.process_index == 0
    if main_process and script_args.overwrite and checkpoint is None:
        checkpoints.remove_earlier_run(output_dir)
    base_model = trainer.record_base_model(model, processor, model_args.model_name_or_path, output_dir, main_process)
    sft_trainer = trainer.build_trainer(
        model,
        processor,
        train_dataset,
        training_args,
        mma_args,
        eval_dataset,
        callbacks,
        peft_config=trainer.adapter_config(model_args, mma_args),
    )
    trainable, total = trainer.trainable_parameters(sft_trainer.model)
    sft_trainer.accelerator.print(
        f"Trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.4f}%): "
        f"{'the MMA adapters, projector and modality embedding' if model_args.peft_method == 'mma' else 'LoRA'}."
    )
    sft_trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_run(sft_trainer, processor, output_dir, base_model, training_dataset_names(script_args))
    return sft_trainer


@user_errors("lavin-train")
def main(argv: Sequence[str]) -> None:
    """Console entry point `lavin-train`: `--help` is a short summary, `--help_all` lists every option (a bare
    `--debug` shows the traceback of an error)."""
    argv = list(argv)
    if any(flag in argv for flag in ("-h", "--help", "--help_all", "--help-all")):
        from .sft_help import short_help

        full = "--help_all" in argv or "--help-all" in argv
        print(LavinArgumentParser().format_help() if full else short_help(ARGUMENT_CLASSES))
        return
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run(*parse_args(argv))


__all__ = ["main", "parse_args", "run"]


if __name__ == "__main__":
    sys.exit(main())
