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


@pytest.fixture
def one_torch_thread():
    """
    One intra-op thread for the test: the tiny models gain nothing from more, and on a loaded machine (CI runners,
    shared cores) the threads of every op wait for each other, which made these suites several times slower. The
    results compared within a test are computed under the same setting.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
