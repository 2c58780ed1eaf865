"""A hostile adapter directory is refused from its config and the safetensors header, before any layer is built."""

from __future__ import annotations

import json
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
from damaged_adapters import link_weights_to_text, pickle_only, truncate
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors import safe_open

from transformers_lavin import MMAConfig
from transformers_lavin.adapter_files import check_adapter_directory
from transformers_lavin.testing_utils import build_tiny_lavin


def _save(tmp_path: Path, peft_config) -> Path:
    model, processor = build_tiny_lavin()
    model.save_pretrained(tmp_path / "base")
    processor.save_pretrained(tmp_path / "base")
    adapter = tmp_path / "adapter"
    peft_model = get_peft_model(model, peft_config)
    peft_model.peft_config["default"].base_model_name_or_path = str(tmp_path / "base")
    peft_model.save_pretrained(adapter)
    return adapter


def _edit(adapter: Path, **changes) -> None:
    path = adapter / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.fixture
def mma_adapter(tmp_path) -> Path:
    return _save(tmp_path, MMAConfig(adapter_hidden_size=8))


@pytest.fixture
def lora_adapter(tmp_path) -> Path:
    return _save(tmp_path, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))


def test_the_header_shapes_are_those_of_the_weights(mma_adapter):
    with safe_open(str(mma_adapter / "adapter_model.safetensors"), framework="pt") as weights:
        down = [weights.get_tensor(k).shape[0] for k in weights.keys() if k.endswith("mma_down.weight")]  # noqa: SIM118
    assert down and set(down) == {8}
    check_adapter_directory(mma_adapter)  # the untouched adapter passes


def test_peft_from_pretrained_refuses_a_huge_mma_config_before_building(mma_adapter):
    _edit(mma_adapter, adapter_hidden_size=2**28)  # about 32 GiB of layers if built
    base, _ = build_tiny_lavin()
    with pytest.raises(ValueError, match=r"adapter_hidden_size=268435456 does not match the weights .* has 8"):
        PeftModel.from_pretrained(base, str(mma_adapter))


def test_lavin_eval_refuses_the_hostile_mma_config_quickly_and_small(mma_adapter, tmp_path):
    _edit(mma_adapter, adapter_hidden_size=2**22)
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "transformers_lavin.evaluation.cli", "--adapter", str(mma_adapter), "--task",
         "scienceqa=none", "--output_dir", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    elapsed = time.monotonic() - start
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "adapter_hidden_size=4194304" in result.stderr.strip().splitlines()[-1]
    assert elapsed < 30 and peak_mib < 1536, (elapsed, peak_mib)


def test_a_lora_rank_the_weights_do_not_have_is_refused(lora_adapter):
    _edit(lora_adapter, r=2**26)
    with pytest.raises(ValueError, match=r"r=67108864 does not match the weights .* has 4"):
        check_adapter_directory(lora_adapter)
    _edit(lora_adapter, r=4, rank_pattern={"q_proj": 2**26})
    with pytest.raises(ValueError, match=r"rank_pattern\['q_proj'\]=67108864"):
        check_adapter_directory(lora_adapter)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda a: (a / "adapter_config.json").write_text("[1, 2]"), "holds a JSON list"),
        (lambda a: (a / "adapter_config.json").write_text("{not json"), "is not valid JSON"),
        (lambda a: _edit(a, peft_type="NOPE"), "unknown peft_type 'NOPE'"),
        (lambda a: _edit(a, peft_type="LORA"), "holds no lora_* tensors"),
        (lambda a: truncate(a / "adapter_model.safetensors"), "is not a complete safetensors file"),
        (link_weights_to_text, "is not a complete safetensors file"),
        (pickle_only, "holds only adapter_model.bin, a pickle"),
    ],
)
def test_broken_adapter_directories_are_one_clear_error(mma_adapter, damage, expected):
    damage(mma_adapter)
    with pytest.raises(ValueError, match=re.escape(expected)):
        check_adapter_directory(mma_adapter)
