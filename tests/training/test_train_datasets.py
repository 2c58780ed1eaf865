"""`lavin-train` on every dataset format SFTTrainer takes, both ScienceQA layouts, with checks before anything is written."""

import json
import re
import subprocess
import sys

import datasets
import pytest
from PIL import Image

import transformers_lavin  # noqa: F401
from transformers_lavin.data import write_synthetic_scienceqa
from transformers_lavin.scripts.sft import main

FAST = ["--tiny", "--max_steps", "2", "--per_device_train_batch_size", "4", "--bf16", "false", "--use_cpu", "true",
        "--gradient_checkpointing", "false", "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1",
        "--disable_tqdm", "true", "--learning_rate", "1e-2"]  # fmt: skip


def _image(folder, name: str, color: str) -> str:
    path = folder / f"{name}.png"
    Image.new("RGB", (32, 32), color).save(path)
    return path.name  # relative to the data file, as LLaVA's JSON names images


def _write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def _train(tmp_path, *args):
    out = tmp_path / "out"
    assert main([*FAST, "--output_dir", str(out), *args]) == 0
    return out


def _refused(tmp_path, capsys, *args) -> str:
    """Run lavin-train expecting bad input: exit status 1 and one error line; returns the line."""
    assert main([*FAST, "--output_dir", str(tmp_path / "out"), *args]) == 1
    error = capsys.readouterr().err  # may hold datasets' progress bars too
    lines = [line for line in error.splitlines() if "lavin-train: error:" in line]
    assert len(lines) == 1 and "Traceback" not in error
    return lines[0]


def _trained(out) -> None:
    assert (out / "adapter_model.safetensors").is_file()
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "MMA"
    assert config["base_model_name_or_path"] == str((out / "base_model").resolve())
    assert (out / "training_loss.png").is_file() and (out / "routing_weights.png").is_file()


def _chat_rows(folder):
    red, blue = _image(folder, "red", "red"), _image(folder, "blue", "blue")
    return [
        {"messages": [{"role": "system", "content": "Answer briefly."},
                      {"role": "user", "content": "What color is the picture?"},
                      {"role": "assistant", "content": "Red."}], "images": [red]},
        {"messages": [{"role": "user", "content": "What is in the picture?"},
                      {"role": "assistant", "content": "A blue square."},
                      {"role": "user", "content": "And its color?"},
                      {"role": "assistant", "content": "Blue."}], "images": [blue]},
        {"messages": [{"role": "user", "content": "Name a fruit."},
                      {"role": "assistant", "content": "An apple."}], "images": []},
        {"messages": [{"role": "user", "content": "Say hi."},
                      {"role": "assistant", "content": "Hi."}], "images": []},
    ]  # fmt: skip


def test_conversational_messages_with_images_and_text_only_rows_local_jsonl(tmp_path, capsys):
    data = _write_jsonl(tmp_path / "chat.jsonl", _chat_rows(tmp_path))
    out = _train(tmp_path, "--dataset_name", data, "--assistant_only_loss", "true")
    _trained(out)


def test_conversational_prompt_completion_parquet_and_saved_dataset(tmp_path):
    image = Image.new("RGB", (32, 32), "green")
    rows = {
        "prompt": [[{"role": "user", "content": "What color?"}], [{"role": "user", "content": "Two plus two?"}]] * 2,
        "completion": [[{"role": "assistant", "content": "Green."}], [{"role": "assistant", "content": "Four."}]] * 2,
        "images": [[image], []] * 2,
    }
    dataset = datasets.Dataset.from_dict(rows).cast_column("images", datasets.List(datasets.Image()))
    dataset.to_parquet(str(tmp_path / "pc.parquet"))
    _trained(_train(tmp_path, "--dataset_name", str(tmp_path / "pc.parquet")))
    dataset.save_to_disk(str(tmp_path / "saved"))
    _trained(_train(tmp_path / "again", "--dataset_name", str(tmp_path / "saved")))


@pytest.mark.parametrize("kind", ["text", "prompt_completion"])
def test_plain_text_formats(tmp_path, kind):
    red = _image(tmp_path, "red", "red")
    if kind == "text":
        rows = [{"text": "Image color: red.", "images": [red]}, {"text": "The sky is blue.", "images": []}] * 2
    else:
        rows = [{"prompt": "Color?", "completion": " red", "images": [red]}, {"prompt": "1+1?", "completion": " 2",
                "images": []}] * 2  # fmt: skip
    _trained(_train(tmp_path, "--dataset_name", _write_jsonl(tmp_path / "plain.jsonl", rows)))


def _scienceqa_hub_parquet(tmp_path) -> str:
    """The synthetic set in the `derek-thomas/ScienceQA` schema (image column, answer as an index)."""
    root = write_synthetic_scienceqa(tmp_path / "sqa", num_train=8, num_val=0, num_test=0, seed=0)
    problems = json.loads((root / "problems.json").read_text())
    columns = {name: [] for name in ("image", "question", "choices", "answer", "hint", "task", "grade", "subject",
                                     "topic", "category", "skill", "lecture", "solution")}  # fmt: skip
    for qid, problem in problems.items():
        image = root / "images" / "train" / qid / "image.png"
        columns["image"].append(str(image) if problem["image"] else None)
        for name in list(columns)[1:]:
            columns[name].append(problem[name])
    dataset = datasets.Dataset.from_dict(columns).cast_column("image", datasets.Image())
    path = tmp_path / "scienceqa-train.parquet"
    dataset.to_parquet(str(path))
    return str(path), root


