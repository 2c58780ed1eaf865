"""The journeys' shared artifacts, made once per session: each one is what an earlier step of a user's path wrote.

Layout of the session's working directory (`work/`), every path relative to it as a user would type it:
```
parts/clip  parts/llama     pretrained parts (tiny CLIP, tiny LLaMA with its tokenizer)
llava/                      a tiny LLaVA with its processor and chat template
data/train.jsonl, images/   TRL conversational rows, image parts beside text parts, text-only rows
sqa/                        ScienceQA in the official layout
base/                       LaVIN built from the parts and saved with its processor (step 1)
out/                        lavin-train's adapter on base (step 2)
llava-out/                  lavin-train's MMA adapter on the LLaVA
```
`elsewhere/` is a sibling directory the later steps run from.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from artifacts import (
    console_script,
    run,
    save_pretrained_parts,
    save_tiny_llava,
    write_scienceqa,
    write_training_data,
)

# lavin-train as the must-show command runs it: CPU flags only, everything else TRL's defaults.
CPU_FLAGS = ["--bf16", "false", "--use_cpu", "true"]
BUILD_FROM_PARTS = """
import transformers_lavin
from transformers_lavin import build_lavin_from_parts

model, processor = build_lavin_from_parts("parts/clip", "parts/llama")
model.save_pretrained("base"); processor.save_pretrained("base")
"""


@pytest.fixture(scope="session")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("journey")
    work = root / "work"
    save_pretrained_parts(work / "parts")
    save_tiny_llava(work / "llava")
    write_training_data(work / "data")
    write_scienceqa(work / "sqa")
    (root / "elsewhere").mkdir()
    return work


@pytest.fixture(scope="session")
def elsewhere(work) -> Path:
    return work.parent / "elsewhere"


@pytest.fixture(scope="session")
def lavin_base(work) -> Path:
    """Step 1: a LaVIN built from pretrained parts and saved with its processor, by the user's own Python."""
    import sys

    run([sys.executable, "-c", BUILD_FROM_PARTS], cwd=work)
    return work / "base"


@pytest.fixture(scope="session")
def lavin_training(lavin_base):
    """Step 2: `lavin-train --model_name_or_path base --dataset_name data/train.jsonl --output_dir out`."""
    work = lavin_base.parent
    command = ["--model_name_or_path", "base", "--dataset_name", "data/train.jsonl", "--output_dir", "out"]
    return run([console_script("lavin-train"), *command, *CPU_FLAGS], cwd=work)


@pytest.fixture(scope="session")
def lavin_adapter(lavin_training, work) -> Path:
    return work / "out"


@pytest.fixture(scope="session")
def llava_adapter(work) -> Path:
    """MMA on a saved LLaVA, trained by the same command on the same data."""
    command = ["--model_name_or_path", "llava", "--dataset_name", "data/train.jsonl", "--output_dir", "llava-out"]
    run([console_script("lavin-train"), *command, *CPU_FLAGS], cwd=work)
    return work / "llava-out"
