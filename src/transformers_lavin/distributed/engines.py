"""Which sharding engine a launch asked for, and a refusal when it cannot run: never a silent fallback to DDP.

`accelerate launch --config_file fsdp.yaml` (or `deepspeed_zero2.yaml`) asks for its engine through environment
variables. accelerate only turns them on for GPU-like devices: with `--use_cpu true` (or no GPU) it sets up plain
multi-CPU DDP instead, and the run trains unsharded while the user believes it is sharded. This module names the
engine that was asked for and stops the run, saying what to use instead, when the processes will not run it.
"""

from __future__ import annotations

import os
from typing import Literal

from ..cli_errors import UserInputError

Engine = Literal["fsdp", "deepspeed"]

FSDP_ON_CPU_FIX = (
    "accelerate does not run FSDP on CPU processes. For FSDP2 on CPUs (gloo) use the package's launcher: "
    "`torchrun --nproc_per_node 2 -m transformers_lavin.scripts.train_fsdp --tiny --synthetic --output_dir out ...`; "
    "on GPUs drop --use_cpu."
)
DEEPSPEED_FIX = (
    "Run DeepSpeed on CUDA GPUs (docs/training.md), or use FSDP2, which runs on CPUs: "
    "`torchrun --nproc_per_node 2 -m transformers_lavin.scripts.train_fsdp ...`."
)


class EngineUnavailableError(UserInputError):
    """The requested sharding engine cannot run in these processes."""


def _flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() in ("1", "true", "yes")


def requested_engine() -> Engine | None:
    """The engine an `accelerate launch` config asked for (`fsdp`, `deepspeed`), or `None` for DDP / one process."""
    if _flag("ACCELERATE_USE_FSDP"):
        return "fsdp"
    if _flag("ACCELERATE_USE_DEEPSPEED"):
        return "deepspeed"
    return None


def check_requested_engine(distributed_type: str, use_cpu: bool) -> None:
    """
    Stop, with what to do instead, when the engine asked for will not run.

    Args:
        distributed_type: What the processes set up (`PartialState().distributed_type.name`, e.g. `MULTI_CPU`).
        use_cpu: Whether the run was told to stay on the CPU.

    Raises:
        EngineUnavailableError: FSDP or DeepSpeed was requested, but the processes run on the CPU (accelerate then
            sets up DDP) or without a distributed setup.
    """
    engine = requested_engine()
    if engine is None:
        return
    if use_cpu or distributed_type in ("MULTI_CPU", "NO"):
        where = "with --use_cpu true" if use_cpu else f"here (accelerate set up {distributed_type})"
        fix = FSDP_ON_CPU_FIX if engine == "fsdp" else DEEPSPEED_FIX
        raise EngineUnavailableError(
            f"The launch asked for {'FSDP' if engine == 'fsdp' else 'DeepSpeed'}, which cannot run {where}: "
            f"training would run as plain DDP, without sharding. Stopping. {fix}"
        )
