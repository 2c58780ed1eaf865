"""TRL's own SFT script (the installed `trl/scripts/sft.py`) trains MMA on a LaVIN after the two-line change of
docs/training.md: `import transformers_lavin` and `peft_config=transformers_lavin.MMAConfig()`."""

import json
import subprocess
import sys
from pathlib import Path

import datasets
import trl
from PIL import Image

from transformers_lavin.testing_utils import build_tiny_lavin

ORIGINAL_PEFT_LINE = "peft_config=get_peft_config(model_args),"
MMA_PEFT_LINE = "peft_config=transformers_lavin.MMAConfig(),"


def two_line_change(source: str) -> str:
    """The documented change: import the package (registers LaVIN and MMA), pass MMAConfig as the PEFT config."""
    assert source.count(ORIGINAL_PEFT_LINE) == 1, "TRL's script changed: update docs/training.md and this test"
    return "import transformers_lavin\n" + source.replace(ORIGINAL_PEFT_LINE, MMA_PEFT_LINE)


def test_trl_sft_script_trains_mma_after_two_lines(tmp_path):
    model, processor = build_tiny_lavin(seed=0)
    model.save_pretrained(tmp_path / "base")
    processor.save_pretrained(tmp_path / "base")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    image = Image.new("RGB", (30, 30), "red")
    rows = {
        "messages": [
            [{"role": "user", "content": "What color?"}, {"role": "assistant", "content": "Red."}],
            [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi."}],
        ]
        * 2,
        "images": [[image], []] * 2,
    }
    dataset = datasets.Dataset.from_dict(rows).cast_column("images", datasets.List(datasets.Image()))
    dataset.to_parquet(str(data_dir / "train.parquet"))

    script = tmp_path / "sft.py"
    script.write_text(two_line_change((Path(trl.__file__).parent / "scripts" / "sft.py").read_text()))
    out = tmp_path / "out"
    command = [sys.executable, str(script), "--model_name_or_path", str(tmp_path / "base"), "--dataset_name",
               str(data_dir), "--output_dir", str(out), "--max_steps", "2", "--per_device_train_batch_size", "2",
               "--bf16", "false", "--use_cpu", "true", "--gradient_checkpointing", "false", "--report_to", "none",
               "--save_strategy", "no", "--max_length", "none"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "MMA" and config["base_model_name_or_path"] == str(tmp_path / "base")
