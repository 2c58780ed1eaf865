import numpy as np
import pytest
import torch
from PIL import Image

from transformers_lavin.testing_utils import build_tiny_lavin


@pytest.fixture
def tiny():
    """A tiny random LaVIN in eval mode and its processor."""
    return build_tiny_lavin(seed=0)


def random_image(seed: int, size: int = 40) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


@pytest.fixture
def mixed_batch(tiny):
    """An image row and a longer text-only row, left-padded."""
    _, processor = tiny
    return processor(
        images=[[random_image(1)], []],
        text=["What is in the picture?", "A text-only question that is longer than the other."],
        padding=True,
        padding_side="left",
        return_tensors="pt",
    )


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
