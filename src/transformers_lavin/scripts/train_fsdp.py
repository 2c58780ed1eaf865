"""Train MMA adapters with FSDP2 (`fully_shard`), on CPU processes (gloo) or GPUs (NCCL): `lavin-train`'s model,
data and MMA arguments, in a small training loop of its own.

accelerate does not run FSDP on CPU processes (it silently sets up DDP), so this launcher shards with PyTorch
directly. Launch with torchrun; one process (plain `python -m ...`) trains the same model unsharded:

```bash
torchrun --nproc_per_node 2 -m transformers_lavin.scripts.train_fsdp --tiny --synthetic --output_dir /tmp/lavin-fsdp \
    --max_steps 10 --per_device_train_batch_size 2 --save_steps 5
# after a crash, the same command with --resume_from_checkpoint true
```

The output directory ends as `lavin-train`'s: the adapter (`adapter_config.json`, `adapter_model.safetensors`),
the processor, `base_model/` when the base was built here, and `checkpoint-<step>/` sharded checkpoints
(`torch.distributed.checkpoint`, trainable tensors and optimizer states only, resharded on load).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
import torch.distributed as dist
import torch.nn.functional as F
from peft import get_peft_model
from transformers import get_scheduler
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import TrlParser
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from ..cli_errors import UserInputError, user_errors
from ..data import load_scienceqa
from ..data.training_datasets import write_synthetic_set
from ..distributed import load_sharded_checkpoint, save_adapter, save_sharded_checkpoint, shard_lavin
from ..distributed.checkpoint import LOOP_STATE_NAME
from ..training import (
    BASE_MODEL_DIR,
    LavinModelArguments,
    LavinScriptArguments,
    MMAArguments,
    load_model_and_processor,
)
from ..training.checkpoints import TRAINER_STATE_NAME, reloadable_name, save_aside

logger = logging.getLogger(__name__)
IGNORE_INDEX = -100
DCP_METADATA_NAME = ".metadata"  # written by torch.distributed.checkpoint once every shard is saved


@dataclass
class FSDPTrainingArguments:
    """The loop's options; names and meanings as in `SFTConfig`, so a `lavin-train` command carries over."""

    output_dir: str = field(metadata={"help": "Where the adapter and the checkpoints go."})
    max_steps: int = field(default=100, metadata={"help": "Optimizer steps."})
    per_device_train_batch_size: int = field(default=4, metadata={"help": "Rows per process and step."})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    lr_scheduler_type: str = field(default="linear", metadata={"help": "transformers scheduler name."})
    warmup_steps: int = field(default=0, metadata={"help": "Warmup steps of the scheduler."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0: none)."})
    max_length: int | None = field(default=1024, metadata={"help": "Truncate rows to this many tokens."})
    seed: int = field(default=42, metadata={"help": "Seed of the adapters' init, data order and dropout."})
    save_steps: int = field(default=0, metadata={"help": "Write a sharded checkpoint every N steps (0: never)."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "A checkpoint directory, or 'true' for the newest in output_dir."}
    )
    logging_steps: int = field(default=10, metadata={"help": "Print the loss every N steps."})
    bf16: bool = field(default=False, metadata={"help": "Gather the weights in bf16 (gradients reduced in fp32)."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run a saved model's own code (--model_name_or_path), as in SFTConfig."}
    )

    def __post_init__(self):
        # A value out of range would otherwise train nothing (or never save) and still exit 0.
        for name, low in (
            ("max_steps", 1),
            ("per_device_train_batch_size", 1),
            ("save_steps", 0),
            ("logging_steps", 1),
        ):
            value = getattr(self, name)
            if value < low:
                raise ValueError(f"--{name} must be at least {low}; got {value}.")


ARGUMENT_CLASSES = (LavinScriptArguments, FSDPTrainingArguments, LavinModelArguments, MMAArguments)


def parse_args(argv: Sequence[str] | None = None):
    """Parse the command line (and a YAML file given with `--config`) into the script's dataclasses."""
    return tuple(TrlParser(ARGUMENT_CLASSES).parse_args_and_config(args=argv))


def init_distributed() -> tuple[int, int, torch.device]:
    """Join torchrun's process group (NCCL for GPUs, gloo on CPUs); one process needs none. (rank, world, device)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(device)
        # The CPU half of a GPU group (gloo) serves the gathers to the CPU of the adapter and the checkpoints.
        dist.init_process_group("cuda:nccl,cpu:gloo" if cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return rank, world_size, device


def batch_indices(step: int, num_rows: int, global_batch: int, seed: int) -> list[int]:
    """The rows of optimizer step `step` (0-based), all ranks together: a fresh permutation per epoch, last
    incomplete batch dropped. A pure function of its arguments, so a resumed run reads exactly what it would have."""
    steps_per_epoch = num_rows // global_batch
    if steps_per_epoch == 0:
        raise ValueError(f"{num_rows} training rows cannot fill one global batch of {global_batch}.")
    epoch, position = divmod(step, steps_per_epoch)
    order = torch.randperm(num_rows, generator=torch.Generator().manual_seed(seed + epoch))
    return order[position * global_batch : (position + 1) * global_batch].tolist()


def token_loss(logits: torch.Tensor, labels: torch.Tensor, world_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """
    The loss this rank backpropagates, and the global mean loss (for logging).

    Each rank sums its tokens' cross-entropy and divides by the token count of all ranks together, times the world
    size, because FSDP averages gradients over the ranks: the result is the gradient of the mean over every token of
    the global batch, exactly what one process gets on the whole batch, however the tokens split between ranks.
    """
    shifted = labels[:, 1:].to(logits.device)
    total = F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), shifted.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    counts = torch.stack([(shifted != IGNORE_INDEX).sum().to(torch.float64), total.detach().to(torch.float64)])
    if dist.is_initialized():
        dist.all_reduce(counts)
    return total * world_size / counts[0].float(), counts[1] / counts[0]


def is_complete_sharded_checkpoint(directory: Path) -> bool:
    """Whether `directory` holds what [`save_sharded_checkpoint`] writes last: DCP's metadata and the loop state."""
    return (directory / DCP_METADATA_NAME).is_file() and (directory / LOOP_STATE_NAME).is_file()


def newest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete `checkpoint-<step>` of `output_dir` (one cut short by a crash is passed over)."""
    found = [
        p
        for p in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
        if p.is_dir() and p.name.split("-")[-1].isdigit() and is_complete_sharded_checkpoint(p)
    ]
    return max(found, key=lambda p: int(p.name.split("-")[-1]), default=None)


def resolve_resume_checkpoint(resume: str | None, output_dir: Path) -> Path | None:
    """
    The checkpoint `--resume_from_checkpoint` names ('true'/'last': the newest complete one in `output_dir`), checked
    before anything is built or written.
    """
    if not resume:
        return None
    if resume.lower() in ("true", "last"):
        checkpoint = newest_checkpoint(output_dir)
        if checkpoint is None:
            raise UserInputError(
                f"--resume_from_checkpoint {resume}: no complete {PREFIX_CHECKPOINT_DIR}-* in {output_dir}; start "
                "without --resume_from_checkpoint."
            )
        return checkpoint
    checkpoint = Path(resume)
    if not checkpoint.is_dir():
        raise UserInputError(f"--resume_from_checkpoint {resume}: no such directory.")
    if not is_complete_sharded_checkpoint(checkpoint):
        if (checkpoint / TRAINER_STATE_NAME).is_file():
            raise UserInputError(
                f"--resume_from_checkpoint {resume} is a lavin-train (Trainer) checkpoint; train_fsdp resumes only "
                "its own sharded checkpoints. Resume it with lavin-train --resume_from_checkpoint, or start anew."
            )
        raise UserInputError(
            f"--resume_from_checkpoint {resume} is not a complete train_fsdp checkpoint (no {DCP_METADATA_NAME} and "
            f"{LOOP_STATE_NAME}: a save cut short, or another kind of folder); give an earlier checkpoint or 'true'."
        )
    return checkpoint


def check_data_options(script_args: LavinScriptArguments) -> None:
    """This loop trains on ScienceQA (`--dataset_dir` or `--synthetic`); a Hub or file data set would be ignored."""
    for name in ("dataset_name", "dataset_config"):
        if getattr(script_args, name, None):
            raise UserInputError(
                f"--{name} is not supported by train_fsdp, which trains on ScienceQA (--dataset_dir or --synthetic); "
                "train on other data with lavin-train (accelerate's FSDP on GPUs)."
            )


def _load_train_dataset(script_args: LavinScriptArguments, args: FSDPTrainingArguments, rank: int) -> datasets.Dataset:
    root = Path(script_args.dataset_dir or Path(args.output_dir) / "synthetic_scienceqa")
    if script_args.synthetic and rank == 0:  # rank 0 writes while the others wait
        write_synthetic_set(script_args, root, args.seed)
    if dist.is_initialized():
        dist.barrier()
    train = load_scienceqa(root, script_args.dataset_train_split, prompt_format=script_args.prompt_format)
    if script_args.max_train_samples is not None:
        train = train.select(range(min(script_args.max_train_samples, len(train))))
    return train


def run(
    script_args: LavinScriptArguments,
    args: FSDPTrainingArguments,
    model_args: LavinModelArguments,
    mma_args: MMAArguments,
    on_step_end: Callable[[int, torch.nn.Module], None] | None = None,
) -> torch.nn.Module:
    """
    Build the model, inject MMA, shard it (more than one process), train `max_steps` steps and save the adapter.

    Args:
        on_step_end: Called as `on_step_end(step, model)` after each optimizer step (and checkpoint), for tests.

    Returns:
        The trained (sharded when distributed) `PeftModel`.
    """
    output_dir = Path(args.output_dir)
    check_data_options(script_args)
    checkpoint = resolve_resume_checkpoint(args.resume_from_checkpoint, output_dir)
    rank, world_size, device = init_distributed()
    train = _load_train_dataset(script_args, args, rank)
    model, processor = load_model_and_processor(model_args, seed=args.seed, trust_remote_code=args.trust_remote_code)
    if model_args.model_name_or_path is None:
        if rank == 0:  # the base exists nowhere else: save it (aside, then renamed) so the adapter can be reloaded

            def save_base(directory: str) -> None:
                model.save_pretrained(directory)
                processor.save_pretrained(directory)

            save_aside(output_dir / BASE_MODEL_DIR, save_base, replace_directory=True)
        base_model = str((output_dir / BASE_MODEL_DIR).resolve())
    else:
        base_model = reloadable_name(model_args.model_name_or_path)
    # The adapter's base_model_name_or_path: a path that loads from any working directory.
    model.config._name_or_path = model.name_or_path = base_model
    torch.manual_seed(args.seed)  # the adapters' init: the same on every rank and in a one-process run
    model = get_peft_model(model, mma_args.to_peft_config()).to(device)
    model.train()
    if world_size > 1:
        shard_lavin(model, param_dtype=torch.bfloat16 if args.bf16 else None)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.learning_rate, weight_decay=args.weight_decay)
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer, args.warmup_steps, args.max_steps)
    collator = DataCollatorForVisionLanguageModeling(processor, max_length=args.max_length, completion_only_loss=True)

    start = 0
    torch.manual_seed(args.seed + rank)  # dropout masks: one stream per rank
    if checkpoint is not None:
        loop_state = load_sharded_checkpoint(checkpoint, model, optimizer)
        scheduler.load_state_dict(loop_state["scheduler"])
        start = loop_state["step"]
        if rank == 0:
            print(f"Resumed from {checkpoint} at step {start}.", flush=True)

    per_device = args.per_device_train_batch_size
    for step in range(start, args.max_steps):
        rows = batch_indices(step, len(train), per_device * world_size, args.seed)
        batch = collator([train[i] for i in rows[rank * per_device : (rank + 1) * per_device]])
        labels = batch.pop("labels")
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        loss, mean_loss = token_loss(model(**batch).logits, labels, world_size)
        loss.backward()
        if args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(trainable, args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        if rank == 0 and args.logging_steps and done % args.logging_steps == 0:
            print({"step": done, "loss": round(float(mean_loss), 6), "lr": scheduler.get_last_lr()[0]}, flush=True)
        if args.save_steps and done % args.save_steps == 0:
            loop_state = {"step": done, "scheduler": scheduler.state_dict()}
            save_sharded_checkpoint(output_dir / f"{PREFIX_CHECKPOINT_DIR}-{done}", model, optimizer, loop_state)
        if on_step_end is not None:
            on_step_end(done, model)

    save_adapter(model, output_dir)
    if rank == 0:
        processor.save_pretrained(output_dir)
        print(f"Adapter saved to {output_dir}.", flush=True)
    return model


@user_errors("lavin-train-fsdp")
def main(argv: Sequence[str]) -> None:
    """Entry point (`python -m transformers_lavin.scripts.train_fsdp`, under torchrun for several processes)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        run(*parse_args(argv))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
