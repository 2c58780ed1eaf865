"""Hostile checkpoints and options: bounded before loading, and one clear error."""

from __future__ import annotations

import argparse
import zipfile

import pytest
import torch
from conversion_helpers import build_reference, tree_snapshot, write_all
from safetensors.torch import save_file

import transformers_lavin  # noqa: F401
from transformers_lavin.conversion import LavinConversionError
from transformers_lavin.conversion.cli import main
from transformers_lavin.conversion.reference_format import load_reference_checkpoint


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    checkpoint, llama, clip = write_all(build_reference(seed=5), root)
    return checkpoint, llama, clip


def _deflated_copy(source, target):
    """The same checkpoint with every zip entry deflated: small on disk, large once loaded."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as deflated:
        for entry in original.infolist():
            deflated.writestr(entry.filename, original.read(entry))
    return target


def test_uncompressed_size_is_bounded_before_loading(tmp_path):
    torch.save({"layers.0.adapter_attn.conv_A.weight": torch.zeros(4_000_000)}, tmp_path / "plain.pth")
    bomb = _deflated_copy(tmp_path / "plain.pth", tmp_path / "bomb.pth")
    assert bomb.stat().st_size < 200_000  # 16 MB of zeros, deflated
    with pytest.raises(
        LavinConversionError, match=r"would expand to 16,0\d\d,\d{3} bytes .*over the limit of 1,000,000"
    ):
        load_reference_checkpoint(bomb, max_uncompressed_bytes=1_000_000)
    tensors, _ = load_reference_checkpoint(bomb, max_uncompressed_bytes=20_000_000)  # raised: loads
    assert tensors["layers.0.adapter_attn.conv_A.weight"].numel() == 4_000_000


def test_cli_limit_option(tmp_path, inputs, capsys):
    checkpoint, llama, clip = inputs
    code = main(
        ["import", "--checkpoint", str(checkpoint), "--llama", str(llama), "--clip", str(clip), "--base-dir",
         str(tmp_path / "b"), "--adapter-dir", str(tmp_path / "a"), "--max-checkpoint-bytes", "1000"]
    )  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert "over the limit of 1,000" in err and "--max_checkpoint_bytes" in err
    assert not (tmp_path / "b").exists()


def test_safetensors_given_as_pth_is_named(tmp_path):
    save_file({"x": torch.zeros(2)}, str(tmp_path / "adapter.pth"))
    with pytest.raises(LavinConversionError, match="is a safetensors file, not a reference LaVIN `.pth`"):
        load_reference_checkpoint(tmp_path / "adapter.pth")


@pytest.mark.parametrize("temperature", ["ten", float("nan"), -1.0, [10]])
def test_bad_saved_training_args(tmp_path, inputs, temperature):
    checkpoint, llama, clip = inputs
    saved = torch.load(checkpoint, weights_only=False)
    saved["args"] = argparse.Namespace(**{**vars(saved["args"]), "temperature": temperature})
    torch.save(saved, tmp_path / "bad_args.pth")
    before = tree_snapshot(tmp_path)
    with pytest.raises(LavinConversionError, match=r"checkpoint's saved training args \(temperature=.*--temperature"):
        transformers_lavin.conversion.convert_lavin_checkpoint(
            tmp_path / "bad_args.pth", llama, clip, base_dir=tmp_path / "b", adapter_dir=tmp_path / "a"
        )
    assert tree_snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [("--max-shard-size", "lots", "is not a size"), ("--temperature", "0", "temperature must be a finite number"),
     ("--scale", "nan", "adapter_scale must be a finite number")],
)  # fmt: skip
def test_bad_options_are_one_line(tmp_path, inputs, capsys, option, value, message):
    checkpoint, llama, clip = inputs
    code = main(
        ["import", "--checkpoint", str(checkpoint), "--llama", str(llama), "--clip", str(clip), "--base-dir",
         str(tmp_path / "b"), "--adapter-dir", str(tmp_path / "a"), option, value]
    )  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "b").exists()


def test_shard_index_cannot_point_outside_its_directory(tmp_path):
    from transformers_lavin.conversion.base import load_hf_state_dict

    (tmp_path / "model").mkdir()
    save_file({"x": torch.zeros(1)}, str(tmp_path / "secret.safetensors"))
    index = tmp_path / "model" / "model.safetensors.index.json"
    index.write_text('{"weight_map": {"x": "../secret.safetensors"}}')
    with pytest.raises(LavinConversionError, match="names shards outside its directory"):
        load_hf_state_dict(tmp_path / "model")
    index.write_text('{"metadata": {}}')
    with pytest.raises(LavinConversionError, match="has no 'weight_map'"):
        load_hf_state_dict(tmp_path / "model")
    index.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(LavinConversionError, match="nested too deeply"):
        load_hf_state_dict(tmp_path / "model")


def test_export_of_a_broken_adapter_config(tmp_path, capsys):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{broken")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert main(["export", "--adapter-dir", str(tmp_path / "adapter"), "--output", str(tmp_path / "o.pth")]) == 1
    assert "is not valid JSON" in capsys.readouterr().err
