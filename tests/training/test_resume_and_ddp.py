"""`lavin-train` in subprocesses: killed mid-run and resumed from its checkpoint, and DDP over 2 CPU processes."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

HOOKS = Path(__file__).with_name("sft_with_hooks.py")
# Tiny everything: 24 problems, batches of 4, 6 steps; dropout stays on so the resumed RNG state matters.
COMMON = [
    "--tiny",
    "--synthetic",
    "--synthetic_num_train", "24",
    "--synthetic_num_eval", "4",
    "--prompt_format", "QCM-A",
    "--per_device_train_batch_size", "4",
    "--max_steps", "6",
    "--learning_rate", "1e-2",
    "--logging_steps", "1",
    "--bf16", "false",
    "--gradient_checkpointing", "false",
    "--report_to", "none",
    "--use_cpu", "true",
    "--disable_tqdm", "true",
    "--seed", "3",
]  # fmt: skip


def _run(args, env_extra=None, expect_killed=False, launcher=None, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **(env_extra or {})}
    command = (launcher or [sys.executable]) + [str(HOOKS), *COMMON, *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if expect_killed:
        assert result.returncode == -9, f"expected SIGKILL, got {result.returncode}\n{result.stderr[-3000:]}"
    else:
        assert result.returncode == 0, result.stderr[-5000:]
    return result


def _adapter(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(directory / "adapter_model.safetensors")


def test_killed_run_resumes_to_the_same_weights_as_an_uninterrupted_run(tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    _run(["--output_dir", str(straight), "--save_strategy", "no"])

    # Checkpoints at steps 2 and 4; the process is SIGKILLed at the end of step 5, losing that step's work.
    _run(
        ["--output_dir", str(interrupted), "--save_steps", "2"],
        env_extra={"LAVIN_TEST_KILL_AT_STEP": "5"},
        expect_killed=True,
    )
    assert sorted(p.name for p in interrupted.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert not (interrupted / "adapter_model.safetensors").exists()

    result = _run(["--output_dir", str(interrupted), "--save_steps", "2", "--resume_from_checkpoint", "true"])
    assert (interrupted / "checkpoint-6").exists()
    # It really resumed: only steps 5 and 6 were trained (and logged) by this run, not a fresh start from step 1.
    assert (result.stdout + result.stderr).count("'loss':") == 2, result.stdout[-3000:]

    expected, actual = _adapter(straight), _adapter(interrupted)
    assert expected.keys() == actual.keys() and len(expected) > 0
    checkpoint_4 = _adapter(interrupted / "checkpoint-4")
    assert any(not torch.equal(checkpoint_4[k], expected[k]) for k in expected), (
        "training after the checkpoint did nothing"
    )
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=0, msg=key)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ddp_on_two_cpu_processes_keeps_the_ranks_in_sync(tmp_path):
    config = Path(__file__).parents[2] / "examples" / "accelerate" / "ddp_cpu.yaml"
    launcher = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(config),
        "--main_process_port", str(_free_port()),
    ]  # fmt: skip
    weights = tmp_path / "weights"
    result = _run(
        ["--output_dir", str(tmp_path / "out"), "--save_strategy", "no", "--per_device_train_batch_size", "2"],
        env_extra={"LAVIN_TEST_WEIGHTS_DIR": str(weights)},
        launcher=launcher,
    )
    for rank in (0, 1):
        with safe_open(weights / f"rank{rank}.safetensors", "pt") as f:
            assert f.metadata() == {"world_size": "2", "distributed_type": "MULTI_CPU"}, result.stderr[-2000:]
    rank0, rank1 = load_file(weights / "rank0.safetensors"), load_file(weights / "rank1.safetensors")
    assert rank0.keys() == rank1.keys() and len(rank0) > 0
    for key in rank0:
        torch.testing.assert_close(rank1[key], rank0[key], rtol=0, atol=0, msg=key)
    # The ranks trained: the saved adapter moved away from the zero-initialised up-projections.
    saved = _adapter(tmp_path / "out")
    assert any(torch.count_nonzero(v) > 0 for k, v in saved.items() if "mma_up_0" in k)


pytestmark = pytest.mark.filterwarnings("ignore")
