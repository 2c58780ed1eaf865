"""Identical synthetic inputs for LaVIN and LLaVA: same text ids, same pixels, each model's own image placeholders."""

from __future__ import annotations

import torch

from .models import BOS_TOKEN_ID, lavin_image_token_id, llava_image_token_id
from .shapes import BenchShape

FAMILIES = ("lavin", "llava")


def family_of(kind: str) -> str:
    """`lavin` for LaVIN-based kinds (lavin, mma, mma_merged), `llava` for LLaVA-based ones."""
    return "llava" if kind.startswith("llava") else "lavin"


def image_token_count(family: str, shape: BenchShape) -> int:
    """Placeholders one image takes in the sequence: LaVIN's 6 visual tokens or LLaVA's patch tokens."""
    return shape.num_patches if family == "llava" else len(shape.vision_feature_layers)


def build_inputs(
    family: str,
    shape: BenchShape,
    *,
    batch_size: int,
    text_len: int,
    answer_len: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """
    One batch of image prompts: BOS, the image placeholders, then `text_len` text ids. The text and pixels depend
    only on `seed` and the sizes, so the two families get identical content.

    Args:
        family: `"lavin"` or `"llava"`.
        shape: The benchmark shape (vocabulary, image size, image tokens).
        batch_size: Rows.
        text_len: Text tokens per row.
        answer_len: If positive, `labels` are added with a loss on the last `answer_len` tokens only.
        device: Device of the tensors.
        dtype: Dtype of `pixel_values` (the model's dtype).
        seed: Seed of the content.
    """
    if family not in FAMILIES:
        raise ValueError(f"Unknown family {family!r}; choose one of {FAMILIES}.")
    if not 0 <= answer_len <= text_len:
        raise ValueError(f"answer_len ({answer_len}) must be in [0, text_len={text_len}].")
    generator = torch.Generator().manual_seed(seed)
    # Ids 3.. vocab-2: no BOS/EOS/PAD, and never LLaVA's image id (the last one).
    text = torch.randint(3, shape.vocab_size - 1, (batch_size, text_len), generator=generator)
    pixel_values = torch.randn(batch_size, 3, shape.image_size, shape.image_size, generator=generator)
    image_id = llava_image_token_id(shape) if family == "llava" else lavin_image_token_id(shape)
    image = torch.full((batch_size, image_token_count(family, shape)), image_id)
    bos = torch.full((batch_size, 1), BOS_TOKEN_ID)
    input_ids = torch.cat([bos, image, text], dim=1)
    batch = {
        "input_ids": input_ids.to(device),
        "attention_mask": torch.ones_like(input_ids).to(device),
        "pixel_values": pixel_values.to(device=device, dtype=dtype),
    }
    if answer_len:
        labels = torch.full_like(input_ids, -100)
        labels[:, -answer_len:] = input_ids[:, -answer_len:]
        batch["labels"] = labels.to(device)
    return batch
