"""A launch that asks for FSDP or DeepSpeed where it cannot run stops with a clear error instead of running DDP."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from transformers_lavin.distributed import EngineUnavailableError, check_requested_engine, requested_engine

CONFIGS = Path(__file__).parents[2] / "examples" / "accelerate"


@pytest.mark.parametrize(
    ("variable", "engine"), [("ACCELERATE_USE_FSDP", "fsdp"), ("ACCELERATE_USE_DEEPSPEED", "deepspeed")]
)
def test_a_requested_engine_is_refused_on_cpu_processes(monkeypatch, variable, engine):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    check_requested_engine("MULTI_CPU", use_cpu=True)  # plain DDP asked for: nothing to refuse
    monkeypatch.setenv(variable, "true")
    assert requested_engine() == engine
    with pytest.raises(EngineUnavailableError, match="without sharding"):
        check_requested_engine("MULTI_CPU", use_cpu=True)
    with pytest.raises(EngineUnavailableError, match="accelerate set up MULTI_CPU"):
        check_requested_engine("MULTI_CPU", use_cpu=False)
    check_requested_engine("FSDP" if engine == "fsdp" else "DEEPSPEED", use_cpu=False)  # the engine runs


def test_accelerate_fsdp_config_with_use_cpu_stops_instead_of_running_ddp(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(CONFIGS / "fsdp.yaml"), "--mixed_precision", "no", "--main_process_port", str(port),
        "-m", "transformers_lavin.scripts.sft",
        "--use_cpu", "true", "--bf16", "false", "--gradient_checkpointing", "false", "--report_to", "none",
        "--tiny", "--synthetic", "--output_dir", str(tmp_path / "out"), "--max_steps", "2",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode != 0
    assert "lavin-train: error: The launch asked for FSDP" in result.stderr, result.stderr[-3000:]
    assert "train_fsdp" in result.stderr  # it names the launcher that runs FSDP2 on CPUs
    assert "'loss':" not in result.stdout and not (tmp_path / "out").exists()  # nothing trained, nothing written


pytestmark = pytest.mark.filterwarnings("ignore")
