"""Nothing the user has is lost: synthetic data, earlier runs and converted models are never silently replaced."""

from __future__ import annotations

import json

import pytest

from transformers_lavin.data import write_synthetic_scienceqa
from transformers_lavin.scripts.sft import main
from transformers_lavin.training import BASE_MODEL_DIR, save_aside


def _real_dataset(root):
    root.mkdir(parents=True)
    (root / "problems.json").write_text('{"real": 1}')
    (root / "pid_splits.json").write_text('{"train": ["real"]}')
    return root


def test_synthetic_set_refuses_a_folder_of_real_data(tmp_path):
    real = _real_dataset(tmp_path / "scienceqa")
    with pytest.raises(FileExistsError, match="not written by the synthetic generator.*overwrite"):
        write_synthetic_scienceqa(real, num_train=2, num_val=0, num_test=0)
    assert json.loads((real / "problems.json").read_text()) == {"real": 1}
    assert not (real / "images").exists()


def test_synthetic_set_rewrites_its_own_folder_and_overwrites_when_asked(tmp_path):
    root = write_synthetic_scienceqa(tmp_path / "synthetic", num_train=2, num_val=0, num_test=0)
    write_synthetic_scienceqa(root, num_train=3, num_val=0, num_test=0)  # its own folder: fine
    assert len(json.loads((root / "problems.json").read_text())) == 3
    real = _real_dataset(tmp_path / "real")
    write_synthetic_scienceqa(real, num_train=2, num_val=0, num_test=0, overwrite=True)
    assert len(json.loads((real / "problems.json").read_text())) == 2


def test_lavin_train_synthetic_refuses_real_dataset_dir(tmp_path, capsys):
    real = _real_dataset(tmp_path / "scienceqa")
    code = main(["--tiny", "--synthetic", "--dataset_dir", str(real), "--output_dir", str(tmp_path / "out"),
                 "--bf16", "false", "--use_cpu", "true"])  # fmt: skip
    assert code == 1
    assert "not written by the synthetic generator" in capsys.readouterr().err
    assert json.loads((real / "problems.json").read_text()) == {"real": 1}
    assert not (tmp_path / "out").exists()


def test_lavin_train_refuses_an_output_dir_with_an_earlier_run(tmp_path, capsys):
    output = tmp_path / "out"
    (output / BASE_MODEL_DIR).mkdir(parents=True)
    (output / BASE_MODEL_DIR / "config.json").write_text("{}")
    (output / "checkpoint-10").mkdir()
    code = main(["--tiny", "--synthetic", "--output_dir", str(output), "--bf16", "false", "--use_cpu", "true"])
    assert code == 1
    err = capsys.readouterr().err
    assert "holds an earlier run (base_model, checkpoint-10)" in err and "--overwrite" in err
    assert sorted(path.name for path in output.iterdir()) == [BASE_MODEL_DIR, "checkpoint-10"]


def test_save_aside_keeps_the_old_directory_when_a_write_fails(tmp_path):
    target = tmp_path / "base_model"
    target.mkdir()
    (target / "model.safetensors").write_text("old")

    def failing_save(directory):
        (tmp_path / "seen").write_text(directory)
        open(f"{directory}/model.safetensors", "w").write("half")  # noqa: SIM115
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_aside(target, failing_save, replace_directory=True)
    assert (target / "model.safetensors").read_text() == "old"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["base_model", "seen"]  # no leftover

    save_aside(target, lambda d: open(f"{d}/model.safetensors", "w").write("new"), replace_directory=True)
    assert (target / "model.safetensors").read_text() == "new"


@pytest.mark.parametrize(
    ("base", "adapter"), [("model", "model"), ("model", "model/adapter"), ("model/base", "model"), ("llama", "x")]
)
def test_convert_refuses_overlapping_directories(tmp_path, capsys, base, adapter):
    from transformers_lavin.conversion.cli import main as convert_main

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "keep.txt").write_text("base model")
    (tmp_path / "llama").mkdir()
    code = convert_main(
        ["import", "--checkpoint", str(tmp_path / "a.pth"), "--llama", str(tmp_path / "llama"), "--clip",
         str(tmp_path / "clip"), "--base-dir", str(tmp_path / base), "--adapter-dir", str(tmp_path / adapter),
         "--overwrite"]
    )  # fmt: skip
    assert code == 1
    assert "one is inside the other" in capsys.readouterr().err
    assert (tmp_path / "model" / "keep.txt").read_text() == "base model"


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_written_aside_get_the_modes_of_the_umask(tmp_path, umask):
    import os

    import torch
    from safetensors.torch import save_file

    def save(directory: str) -> None:
        save_file({"weight": torch.zeros(2)}, f"{directory}/adapter_model.safetensors")  # written 0600 by safetensors
        os.makedirs(f"{directory}/nested")
        with open(f"{directory}/nested/config.json", "w") as handle:
            handle.write("{}")

    previous = os.umask(umask)
    try:
        save_aside(tmp_path / "replaced", save, replace_directory=True)
        save_aside(tmp_path / "merged", save, replace_directory=False)
    finally:
        os.umask(previous)
    for root in (tmp_path / "replaced", tmp_path / "merged"):
        modes = {path.relative_to(root).as_posix(): path.stat().st_mode & 0o777 for path in root.rglob("*")}
        assert modes == {"adapter_model.safetensors": 0o666 & ~umask, "nested": 0o777 & ~umask,
                         "nested/config.json": 0o666 & ~umask}  # fmt: skip
    assert (tmp_path / "replaced").stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700
