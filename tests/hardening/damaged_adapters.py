"""Ways an adapter folder gets damaged, shared by the in-process and the console-script adapter tests."""

from __future__ import annotations

from pathlib import Path

import torch


def truncate(path: Path) -> None:
    """Keep the first half of a file, as a copy cut short does."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def link_weights_to_text(adapter: Path) -> None:
    """Replace the weights by a link to a text file."""
    (adapter / "notes.txt").write_text("not weights\n" * 100)
    (adapter / "adapter_model.safetensors").unlink()
    (adapter / "adapter_model.safetensors").symlink_to(adapter / "notes.txt")


def pickle_only(adapter: Path) -> None:
    """Leave only a pickled `adapter_model.bin`, as old PEFT saves did."""
    (adapter / "adapter_model.safetensors").unlink()
    torch.save({}, adapter / "adapter_model.bin")