def test_scienceqa_hub_parquet_layout_trains_on_the_reference_strings(tmp_path):
    from transformers_lavin.data import load_scienceqa
    from transformers_lavin.data.sft_datasets import conversation_text, load_sft_dataset, scienceqa_hub_to_text

    path, root = _scienceqa_hub_parquet(tmp_path)
    rows = scienceqa_hub_to_text(load_sft_dataset(path), "<s>", "</s>", "QCM-A")
    official = load_scienceqa(root, "train", prompt_format="QCM-A")
    assert rows["prompt"] == ["<s>" + conversation_text(prompt) for prompt in official["prompt"]]
    assert rows["completion"] == [conversation_text(answer) + "</s>" for answer in official["completion"]]
    assert re.fullmatch(r"The answer is [A-E]\.</s>", rows[0]["completion"])
    assert {len(images) for images in rows["images"]} == {0, 1}
    _trained(_train(tmp_path, "--dataset_name", path, "--prompt_format", "QCM-A"))


def test_scienceqa_official_layout_synthetic(tmp_path):
    _trained(_train(tmp_path, "--synthetic", "--synthetic_num_train", "8", "--synthetic_num_eval", "4"))


def test_rows_with_two_images_train_and_a_limit_reports_or_drops_them(tmp_path, caplog, capsys):
    rows = _chat_rows(tmp_path)
    rows[1]["images"] = [rows[1]["images"][0], rows[0]["images"][0]]
    rows[3]["images"] = rows[1]["images"]
    data = _write_jsonl(tmp_path / "multi.jsonl", rows)
    error = _refused(tmp_path, capsys, "--dataset_name", data, "--max_images_per_sample", "1")
    assert re.search(r"2 of 4 training rows have more than 1 image \(rows 1, 3\).*--drop_unsupp", error)
    assert not (tmp_path / "out").exists()
    _trained(_train(tmp_path, "--dataset_name", data))  # no limit by default
    args = ["--max_images_per_sample", "1", "--drop_unsupported_rows", "true", "--overwrite", "true"]
    _trained(_train(tmp_path, "--dataset_name", data, *args))
    assert "Dropping them" in caplog.text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--synthetic", "--mma_adapter_type", "nope"], "adapter_type"),
        (["--synthetic", "--prompt_format", "XYZ-A"], "format"),
        (["--synthetic", "--dataset_name", "x.jsonl"], "exactly one dataset"),
        (["--dataset_name", "./missing.jsonl"], "no such file"),
        (["--synthetic", "--peft_method", "ia3"], "peft_method"),
    ],
)
def test_bad_options_fail_before_anything_is_written(tmp_path, capsys, args, message):
    assert re.search(message, _refused(tmp_path, capsys, *args))
    assert not (tmp_path / "out").exists()


def test_card_names_the_base_model_and_its_snippet_runs(tmp_path):
    data = _write_jsonl(tmp_path / "chat.jsonl", _chat_rows(tmp_path))
    out = _train(tmp_path, "--dataset_name", data)
    card = (out / "README.md").read_text()
    metadata = card.split("---")[1]
    # A local base is no Hub id: the metadata leaves it out (as TRL's cards do); the text and the snippet name it.
    assert (
        "base_model" not in metadata and str(data) not in metadata and "pipeline_tag: image-text-to-text" in metadata
    )
    assert f"`{(out / 'base_model').resolve()}` (a local folder)" in card and str(data) in card
    assert "fine-tuned version of" not in card
    # It extends TRL's card: TRL's tags in the metadata, its framework versions and citations in the text.
    import trl

    assert all(f"- {tag}" in metadata for tag in ("trl", "sft", "lavin", "mma"))
    assert f"- TRL: {trl.__version__}" in card and "vonwerra2020trl" in card and "luo2023cheap" in card
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", snippet], capture_output=True, text=True, timeout=120, cwd=elsewhere
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_short_help_and_hyphen_aliases(capsys):
    main(["--help"])
    text = capsys.readouterr().out
    assert text.count("\n") < 90 and "examples:" in text and "--dataset_name" in text and "--help_all" in text
    from transformers_lavin.scripts.sft import parse_args

    script_args, training_args, _, _ = parse_args(
        ["--dataset-name", "d", "--output-dir", "o", "--train_split", "x", "--use-cpu", "true", "--bf16", "false"]
    )
    assert script_args.dataset_name == "d" and training_args.output_dir == "o"
    assert script_args.dataset_train_split == "x"


def test_typed_image_parts_in_jsonl_are_read_decoded_and_later_turns_counted(tmp_path, caplog):
    # TRL's JSONL: an image part beside text parts, which `datasets` stores as JSON strings (its Json feature).
    from transformers_lavin.data.sft_datasets import check_images_per_row, load_sft_dataset

    red = _image(tmp_path, "red", "red")
    user = {"role": "user", "content": [{"type": "text", "text": "Hello."}]}
    answer = {"role": "assistant", "content": [{"type": "text", "text": "Hi."}]}
    later = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "And this?"}]}
    rows = [{"messages": [user, answer, later, answer], "images": [red]}, {"messages": [user, answer], "images": []}]
    dataset = load_sft_dataset(_write_jsonl(tmp_path / "typed.jsonl", rows))
    with caplog.at_level("WARNING"):
        assert len(check_images_per_row(dataset)) == 2
    assert "1 training rows attach their one image to a later turn" in caplog.text
