"""`lavin-convert` on damaged weights, a folder given as the output file, and a disk that fills up: one error line,
and nothing of the user's replaced or left half-written."""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys

import pytest
import torch
from conversion_helpers import build_reference, tree_snapshot, write_all
from safetensors.torch import load_file, save_file

import transformers_lavin  # noqa: F401
from transformers_lavin.conversion.cli import main


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The reference inputs and one good conversion of them (base and adapter directories)."""
    root = tmp_path_factory.mktemp("converted")
    checkpoint, llama, clip = write_all(build_reference(seed=3), root / "inputs")
    argv = ["import", "--checkpoint", str(checkpoint), "--llama", str(llama), "--clip", str(clip),
            "--base_dir", str(root / "base"), "--adapter_dir", str(root / "adapter")]  # fmt: skip
    assert main(argv) == 0
    return root, argv


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith("lavin-convert: error: "), err
    return last


def test_import_refuses_integer_adapter_tensors(converted, tmp_path, capsys):
    root, argv = converted
    tensors = build_reference(seed=3).adapter_state_dict()
    torch.save({"model": {name: (value * 100).long() for name, value in tensors.items()}}, tmp_path / "int64.pth")
    argv = [*argv[:2], str(tmp_path / "int64.pth"), *argv[3:], "--temperature", "10"]
    argv[argv.index("--base_dir") + 1], argv[argv.index("--adapter_dir") + 1] = (
        str(tmp_path / "b"),
        str(tmp_path / "a"),
    )
    before = tree_snapshot(tmp_path)
    assert main(argv) == 1
    assert "tensor(s) of type int64 where floating-point weights belong" in _one_error_line(capsys)
    assert tree_snapshot(tmp_path) == before


def test_export_refuses_integer_adapter_tensors(converted, tmp_path, capsys):
    root, _ = converted
    adapter = shutil.copytree(root / "adapter", tmp_path / "adapter")
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    save_file({name: value.long() for name, value in weights.items()}, str(adapter / "adapter_model.safetensors"))
    assert main(["export", "--adapter_dir", str(adapter), "--output", str(tmp_path / "out.pth")]) == 1
    last = _one_error_line(capsys)
    assert "not floating point" in last and "int64" in last, last
    assert not (tmp_path / "out.pth").exists()


@pytest.mark.parametrize("contents", [[], ["keep.txt"]])
def test_export_onto_a_folder_is_refused_and_the_folder_kept(converted, tmp_path, contents):
    root, _ = converted
    folder = tmp_path / "exports"
    folder.mkdir()
    for name in contents:
        (folder / name).write_text("the user's file")
    command = [sys.executable, "-m", "transformers_lavin.conversion.cli", "export", "--adapter_dir",
               str(root / "adapter"), "--output", "exports", "--overwrite"]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "--output 'exports' is a directory" in last and "Errno" not in last, last
    assert sorted(path.name for path in folder.iterdir()) == contents
    assert all((folder / name).read_text() == "the user's file" for name in contents)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["exports"]  # no temporary file left


def test_a_full_disk_while_writing_base_model_keeps_the_old_output(converted, tmp_path, capsys, monkeypatch):
    root, argv = converted
    base, adapter = (
        shutil.copytree(root / "base", tmp_path / "base"),
        shutil.copytree(root / "adapter", tmp_path / "a"),
    )
    old = {path.name: path.read_bytes() for path in base.iterdir() if path.is_file()}
    written = []

    def save_until_the_disk_is_full(tensors, filename, metadata=None):
        written.append(filename)
        with open(filename, "wb") as handle:
            handle.write(b"\0" * 1024)  # half a shard, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    monkeypatch.setattr("transformers.modeling_utils.safe_save_file", save_until_the_disk_is_full)
    argv = [*argv, "--overwrite"]
    argv[argv.index("--base_dir") + 1], argv[argv.index("--adapter_dir") + 1] = str(base), str(adapter)
    assert main(argv) == 1
    last = _one_error_line(capsys)
    assert "No space left on device" in last, last
    assert written and not any(str(base) in name for name in written)  # written aside, not into base/
    assert {path.name: path.read_bytes() for path in base.iterdir() if path.is_file()} == old
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a", "base"]  # no half-written sibling left
