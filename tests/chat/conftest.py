"""Shared fixtures of the chat-demo tests: the demo model and a few upload files, all made here."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from transformers_lavin.chat import load_chat_model


@pytest.fixture(scope="session")
def demo_model():
    """The demo's default model (tiny random LaVIN with fresh MMA adapters) and its processor."""
    return load_chat_model()


def draw_picture(path: Path) -> Path:
    """A small, non-uniform PNG: a red disc on a blue background."""
    image = Image.new("RGB", (64, 48), (30, 60, 160))
    ImageDraw.Draw(image).ellipse((16, 8, 48, 40), fill=(220, 40, 30))
    image.save(path)
    return path


@pytest.fixture
def picture(tmp_path: Path) -> Path:
    return draw_picture(tmp_path / "disc.png")


@pytest.fixture
def not_an_image(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("shopping list: eggs, milk\n")
    return path
