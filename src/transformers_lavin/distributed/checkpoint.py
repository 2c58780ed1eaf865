"""Saving a sharded (FSDP2) MMA run: the adapter as a normal PEFT directory, and sharded checkpoints to resume.

Only the trainable tensors are gathered or checkpointed: the frozen LLM and CLIP weights come from the base model
and never change, so a checkpoint of LaVIN-13B holds a few MB of adapter and optimizer state, not 26 GB.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from ..conversion.staging import replace

TRAINABLE_ONLY = StateDictOptions(ignore_frozen_params=True)
RNG_STATE_NAME = "rng_state_{rank}.pt"
LOOP_STATE_NAME = "loop_state.pt"


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def gather_adapter_state_dict(model: nn.Module, to_all_ranks: bool = False) -> dict[str, torch.Tensor]:
    """
    The full (unsharded) trainable tensors of `model`, keyed as `model.state_dict()` keys them. A collective: every
    rank calls it.

    Args:
        model: The (possibly FSDP2-sharded) `PeftModel`.
        to_all_ranks: Give every rank the tensors; by default only rank 0 gets them (on the CPU), others `{}`.
    """
    options = StateDictOptions(full_state_dict=True, cpu_offload=not to_all_ranks, ignore_frozen_params=True)
    return get_model_state_dict(model, options=options)


def save_adapter(model: nn.Module, output_dir: str | os.PathLike, **save_kwargs: Any) -> None:
    """
    Gather the adapter of a sharded `PeftModel` and write it as `save_pretrained` does (adapter_config.json and
    adapter_model.safetensors, PEFT's keys), on rank 0. A collective: every rank calls it.
    """
    state_dict = gather_adapter_state_dict(model)
    if _rank() == 0:
        # PeftModel.save_pretrained picks the adapter's keys out of the given state dict and renames them as usual.
        model.save_pretrained(str(output_dir), state_dict=state_dict, **save_kwargs)
    _barrier()


def _checkpoint_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    return {
        "model": get_model_state_dict(model, options=TRAINABLE_ONLY),
        "optimizer": get_optimizer_state_dict(model, optimizer, options=TRAINABLE_ONLY),
    }


def save_sharded_checkpoint(
    directory: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loop_state: dict[str, Any],
) -> None:
    """
    Write a sharded checkpoint: each rank its shards of the trainable parameters and optimizer states
    (`torch.distributed.checkpoint`), its RNG state, and rank 0 the loop state (step, scheduler). Written into a
    hidden sibling and renamed into place, so a crash leaves no half-written checkpoint. A collective.
    """
    directory = Path(directory)
    staged = directory.with_name(f".{directory.name}.partial")
    if _rank() == 0 and staged.exists():
        shutil.rmtree(staged)
    _barrier()
    dcp.save(_checkpoint_state(model, optimizer), checkpoint_id=str(staged))
    torch.save(torch.get_rng_state(), staged / RNG_STATE_NAME.format(rank=_rank()))
    if _rank() == 0:
        torch.save(loop_state, staged / LOOP_STATE_NAME)
    _barrier()
    if _rank() == 0:
        replace(staged, directory)  # also over a checkpoint a crash left incomplete under this name
    _barrier()


def load_sharded_checkpoint(
    directory: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """
    Load a checkpoint written by [`save_sharded_checkpoint`] into `model` and `optimizer` (sharded as when it was
    saved or not: DCP reshards), restore this rank's RNG state, and return the loop state.
    """
    directory = Path(directory)
    state = _checkpoint_state(model, optimizer)
    dcp.load(state, checkpoint_id=str(directory))
    set_model_state_dict(model, state["model"], options=StateDictOptions(strict=False))
    set_optimizer_state_dict(model, optimizer, state["optimizer"], options=TRAINABLE_ONLY)
    rng_path = directory / RNG_STATE_NAME.format(rank=_rank())
    if rng_path.exists():
        torch.set_rng_state(torch.load(rng_path, weights_only=True))
    return torch.load(directory / LOOP_STATE_NAME, weights_only=True)
