"""`lavin-train` SIGKILLed inside a checkpoint save (a real subprocess): `--resume_from_checkpoint true` continues
from the last complete checkpoint and ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

HOOKS = str(Path(__file__).with_name("sft_killed_mid_save.py"))
LAVIN_TRAIN = str(Path(sys.executable).with_name("lavin-train"))
TINY_RUN = ["--tiny", "--synthetic", "--synthetic_num_train", "8", "--max_steps", "2", "--save_steps", "1",
            "--per_device_train_batch_size", "2", "--bf16", "false", "--use_cpu", "true", "--report_to", "none"]  # fmt: skip


def _train(output: Path, *extra: str, kill: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, HOOKS] if kill else [LAVIN_TRAIN]
    env = {**os.environ, **({"LAVIN_TEST_KILL_IN_SAVE": kill} if kill else {})}
    return subprocess.run(
        [*command, *TINY_RUN, "--output_dir", str(output), *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, torch.Tensor]:
    output = tmp_path_factory.mktemp("uninterrupted") / "out"
    result = _train(output)
    assert result.returncode == 0, result.stderr[-3000:]
    return load_file(str(output / "adapter_model.safetensors"))


@pytest.mark.parametrize(
    "point",
    [
        "weights",  # half the adapter weights on disk, no trainer_state.json (the checkpoint-N)
        "state",  # weights complete, trainer_state.json half written
    ],
)
def test_resume_after_a_kill_mid_save_continues_from_the_last_complete_checkpoint(tmp_path, uninterrupted, point):
    output = tmp_path / "out"
    killed = _train(output, kill=f"{point}:2")
    assert killed.returncode == -9, killed.stderr[-3000:]  # SIGKILL, inside the save of checkpoint-2
    first = (output / "checkpoint-1" / "adapter_model.safetensors").read_bytes()
    assert not (output / "adapter_model.safetensors").exists()  # the run never finished

    resumed = _train(output, "--resume_from_checkpoint", "true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (output / "checkpoint-1" / "adapter_model.safetensors").read_bytes() == first
    state = json.loads((output / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    final = load_file(str(output / "adapter_model.safetensors"))
    assert final.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():  # as if never killed: step 2 trained once, from checkpoint-1
        torch.testing.assert_close(final[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
