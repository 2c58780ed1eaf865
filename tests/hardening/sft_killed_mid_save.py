"""Runs `lavin-train` and SIGKILLs it inside the save of `checkpoint-<step>`, like a job killed mid-save.

`LAVIN_TEST_KILL_IN_SAVE=<point>:<step>`, where point is where in the Trainer's save the process dies:
- `weights`: half of `adapter_model.safetensors` written (nothing else of the checkpoint);
- `optimizer`: the weights, optimizer and scheduler written; no RNG state, no `trainer_state.json`;
- `state`: everything but the last half of `trainer_state.json`.
"""

import os
import signal
import sys

import transformers_lavin  # noqa: F401  # isort: skip  (first: no Hub kernel or telemetry requests)
import peft.peft_model
import safetensors.torch
from transformers import Trainer, TrainerState

from transformers_lavin.scripts.sft import parse_args, run

POINT, STEP = os.environ["LAVIN_TEST_KILL_IN_SAVE"].split(":")
STEP = int(STEP)
current_step = {"value": 0}


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def in_the_save() -> bool:
    return current_step["value"] == STEP


original_save_checkpoint = Trainer._save_checkpoint


def save_checkpoint(self, model, trial):
    current_step["value"] = self.state.global_step
    return original_save_checkpoint(self, model, trial)


original_save_file = safetensors.torch.save_file


def save_file(tensors, filename, metadata=None):
    if POINT == "weights" and in_the_save() and str(filename).endswith("adapter_model.safetensors"):
        original_save_file(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as handle:
            handle.truncate(os.path.getsize(filename) // 2)
        die()
    return original_save_file(tensors, filename, metadata=metadata)


original_save_optimizer = Trainer._save_optimizer_and_scheduler


def save_optimizer_and_scheduler(self, output_dir):
    original_save_optimizer(self, output_dir)
    if POINT == "optimizer" and in_the_save():
        die()


original_save_to_json = TrainerState.save_to_json


def save_to_json(self, json_path):
    original_save_to_json(self, json_path)
    if POINT == "state" and in_the_save():
        with open(json_path, "r+b") as handle:
            handle.truncate(os.path.getsize(json_path) // 2)
        die()


Trainer._save_checkpoint = save_checkpoint
Trainer._save_optimizer_and_scheduler = save_optimizer_and_scheduler
TrainerState.save_to_json = save_to_json
peft.peft_model.safe_save_file = save_file  # PEFT's save_pretrained writes the adapter weights with it

if __name__ == "__main__":
    run(*parse_args(sys.argv[1:]))
