"""`train_fsdp`'s resume point and data options are checked before anything is built or written; a checkpoint cut
short by a crash is passed over by `--resume_from_checkpoint true` and written again."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from transformers_lavin.scripts.train_fsdp import main

TINY = ["--tiny", "--synthetic", "--synthetic_num_train", "8", "--per_device_train_batch_size", "2"]


def _trainer_checkpoint(directory):
    """What lavin-train's Trainer writes into checkpoint-N (the parts that tell it apart)."""
    directory.mkdir(parents=True)
    (directory / "trainer_state.json").write_text(json.dumps({"global_step": 1}))
    (directory / "adapter_config.json").write_text(json.dumps({"peft_type": "MMA"}))
    save_file({"x": torch.zeros(1)}, str(directory / "adapter_model.safetensors"))
    return directory


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--resume_from_checkpoint", "{tmp}/nowhere"], "--resume_from_checkpoint {tmp}/nowhere: no such directory"),
        (["--resume_from_checkpoint", "{tmp}/lavin-train/checkpoint-1"], "is a lavin-train (Trainer) checkpoint"),
        (["--resume_from_checkpoint", "true"], "no complete checkpoint-* in {tmp}/out"),
        (["--dataset_name", "{tmp}/train.jsonl"], "--dataset_name is not supported by train_fsdp"),
    ],
)
def test_refused_in_one_line_before_anything_is_written(tmp_path, capsys, options, expected):
    _trainer_checkpoint(tmp_path / "lavin-train" / "checkpoint-1")
    argv = [*TINY, "--output_dir", str(tmp_path / "out"), *(option.format(tmp=tmp_path) for option in options)]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.splitlines()[-1].startswith("lavin-train-fsdp: error: "), err
    assert expected.format(tmp=tmp_path) in err.splitlines()[-1], err
    assert not (tmp_path / "out").exists()


def test_resume_passes_over_a_checkpoint_cut_short_and_writes_it_again(tmp_path, capsys):
    output = tmp_path / "out"
    assert main([*TINY, "--output_dir", str(output), "--max_steps", "2", "--save_steps", "1"]) == 0
    (output / "checkpoint-2" / "loop_state.pt").unlink()  # as if killed before the loop state was written
    capsys.readouterr()
    resume = [*TINY, "--output_dir", str(output), "--max_steps", "3", "--save_steps", "1"]
    assert main([*resume, "--resume_from_checkpoint", "true"]) == 0
    assert f"Resumed from {output / 'checkpoint-1'} at step 1." in capsys.readouterr().out
    for step in (1, 2, 3):
        assert sorted(p.name for p in (output / f"checkpoint-{step}").iterdir()) == [
            ".metadata", "__0_0.distcp", "loop_state.pt", "rng_state_0.pt"
        ]  # fmt: skip
    assert torch.load(output / "checkpoint-2" / "loop_state.pt", weights_only=True)["step"] == 2
    assert not [p.name for p in output.iterdir() if p.name.startswith(".")]  # nothing staged left behind
