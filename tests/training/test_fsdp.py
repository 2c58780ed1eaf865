"""FSDP2 on 2 CPU processes (gloo) with MMA, through the package's launcher (transformers_lavin.scripts.train_fsdp):
the ranks agree, match one unsharded process, save an adapter that reloads unsharded, and resume a killed run."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftModel, get_peft_model, get_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText

from transformers_lavin import MMAConfig

sys.path.insert(0, str(Path(__file__).parent))
from fsdp_with_hooks import probe_batch  # noqa: E402

HOOKS = Path(__file__).with_name("fsdp_with_hooks.py")
# 24 problems, 4 rows per step in all, 6 steps. Dropout off: one process and two draw different dropout masks.
COMMON = [
    "--tiny",
    "--synthetic",
    "--synthetic_num_train", "24",
    "--synthetic_num_eval", "4",
    "--prompt_format", "QCM-A",
    "--max_steps", "6",
    "--learning_rate", "1e-2",
    "--logging_steps", "1",
    "--mma_dropout", "0",
    "--seed", "3",
]  # fmt: skip
# FSDP's all-gathers and reduce-scatters add in another order than one process does: float32 rounding only.
# AdamW divides by the gradient's running RMS, so the rounding of the routers' small gradients reaches their weights
# at up to ~5e-5 (losses agree to 6 digits at every step); a wrong reduction would be off by the learning rate (1e-2).
ONE_PROCESS_TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(args, processes=2, env_extra=None, expect_killed=False, timeout=180):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **(env_extra or {})}
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
        launcher += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    result = subprocess.run(
        launcher + [str(HOOKS), *COMMON, *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    if expect_killed:
        assert result.returncode != 0, "the run was not killed"
    else:
        assert result.returncode == 0, result.stderr[-5000:]
    return result


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory):
    """An uninterrupted FSDP2 run: 2 processes x 2 rows, a sharded checkpoint every 2 steps."""
    root = tmp_path_factory.mktemp("fsdp")
    out, weights = root / "out", root / "weights"
    args = ["--output_dir", str(out), "--per_device_train_batch_size", "2", "--save_steps", "2"]
    _run(args, env_extra={"LAVIN_TEST_WEIGHTS_DIR": str(weights)})
    return out, weights


def test_two_sharded_ranks_agree_and_match_one_unsharded_process(sharded_run, tmp_path):
    out, weights = sharded_run
    for rank in (0, 1):
        with safe_open(weights / f"rank{rank}.safetensors", "pt") as f:
            metadata = f.metadata()
        assert metadata["world_size"] == "2" and metadata["sharded"] == "True"
        # Each rank holds about half of the frozen weights (FSDP2 shards every tensor on dim 0).
        assert int(metadata["frozen_local_numel"]) <= int(metadata["frozen_numel"]) * 0.51
    rank0, rank1 = load_file(weights / "rank0.safetensors"), load_file(weights / "rank1.safetensors")
    assert rank0.keys() == rank1.keys() and len(rank0) > 0
    for key in rank0:
        torch.testing.assert_close(rank1[key], rank0[key], rtol=0, atol=0, msg=key)

    # One process, not sharded, the whole global batch of 4 rows per step, same seed and data.
    single = tmp_path / "single"
    _run(
        ["--output_dir", str(tmp_path / "out"), "--per_device_train_batch_size", "4"],
        processes=1,
        env_extra={"LAVIN_TEST_WEIGHTS_DIR": str(single)},
    )
    with safe_open(single / "rank0.safetensors", "pt") as f:
        assert f.metadata()["sharded"] == "False"
    expected = load_file(single / "rank0.safetensors")
    assert expected.keys() == rank0.keys()
    assert any(torch.count_nonzero(v) > 0 for k, v in expected.items() if "mma_up_0" in k), "nothing trained"
    for key in expected:
        torch.testing.assert_close(rank0[key], expected[key], **ONE_PROCESS_TOLERANCE, msg=key)


def test_adapter_saved_from_the_sharded_model_reloads_unsharded_with_its_logits(sharded_run):
    out, weights = sharded_run
    base = AutoModelForImageTextToText.from_pretrained(out / "base_model")
    # The keys PEFT writes for this adapter on an unsharded model.
    config = MMAConfig(dropout=0.0)
    expected_keys = get_peft_model_state_dict(get_peft_model(base, config)).keys()
    saved = load_file(out / "adapter_model.safetensors")
    assert saved.keys() == expected_keys

    base = AutoModelForImageTextToText.from_pretrained(out / "base_model")
    model = PeftModel.from_pretrained(base, out).eval()
    with torch.no_grad():
        logits = model(**probe_batch(out, "QCM-A")).logits
    sharded_logits = load_file(weights / "logits.safetensors")["logits"]
    torch.testing.assert_close(logits, sharded_logits, rtol=0, atol=1e-5)


def test_killed_sharded_run_resumes_to_the_uninterrupted_weights(sharded_run, tmp_path):
    straight, _ = sharded_run
    out = tmp_path / "out"
    args = ["--output_dir", str(out), "--per_device_train_batch_size", "2", "--save_steps", "2"]
    # Checkpoints at steps 2 and 4; both ranks are SIGKILLed at the end of step 5, losing that step.
    _run(args, env_extra={"LAVIN_TEST_KILL_AT_STEP": "5"}, expect_killed=True)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert not (out / "adapter_model.safetensors").exists()

    result = _run([*args, "--resume_from_checkpoint", "true"])
    assert "Resumed from" in result.stdout and "at step 4" in result.stdout, result.stdout[-2000:]
    assert result.stdout.count("'loss':") == 2, result.stdout[-3000:]  # steps 5 and 6 only
    expected, actual = load_file(straight / "adapter_model.safetensors"), load_file(out / "adapter_model.safetensors")
    assert expected.keys() == actual.keys() and len(expected) > 0
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=0, msg=key)


pytestmark = pytest.mark.filterwarnings("ignore")
