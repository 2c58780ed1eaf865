"""Runs `lavin-train` (transformers_lavin.scripts.sft) with test hooks, for the subprocess tests.

- `LAVIN_TEST_KILL_AT_STEP=k`: the process SIGKILLs itself at the end of optimiser step k, like a crashed job.
- `LAVIN_TEST_WEIGHTS_DIR=dir`: after training, each rank writes its trainable tensors to `dir/rank{i}.safetensors`.
"""

import os
import signal
import sys
from pathlib import Path

from safetensors.torch import save_file

import transformers_lavin  # noqa: F401  # isort: skip  (first: no Hub kernel or telemetry requests)
from transformers import TrainerCallback

from transformers_lavin.scripts.sft import parse_args, run


class KillAtStep(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class SaveRankWeights(TrainerCallback):
    def __init__(self, directory: str):
        self.directory = Path(directory)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        tensors = {name: p.detach().clone().contiguous() for name, p in model.named_parameters() if p.requires_grad}
        self.directory.mkdir(parents=True, exist_ok=True)
        metadata = {
            "world_size": str(args.world_size),
            "distributed_type": args.distributed_state.distributed_type.name,
        }
        save_file(tensors, self.directory / f"rank{args.process_index}.safetensors", metadata=metadata)


if __name__ == "__main__":
    callbacks = []
    if "LAVIN_TEST_KILL_AT_STEP" in os.environ:
        callbacks.append(KillAtStep(int(os.environ["LAVIN_TEST_KILL_AT_STEP"])))
    if "LAVIN_TEST_WEIGHTS_DIR" in os.environ:
        callbacks.append(SaveRankWeights(os.environ["LAVIN_TEST_WEIGHTS_DIR"]))
    run(*parse_args(sys.argv[1:]), callbacks=callbacks)
