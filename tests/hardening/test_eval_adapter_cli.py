"""`lavin-eval --adapter` with an adapter it cannot use: the console script prints one clear line, exits 1, and
writes no results."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from damaged_adapters import link_weights_to_text, pickle_only
from peft import LoraConfig, get_peft_model

from transformers_lavin import MMAConfig
from transformers_lavin.data import write_synthetic_scienceqa
from transformers_lavin.testing_utils import build_tiny_lavin

LAVIN_EVAL = str(Path(sys.executable).with_name("lavin-eval"))


def _save_base(directory: Path, **config):
    model, processor = build_tiny_lavin(**config)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return model


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """base/ with an MMA adapter (mma/) and a LoRA adapter (lora/), a wider base (wide/), a tiny ScienceQA (sqa/)."""
    work = tmp_path_factory.mktemp("eval-adapters")
    for name, peft_config in (
        ("mma", MMAConfig(adapter_hidden_size=8)),
        ("lora", LoraConfig(r=4, target_modules=["q_proj", "v_proj"])),
    ):
        model = _save_base(work / "base")
        peft_model = get_peft_model(model, peft_config)
        peft_model.peft_config["default"].base_model_name_or_path = str(work / "base")
        peft_model.save_pretrained(work / name)
    _save_base(work / "wide", text_hidden_size=64)
    write_synthetic_scienceqa(work / "sqa", num_train=0, num_val=0, num_test=2, image_size=30, seed=0)
    return work


CASES = {
    "another base model": ("mma", ["--model", "wide"], None,
                           "was made for another base model: its weights do not fit"),
    "LoRA merged for a modality": ("lora", ["--merge_adapter", "image"], None,
                                   "the adapter at adapter is LORA: use --merge_adapter yes"),
    "weights linked to a text file": ("mma", [], link_weights_to_text, "notes.txt is not a complete safetensors"),
    "pickle-only weights": ("mma", [], pickle_only, "holds only adapter_model.bin, a pickle, which is never loaded"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_lavin_eval_refuses_the_adapter_in_one_line(work, tmp_path, case):
    source, options, damage, expected = CASES[case]
    adapter = tmp_path / "adapter"
    subprocess.run(["cp", "-r", str(work / source), str(adapter)], check=True)
    if damage is not None:
        damage(adapter)
    command = [LAVIN_EVAL, "--adapter", "adapter", *options, "--task", f"scienceqa={work / 'sqa'}",
               "--output_dir", "runs"]  # fmt: skip
    options_with_paths = [str(work / "wide") if value == "wide" else value for value in command]
    result = subprocess.run(options_with_paths, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("lavin-eval: error: ") and expected in last, last
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("results.jsonl"))
