"""A synthetic LLaVA-Instruct-style conversation set mixed with Alpaca-style text-only rows, in TRL's format.

Image rows are conversations about a picture of one drawn shape (its colour, its name), one or two turns, some with a
system message; the answers can be given only from the image. Text-only rows are short instructions answered from
their own text (the larger of two numbers, the first word in alphabetical order). Rows are `messages` + `images`
(one image or none), as `SFTTrainer` and `lavin-train --dataset_name` take them.
"""

from __future__ import annotations

import random

import datasets

from .synthetic import COLORS, SHAPES, WORDS, _draw

SYSTEM_MESSAGE = "You are a helpful assistant. Answer in one short sentence."
QUESTIONS = {"color": "What color is the shape in the picture?", "shape": "What shape is in the picture?"}


def _answer(kind: str, shape: str, color: str) -> str:
    return f"It is {color}." if kind == "color" else f"It is a {shape}."


def _image_row(rng: random.Random, image_size: int) -> dict:
    shape, color = rng.choice(SHAPES), rng.choice(list(COLORS))
    kinds = rng.sample(list(QUESTIONS), rng.choice([1, 2]))
    messages = [{"role": "system", "content": SYSTEM_MESSAGE}] if rng.random() < 0.3 else []
    for kind in kinds:
        messages.append({"role": "user", "content": QUESTIONS[kind]})
        messages.append({"role": "assistant", "content": _answer(kind, shape, color)})
    image = _draw(((shape, color, rng.randrange(4)),), image_size)
    return {"messages": messages, "images": [image], "kind": kinds[0], "shape": shape, "color": color}


def _text_row(rng: random.Random) -> dict:
    if rng.random() < 0.5:
        a, b = rng.sample(range(1, 100), 2)
        user, answer = f"Which number is greater, {a} or {b}?", f"{max(a, b)} is greater."
    else:
        words = rng.sample(WORDS, 3)
        user, answer = (
            f"Which word comes first in alphabetical order: {', '.join(words)}?",
            f"{min(words)} comes first.",
        )
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return {"messages": messages, "images": [], "kind": "text", "shape": "", "color": ""}


def synthetic_chat_dataset(
    num_rows: int = 512, image_fraction: float = 0.5, image_size: int = 32, seed: int = 0
) -> datasets.Dataset:
    """
    The synthetic conversation set.

    Args:
        num_rows (`int`): rows in all.
        image_fraction (`float`): the share of image conversations; the rest are text-only instructions.
        image_size (`int`): the pictures' side in pixels.
        seed (`int`): random seed (the same arguments give the same rows).

    Returns:
        `datasets.Dataset` with `messages`, `images`, and for evaluation `kind` (`color`/`shape` of an image row's
        first question, `text` for a text-only row), `shape` and `color`.
    """
    if not 0 <= image_fraction <= 1:
        raise ValueError(f"image_fraction must be in [0, 1]; got {image_fraction}.")
    rng = random.Random(seed)
    rows = [_image_row(rng, image_size) if rng.random() < image_fraction else _text_row(rng) for _ in range(num_rows)]
    columns = {name: [row[name] for row in rows] for name in rows[0]} if rows else {}
    dataset = datasets.Dataset.from_dict(columns)
    return dataset.cast_column("images", datasets.List(datasets.Image()))


def chat_corpus() -> list[str]:
    """Every word the set uses, to train a tiny tokenizer on."""
    texts = [SYSTEM_MESSAGE, *QUESTIONS.values(), "Instruction: Response: Image: N/A"]
    texts += [_answer(kind, s, c) for kind in QUESTIONS for s in SHAPES for c in COLORS]
    texts += [f"{n} is greater. Which number is greater, {n} or {n}?" for n in range(1, 100)]
    texts += [f"{w} comes first. Which word comes first in alphabetical order: {w}, {w}?" for w in WORDS]
    return texts


__all__ = ["SYSTEM_MESSAGE", "chat_corpus", "synthetic_chat_dataset"]
