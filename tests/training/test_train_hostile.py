"""`lavin-train --dataset_name` on hostile data: image paths that leave the data folder, decompression bombs."""

import json
import re
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

import transformers_lavin  # noqa: F401
from transformers_lavin.scripts.sft import main

FAST = ["--tiny", "--max_steps", "1", "--per_device_train_batch_size", "2", "--bf16", "false", "--use_cpu", "true",
        "--gradient_checkpointing", "false", "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true"]  # fmt: skip


def bomb_png(path: Path, side: int = 30000) -> None:
    """A PNG whose header claims side x side pixels (PIL refuses it on open; the file is a few bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


def _rows(images: list[str]) -> str:
    rows = [{"prompt": "What color?", "completion": "Red.", "images": [image]} for image in images]
    return "".join(json.dumps(row) + "\n" for row in rows)


def _refused(tmp_path, capsys, *args) -> str:
    assert main([*FAST, "--output_dir", str(tmp_path / "out"), *args]) == 1
    error = capsys.readouterr().err
    lines = [line for line in error.splitlines() if "lavin-train: error:" in line]
    assert len(lines) == 1 and "Traceback" not in error, error
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()
    return lines[0]


@pytest.fixture
def layout(tmp_path):
    """data/train.jsonl beside data/red.png, and secret.png outside data/."""
    (tmp_path / "data").mkdir()
    Image.new("RGB", (32, 32), "red").save(tmp_path / "data" / "red.png")
    Image.new("RGB", (32, 32), "blue").save(tmp_path / "secret.png")
    return tmp_path


@pytest.mark.parametrize("outside", ["../secret.png", "{root}/secret.png"])
def test_image_paths_leaving_the_data_folder_are_refused(layout, capsys, outside):
    outside = outside.format(root=layout)
    (layout / "data" / "train.jsonl").write_text(_rows(["red.png", outside]))
    line = _refused(layout, capsys, "--dataset_name", str(layout / "data" / "train.jsonl"))
    assert f"row 1 names the image {outside!r}, which is outside the dataset folder" in line
    assert "--allow_outside_images" in line


def test_saved_datasets_resolve_against_their_folder_and_refuse_outside_paths(layout, capsys):
    import datasets

    rows = {"prompt": ["What color?"] * 2, "completion": ["Red."] * 2, "images": [["red.png"], ["../secret.png"]]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(layout / "data" / "saved"))
    (layout / "data" / "saved" / "red.png").write_bytes((layout / "data" / "red.png").read_bytes())
    line = _refused(layout, capsys, "--dataset_name", str(layout / "data" / "saved"))
    assert "row 1 names the image '../secret.png'" in line


def test_the_opt_in_flag_trains_on_outside_images(layout):
    (layout / "data" / "train.jsonl").write_text(_rows(["red.png", "../secret.png"]))
    out = layout / "out"
    argv = [*FAST, "--output_dir", str(out), "--dataset_name", str(layout / "data" / "train.jsonl")]
    assert main([*argv, "--allow_outside_images", "true"]) == 0
    assert (out / "adapter_model.safetensors").is_file()


def test_a_decompression_bomb_in_the_data_is_one_clear_line(layout, capsys):
    bomb_png(layout / "data" / "huge.png")
    (layout / "data" / "train.jsonl").write_text(_rows(["huge.png", "huge.png"]))
    line = _refused(layout, capsys, "--dataset_name", str(layout / "data" / "train.jsonl"))
    assert "decompression bomb" in line and "PIL.Image.MAX_IMAGE_PIXELS" in line


def test_a_decompression_bomb_in_scienceqa_names_its_problem(tmp_path):
    from transformers_lavin.data.scienceqa import _check_image

    bomb_png(tmp_path / "image.png")
    with pytest.raises(ValueError, match=r"problem '7' .* decompression-bomb guard"):
        _check_image(tmp_path / "image.png", "7")


def _train_with_checkpoints(layout, max_steps: int, *extra: str) -> int:
    (layout / "data" / "train.jsonl").write_text(_rows(["red.png"] * 4))
    argv = [*FAST, "--output_dir", str(layout / "out"), "--dataset_name", str(layout / "data" / "train.jsonl")]
    return main([*argv, "--max_steps", str(max_steps), "--save_strategy", "steps", "--save_steps", "1", *extra])


def test_resume_skips_a_checkpoint_whose_save_was_cut_short(layout, caplog):
    assert _train_with_checkpoints(layout, 2) == 0
    cut = layout / "out" / "checkpoint-3"  # what kill -9 during a save leaves
    cut.mkdir()
    (cut / "README.md").write_text("partial")
    with caplog.at_level("INFO"):
        assert _train_with_checkpoints(layout, 3, "--resume_from_checkpoint", "true") == 0
    assert f"Skipping {cut}: its save did not finish" in caplog.text
    assert json.loads((cut / "trainer_state.json").read_text())["global_step"] == 3  # step 3 trained and saved


def test_resuming_a_finished_run_trains_nothing_and_keeps_the_adapter(layout, caplog):
    assert _train_with_checkpoints(layout, 2) == 0
    adapter = layout / "out" / "adapter_model.safetensors"
    before = adapter.read_bytes(), adapter.stat().st_mtime_ns
    with caplog.at_level("WARNING"):
        assert _train_with_checkpoints(layout, 2, "--resume_from_checkpoint", "true") == 0
    assert "is at step 2, the end of this run (--max_steps 2): nothing to train" in caplog.text
    assert (adapter.read_bytes(), adapter.stat().st_mtime_ns) == before
    assert not (layout / "out" / "checkpoint-3").exists()


def test_a_batch_size_of_zero_is_refused_before_anything_is_written(layout, capsys):
    (layout / "data" / "train.jsonl").write_text(_rows(["red.png"] * 2))
    argv = ["--dataset_name", str(layout / "data" / "train.jsonl"), "--per_device_train_batch_size", "0"]
    assert "--per_device_train_batch_size must be at least 1; got 0" in _refused(layout, capsys, *argv)
    assert not (layout / "out").exists()


@pytest.mark.parametrize(
    ("option", "value"), [("--max_steps", "-1"), ("--save_steps", "-3"), ("--per_device_train_batch_size", "0")]
)
def test_train_fsdp_refuses_values_that_would_train_nothing(tmp_path, capsys, option, value):
    from transformers_lavin.scripts.train_fsdp import main as fsdp_main

    assert fsdp_main(["--tiny", "--synthetic", "--output_dir", str(tmp_path / "out"), option, value]) == 1
    assert f"{option} must be at least" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("layout_kind", ["mixed_jsonl", "csv"])
def test_mixed_type_and_csv_image_paths_resolve_against_the_data_folder(layout, layout_kind, monkeypatch):
    from transformers_lavin.data.sft_datasets import load_sft_dataset

    if layout_kind == "mixed_jsonl":  # one row's images a list, the other's a bare string: datasets' Json feature
        rows = [{"text": "Color: red.", "images": ["red.png"]}, {"text": "Also red.", "images": "red.png"}]
        data = layout / "data" / "train.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        data = layout / "data" / "train.csv"
        data.write_text("text,images\nColor: red.,red.png\nAlso red.,red.png\n")
    elsewhere = layout / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the paths resolve from the data file's folder, not the working directory
    images = load_sft_dataset(str(data))["images"]
    assert [[image.convert("RGB").getpixel((0, 0)) for image in row] for row in images] == [[(255, 0, 0)]] * 2
    assert main([*FAST, "--output_dir", "out", "--dataset_name", str(data)]) == 0
    assert (elsewhere / "out" / "adapter_model.safetensors").is_file()


def _save_empty(folder: Path) -> None:
    import datasets

    datasets.Dataset.from_dict({"messages": []}).save_to_disk(str(folder))


@pytest.mark.parametrize(
    "name, write, message",
    [
        ("train.jsonl", lambda p: p.write_text(json.dumps({"messages": "Hello."}) + "\n"),
         r"training row 0: `messages` is 'Hello\.', not a list of \{'role', 'content'\} messages"),
        ("train.jsonl", lambda p: p.write_text(""), r"cannot read it \(no rows\)"),
        ("saved", _save_empty, r"the saved dataset has no rows"),
        ("train.jsonl", lambda p: p.write_text(_rows(["red.png"]) + '{"prompt": "x", oops\n'),
         r"cannot read it \(JSON parse error: .* in row 1\)"),
        ("train.jsonl", lambda p: p.write_text(_rows(["red.png", "missing.png"])),
         r"row 1 names the image 'missing\.png', but .*missing\.png is no file"),
        ("train.jsonl", lambda p: p.write_text(json.dumps({"text": "Hi.", "images": [None]}) + "\n"),
         r"row 0 has the image entry None"),
    ],
)  # fmt: skip
def test_unusable_datasets_are_one_error_line(layout, capsys, name, write, message):
    write(layout / "data" / name)
    assert re.search(message, _refused(layout, capsys, "--dataset_name", str(layout / "data" / name)))
