"""Reference checkpoint -> this format -> reference checkpoint gives the same tensors; and the CLI does both ways."""

from __future__ import annotations

import torch
from conversion_helpers import build_reference, write_all
from peft import get_peft_model, get_peft_model_state_dict
from safetensors.torch import load_file

import transformers_lavin  # noqa: F401
from transformers_lavin import LavinForConditionalGeneration, MMAConfig
from transformers_lavin.conversion import convert_lavin_checkpoint, export_to_reference
from transformers_lavin.conversion.cli import main


def _load_pth(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_convert_then_export_gives_the_same_tensors(tmp_path):
    reference = build_reference(seed=5, adapter_type="block", visual_adapter_type="router_block")
    checkpoint, llama, clip = write_all(reference, tmp_path / "inputs")
    convert_lavin_checkpoint(checkpoint, llama, clip, base_dir=tmp_path / "base", adapter_dir=tmp_path / "adapter")
    flags = export_to_reference(tmp_path / "adapter", tmp_path / "exported.pth")

    original = reference.adapter_state_dict()
    exported = _load_pth(tmp_path / "exported.pth")
    assert set(exported) == {"model"}  # the reference's eval.py reads checkpoint["model"]
    exported = exported["model"]
    assert sorted(exported) == sorted(original)
    for key, value in original.items():
        assert exported[key].shape == value.shape, key  # Conv1d weights get their kernel axis back
        assert torch.equal(exported[key], value), key
    assert flags == (
        "--adapter_type block --adapter_dim 8 --adapter_scale 1 --temperature 10 --visual_adapter_type router_block"
    )


def test_model_tuned_here_exports_and_converts_back(tmp_path):
    """A PEFT model of this package -> reference .pth -> this format: the adapter tensors survive unchanged."""
    reference = build_reference(seed=6)
    checkpoint, llama, clip = write_all(reference, tmp_path / "inputs")
    convert_lavin_checkpoint(checkpoint, llama, clip, base_dir=tmp_path / "base", adapter_dir=tmp_path / "unused")
    base = LavinForConditionalGeneration.from_pretrained(tmp_path / "base", dtype=torch.float32)
    model = get_peft_model(base, MMAConfig(temperature=7.0))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # stands in for training: every adapter tensor non-zero and distinct
        for param in model.parameters():
            if param.requires_grad:
                param.copy_(torch.randn(param.shape, generator=generator))
    tuned = {key: value.clone() for key, value in get_peft_model_state_dict(model).items()}

    assert "--temperature 7 " in export_to_reference(model, tmp_path / "tuned.pth")
    convert_lavin_checkpoint(
        tmp_path / "tuned.pth",
        llama,
        clip,
        base_dir=tmp_path / "base2",
        adapter_dir=tmp_path / "adapter2",
        temperature=7.0,
    )
    back = load_file(tmp_path / "adapter2" / "adapter_model.safetensors")
    assert sorted(back) == sorted(tuned)
    for key, value in tuned.items():
        assert torch.equal(back[key], value), key


def test_cli_imports_and_exports(tmp_path, capsys):
    reference = build_reference(seed=7)
    checkpoint, llama, clip = write_all(reference, tmp_path / "inputs")
    code = main(
        [
            "import",
            "--checkpoint", str(checkpoint),
            "--llama", str(llama),
            "--clip", str(clip),
            "--base-dir", str(tmp_path / "base"),
            "--adapter-dir", str(tmp_path / "adapter"),
        ]
    )  # fmt: skip
    assert code == 0
    assert "vision_adapter_type=router" in capsys.readouterr().out
    assert main(["export", "--adapter-dir", str(tmp_path / "adapter"), "--output", str(tmp_path / "out.pth")]) == 0
    exported = _load_pth(tmp_path / "out.pth")["model"]
    assert all(torch.equal(exported[key], value) for key, value in reference.adapter_state_dict().items())
    # Refuses to overwrite without being told to, and says so.
    assert main(["export", "--adapter-dir", str(tmp_path / "adapter"), "--output", str(tmp_path / "out.pth")]) == 1
    assert "already exists" in capsys.readouterr().err
