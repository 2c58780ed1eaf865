"""lavin-train --model_name_or_path on each way a user hands over data: CSV, parquet, a `save_to_disk` folder and
ScienceQA's Hub layout (a folder of parquet files as the Hub serves it), each given by a relative path from the
working directory, beside the JSONL of the main journey. In-process (`main(argv)`, the console script's function),
so that each format costs one short training, not an interpreter start."""

from __future__ import annotations

import json

import datasets
import pytest
from artifacts import COLORS, IMAGE_SIZE
from PIL import Image

from transformers_lavin.scripts.sft import main

QUICK = ["--bf16", "false", "--use_cpu", "true", "--max_steps", "1", "--per_device_train_batch_size", "4",
         "--report_to", "none", "--save_strategy", "no", "--gradient_checkpointing", "false"]  # fmt: skip


def _picture(color: str) -> Image.Image:
    return Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), COLORS[color])


def _csv(data) -> str:
    path = data / "plain.csv"
    rows = [("Say hi.", " Hi."), ("Name a fruit.", " An apple."), ("Count to two.", " One, two.")]
    path.write_text("prompt,completion\n" + "".join(f'"{p}","{c}"\n' for p, c in rows))
    return "data/plain.csv"


def _parquet(data) -> str:
    rows = {
        "prompt": [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Color?"}]}]] * 2
        + [[{"role": "user", "content": [{"type": "text", "text": "Say hi."}]}]],
        "completion": [[{"role": "assistant", "content": [{"type": "text", "text": f"{c}."}]}] for c in COLORS],
        "images": [[_picture("red")], [_picture("blue")], []],
    }
    features = datasets.Features(
        {
            "prompt": datasets.List({"role": datasets.Value("string"), "content": datasets.List({"type": datasets.Value("string"), "text": datasets.Value("string")})}),
            "completion": datasets.List({"role": datasets.Value("string"), "content": datasets.List({"type": datasets.Value("string"), "text": datasets.Value("string")})}),
            "images": datasets.List(datasets.Image()),
        }
    )  # fmt: skip
    datasets.Dataset.from_dict(rows, features=features).to_parquet(data / "chat.parquet")
    return "data/chat.parquet"


def _saved(data) -> str:
    rows = {
        "messages": [
            [{"role": "user", "content": "What color is it?"}, {"role": "assistant", "content": f"It is {c}."}]
            for c in COLORS
        ],
        "images": [[_picture(c)] if c != "green" else [] for c in COLORS],
    }
    datasets.Dataset.from_dict(
        rows,
        features=datasets.Features(
            {
                "messages": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")}),
                "images": datasets.List(datasets.Image()),
            }
        ),
    ).save_to_disk(data / "saved")
    return "data/saved"


def _scienceqa_hub(data) -> str:
    # derek-thomas/ScienceQA's columns, as its parquet files hold them.
    rows = {
        "image": [_picture("red"), None, _picture("blue")],
        "question": ["Which color is shown?", "Which word is a fruit?", "Which color is shown?"],
        "choices": [["red", "blue"], ["apple", "chair"], ["red", "blue"]],
        "answer": [0, 0, 1],
        "hint": ["", "Think of food.", ""],
        "task": ["closed choice"] * 3,
        "grade": ["grade1"] * 3,
        "subject": ["natural science", "language science", "natural science"],
        "topic": ["colors"] * 3,
        "category": ["colors"] * 3,
        "skill": ["colors"] * 3,
        "lecture": ["Colors name light.", "", "Colors name light."],
        "solution": ["The picture is red.", "An apple is a fruit.", "The picture is blue."],
    }
    folder = data / "sqa_hub" / "data"
    folder.mkdir(parents=True)
    features = datasets.Features({**{k: datasets.Value("string") for k in rows}, "image": datasets.Image(),
                                  "choices": datasets.List(datasets.Value("string")), "answer": datasets.Value("int8")})  # fmt: skip
    datasets.Dataset.from_dict(rows, features=features).to_parquet(folder / "train-00000-of-00001.parquet")
    return "data/sqa_hub"


@pytest.mark.parametrize(
    "writer", [_csv, _parquet, _saved, _scienceqa_hub], ids=["csv", "parquet", "save_to_disk", "scienceqa_hub"]
)
def test_lavin_train_reads_each_format_by_a_relative_path(writer, lavin_base, work, monkeypatch):
    monkeypatch.chdir(work)
    name = writer(work / "data")
    out = f"format-{writer.__name__.strip('_')}"
    assert main(["--model_name_or_path", "base", "--dataset_name", name, "--output_dir", out, *QUICK]) == 0
    config = json.loads((work / out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(lavin_base.resolve())
    assert (work / out / "adapter_model.safetensors").is_file()
