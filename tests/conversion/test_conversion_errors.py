"""Bad input: a clear error naming the problem, and nothing written."""

from __future__ import annotations

import datetime

import pytest
import torch
from conversion_helpers import build_reference, save_reference_adapter, tree_snapshot, write_all

import transformers_lavin  # noqa: F401
from transformers_lavin.conversion import LavinConversionError, convert_lavin_checkpoint
from transformers_lavin.conversion.cli import main


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    reference = build_reference(seed=11)
    checkpoint, llama, clip = write_all(reference, root)
    return reference, checkpoint, llama, clip


def _convert_fails(tmp_path, checkpoint, llama, clip, match, **kwargs):
    before = tree_snapshot(tmp_path)
    with pytest.raises(LavinConversionError, match=match):
        convert_lavin_checkpoint(
            checkpoint, llama, clip, base_dir=tmp_path / "base", adapter_dir=tmp_path / "adapter", **kwargs
        )
    assert tree_snapshot(tmp_path) == before  # no output, no leftover temporary directory


def test_lora_checkpoint_is_not_a_lavin_adapter(tmp_path, inputs):
    _, _, llama, clip = inputs
    lora = {
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.randn(8, 32),
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.randn(32, 8),
    }
    torch.save(lora, tmp_path / "lora.pth")
    _convert_fails(tmp_path, tmp_path / "lora.pth", llama, clip, "not a LaVIN adapter checkpoint")


def test_truncated_file(tmp_path, inputs):
    _, checkpoint, llama, clip = inputs
    data = checkpoint.read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    _convert_fails(tmp_path, tmp_path / "truncated.pth", llama, clip, "truncated or not a `.pth`")


def test_pickle_with_python_objects_is_not_unpickled(tmp_path, inputs):
    reference, _, llama, clip = inputs
    payload = {"model": reference.adapter_state_dict(), "saved_at": datetime.datetime(2023, 6, 27)}
    torch.save(payload, tmp_path / "objects.pth")
    _convert_fails(
        tmp_path, tmp_path / "objects.pth", llama, clip, r"Python objects other than tensors \(datetime\.datetime\)"
    )


def test_adapter_for_a_larger_llm(tmp_path, inputs):
    """A '13B adapter on a 7B base': LLM width 48 against a LLaMA of width 32."""
    _, _, llama, clip = inputs
    bigger = build_reference(seed=12, dim=48, n_heads=4, ffn_hidden=96)
    save_reference_adapter(bigger, tmp_path / "big.pth")
    _convert_fails(
        tmp_path,
        tmp_path / "big.pth",
        llama,
        clip,
        "LLM adapters are for 2 layers of width 48, the given LLM has 2 layers of width 32",
    )


def test_adapter_with_more_layers_than_the_llm(tmp_path, inputs):
    _, _, llama, clip = inputs
    deeper = build_reference(seed=13, n_layers=3)
    save_reference_adapter(deeper, tmp_path / "deep.pth")
    _convert_fails(tmp_path, tmp_path / "deep.pth", llama, clip, "for 3 layers of width 32")


def test_missing_and_unknown_keys_are_listed(tmp_path, inputs):
    reference, _, llama, clip = inputs
    tensors = reference.adapter_state_dict()
    del tensors["layers.1.adapter_attn.conv_D.bias"]
    torch.save(tensors, tmp_path / "missing.pth")
    _convert_fails(
        tmp_path, tmp_path / "missing.pth", llama, clip, r"missing keys \(1\): layers\.1\.adapter_attn\.conv_D\.bias"
    )
    tensors = reference.adapter_state_dict() | {"layers.0.adapter_attn.lora.weight": torch.zeros(2)}
    torch.save(tensors, tmp_path / "unknown.pth")
    _convert_fails(tmp_path, tmp_path / "unknown.pth", llama, clip, r"Unknown keys .*adapter_attn\.lora\.weight")


def test_temperature_is_required_when_the_checkpoint_has_no_args(tmp_path, inputs):
    reference, _, llama, clip = inputs
    save_reference_adapter(reference, tmp_path / "bare.pth", training_checkpoint=False)
    _convert_fails(tmp_path, tmp_path / "bare.pth", llama, clip, "temperature")


def test_variant_option_must_agree_with_the_tensors(tmp_path, inputs):
    _, checkpoint, llama, clip = inputs
    _convert_fails(tmp_path, checkpoint, llama, clip, "adapter_type='block' was asked for", adapter_type="block")


def test_wrong_base_directories(tmp_path, inputs):
    _, checkpoint, llama, clip = inputs
    _convert_fails(tmp_path, checkpoint, clip, clip, "not a LLaMA checkpoint")
    _convert_fails(tmp_path, checkpoint, llama, llama, "needs a CLIP checkpoint")


def test_existing_output_is_kept(tmp_path, inputs):
    _, checkpoint, llama, clip = inputs
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "keep.txt").write_text("mine")
    with pytest.raises(LavinConversionError, match="already exists"):
        convert_lavin_checkpoint(checkpoint, llama, clip, base_dir=tmp_path / "base", adapter_dir=tmp_path / "adapter")
    assert (tmp_path / "base" / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "adapter").exists()


def test_cli_reports_errors(tmp_path, inputs, capsys):
    _, _, llama, clip = inputs
    (tmp_path / "empty.pth").write_bytes(b"")
    code = main(
        ["import", "--checkpoint", str(tmp_path / "empty.pth"), "--llama", str(llama), "--clip", str(clip),
         "--base-dir", str(tmp_path / "b"), "--adapter-dir", str(tmp_path / "a")]
    )  # fmt: skip
    assert code == 1
    assert "lavin-convert: error:" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
