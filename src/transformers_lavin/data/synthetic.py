"""A small synthetic ScienceQA-style data set, written in the official layout, for demos and tests.

Image questions (shape, color, count, position of simple drawn shapes) can be answered only from the image; text
questions only from their hint (`TXT`) or from the question and choices themselves (`NO` context). Answer positions
are balanced for each number of choices, so chance accuracy is the mean of `1 / len(choices)`.
"""

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond")
COLORS = {"red": (220, 40, 40), "green": (40, 160, 60), "blue": (40, 80, 220), "yellow": (230, 190, 30)}
# Shapes are drawn in the cells of a 2x2 grid, row by row.
POSITIONS = ("top left", "top right", "bottom left", "bottom right")
COUNTS = ("1", "2", "3", "4")
NAMES = ("Maya", "Omar", "Lena", "Kofi", "Ines", "Tariq", "Yuki", "Sam")
THINGS = ("hat", "kite", "scarf", "ball", "cup", "bike", "boat", "book")
FRUITS = ("apple", "pear", "plum", "lemon", "orange", "fig")
WORDS = ("anchor", "basket", "candle", "dragon", "engine", "forest", "garden", "harbor", "island", "jacket", "kettle")
GRADES = tuple(f"grade{g}" for g in range(1, 13))
IMAGE_CAPTION = "A drawing of simple shapes on a white background."
# A folder written by the generator holds this file; only such folders (or empty ones) are written into.
SYNTHETIC_MARKER = ".lavin-synthetic"
DATA_FILES = ("problems.json", "pid_splits.json", "captions.json", "descriptions.json", "images")


@dataclass
class _Question:
    """One generated question before its answer is placed among the choices."""

    question: str
    correct: str
    distractors: list[str]
    solution: str
    lecture: str
    subject: str
    topic: str
    skill: str
    hint: str = ""
    shapes: tuple[tuple[str, str, int], ...] = ()  # (shape, color, grid cell) to draw; empty: no image


def _others(rng: random.Random, pool: tuple[str, ...], correct: str, k: int) -> list[str]:
    return rng.sample([item for item in pool if item != correct], k - 1)


def _shape_question(rng: random.Random, k: int) -> _Question:
    shape, color, cell = rng.choice(SHAPES), rng.choice(list(COLORS)), rng.randrange(4)
    return _Question(
        question="Which shape is in the picture?",
        correct=shape,
        distractors=_others(rng, SHAPES, shape, k),
        solution=f"The picture shows a {shape}.",
        lecture="Flat shapes have names.\nA circle is round, a square has four equal sides, a triangle has three.",
        subject="natural science",
        topic="geometry",
        skill="Identify flat shapes",
        shapes=((shape, color, cell),),
    )


def _color_question(rng: random.Random, k: int) -> _Question:
    shape, color, cell = rng.choice(SHAPES), rng.choice(list(COLORS)), rng.randrange(4)
    return _Question(
        question="What color is the shape in the picture?",
        correct=color,
        distractors=_others(rng, tuple(COLORS), color, k),
        solution=f"The shape is {color}.",
        lecture="Objects can have different colors.\nLook closely at the picture to tell the color.",
        subject="natural science",
        topic="colors",
        skill="Identify colors",
        shapes=((shape, color, cell),),
    )


def _count_question(rng: random.Random, k: int) -> _Question:
    count = rng.randint(1, 4)
    cells = rng.sample(range(4), count)
    shapes = tuple((rng.choice(SHAPES), rng.choice(list(COLORS)), cell) for cell in cells)
    return _Question(
        question="How many shapes are in the picture?",
        correct=str(count),
        distractors=_others(rng, COUNTS, str(count), k),
        solution=f"There {'is 1 shape' if count == 1 else f'are {count} shapes'} in the picture.",
        lecture="To count objects, point at each one once.\nThe last number you say is how many there are.",
        subject="natural science",
        topic="counting",
        skill="Count objects in a picture",
        shapes=shapes,
    )


def _position_question(rng: random.Random, k: int) -> _Question:
    shape, color, cell = rng.choice(SHAPES), rng.choice(list(COLORS)), rng.randrange(4)
    return _Question(
        question="Where is the shape in the picture?",
        correct=POSITIONS[cell],
        distractors=_others(rng, POSITIONS, POSITIONS[cell], k),
        solution=f"The shape is in the {POSITIONS[cell]} of the picture.",
        lecture="A picture can be split into a top and a bottom half, and a left and a right half.",
        subject="social science",
        topic="maps",
        skill="Describe positions",
        hint="Look at the picture.",  # a hint that does not help: the row counts as both TXT and IMG
        shapes=((shape, color, cell),),
    )


def _hint_color_question(rng: random.Random, k: int) -> _Question:
    name = rng.choice(NAMES)
    asked, other = rng.sample(THINGS, 2)
    color, other_color = rng.sample(list(COLORS), 2)
    return _Question(
        question=f"What color is {name}'s {asked}?",
        correct=color,
        distractors=_others(rng, tuple(COLORS), color, k),
        solution=f"The text says that {name}'s {asked} is {color}.",
        lecture="Read the text carefully.\nThe answer is stated in it.",
        subject="language science",
        topic="reading-comprehension",
        skill="Find details in a text",
        hint=f"{name} has a {other_color} {other} and a {color} {asked}.",
    )


def _amount(count: int, noun: str) -> str:
    return f"is 1 {noun}" if count == 1 else f"are {count} {noun}s"


def _hint_count_question(rng: random.Random, k: int) -> _Question:
    asked, other = rng.sample(FRUITS, 2)
    count, other_count = rng.sample(range(1, 5), 2)
    return _Question(
        question=f"How many {asked}s are in the basket?",
        correct=str(count),
        distractors=_others(rng, COUNTS, str(count), k),
        solution=f"The text says that there {_amount(count, asked)} in the basket.",
        lecture="Read the text carefully.\nThe number you need is given in it.",
        subject="natural science",
        topic="counting",
        skill="Find numbers in a text",
        hint=f"There {_amount(other_count, other)} and {count} {asked}{'s' * (count != 1)} in the basket.",
    )


def _alphabetical_question(rng: random.Random, k: int) -> _Question:
    words = rng.sample(WORDS, k)
    first = min(words)
    return _Question(
        question="Which word would you find first in alphabetical order?",
        correct=first,
        distractors=[word for word in words if word != first],
        solution=f"{first} comes first: its first letter is earliest in the alphabet.",
        lecture="In alphabetical order, words are sorted by their first letter.\nIf those are the same, by the next.",
        subject="language science",
        topic="reference-skills",
        skill="Use alphabetical order",
    )


def _largest_number_question(rng: random.Random, k: int) -> _Question:
    numbers = [str(n) for n in rng.sample(range(1, 100), k)]
    largest = max(numbers, key=int)
    return _Question(
        question="Which number is the greatest?",
        correct=largest,
        distractors=[n for n in numbers if n != largest],
        solution=f"{largest} is greater than the other numbers.",
        lecture="Compare numbers digit by digit, starting with the tens.",
        subject="natural science",
        topic="numbers",
        skill="Compare numbers",
    )


# Half the kinds have an image, so about half the problems do.
QUESTION_KINDS: dict[str, Callable[[random.Random, int], _Question]] = {
    "shape": _shape_question,
    "color": _color_question,
    "count": _count_question,
    "position": _position_question,
    "hint_color": _hint_color_question,
    "hint_count": _hint_count_question,
    "alphabetical": _alphabetical_question,
    "largest_number": _largest_number_question,
}


def _draw(shapes: tuple[tuple[str, str, int], ...], size: int) -> Image.Image:
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    half = size / 2
    for shape, color, cell in shapes:
        # The shape fills most of its grid cell, leaving a margin so neighbours never touch.
        left, top = (cell % 2) * half, (cell // 2) * half
        margin = half * 0.15
        x0, y0, x1, y1 = left + margin, top + margin, left + half - margin, top + half - margin
        xc, yc = (x0 + x1) / 2, (y0 + y1) / 2
        fill = COLORS[color]
        if shape == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif shape == "square":
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        elif shape == "triangle":
            draw.polygon([(xc, y0), (x1, y1), (x0, y1)], fill=fill)
        else:  # diamond
            draw.polygon([(xc, y0), (x1, yc), (xc, y1), (x0, yc)], fill=fill)
    return image


def describe_picture(shapes: tuple[tuple[str, str, int], ...]) -> str:
    """What a picture shows, in words: `"red circle top left"` for one shape, `"3 shapes"` for several."""
    if len(shapes) == 1:
        shape, color, cell = shapes[0]
        return f"{color} {shape} {POSITIONS[cell]}"
    return f"{len(shapes)} shapes"


def _balanced(rng: random.Random, values: list[int], n: int) -> list[int]:
    # Each value equally often (up to the remainder), in random order.
    out = [values[i % len(values)] for i in range(n)]
    rng.shuffle(out)
    return out


def check_synthetic_target(root: Path, overwrite: bool = False) -> None:
    """Refuse to write into a folder that holds data files this generator did not write (see `SYNTHETIC_MARKER`)."""
    if overwrite or (root / SYNTHETIC_MARKER).is_file():
        return
    found = [name for name in DATA_FILES if (root / name).exists()]
    if found:
        raise FileExistsError(
            f"{str(root)!r} holds a data set not written by the synthetic generator ({', '.join(found)}); writing the "
            "synthetic set there would replace it. Choose another folder, or pass overwrite=True (--overwrite) to "
            "replace it."
        )


def write_synthetic_scienceqa(
    root: str | Path,
    num_train: int = 256,
    num_val: int = 64,
    num_test: int = 64,
    image_size: int = 32,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """
    Writes a synthetic ScienceQA-style data set in the official layout, readable by [`load_scienceqa`].

    Writes `problems.json` (with every official field), `pid_splits.json` (`train`, `val`, `test`, `trainval`),
    `captions.json` (a caption that does not give the answer away, for image problems), `descriptions.json` (what
    each picture shows, in words: a text stand-in for the image, e.g. for pretraining a tiny LLM; not read by
    `load_scienceqa`) and `images/{split}/{qid}/image.png`. Question kinds cycle evenly through four image kinds (shape, color, count and
    position of shapes drawn on a 2x2 grid) and four text kinds (two answered from the hint, two from the question
    and choices alone). Each problem has 2 to 4 choices, and for each number of choices the answer positions are
    balanced. The output is the same for the same arguments.

    Args:
        root (`str` or `Path`):
            Folder to write into (created if needed).
        num_train (`int`, *optional*, defaults to 256):
            Number of training problems.
        num_val (`int`, *optional*, defaults to 64):
            Number of validation problems.
        num_test (`int`, *optional*, defaults to 64):
            Number of test problems.
        image_size (`int`, *optional*, defaults to 32):
            Side of the square images, in pixels (at least 16).
        seed (`int`, *optional*, defaults to 0):
            Random seed.
        overwrite (`bool`, *optional*, defaults to `False`):
            Write even into a folder that holds a data set this function did not write. Without it such a folder
            (real ScienceQA, say) is refused: the generator marks its folders with `.lavin-synthetic` and rewrites
            only those.

    Returns:
        `Path`: `root`.

    Raises:
        `FileExistsError`: `root` holds data files not written by this generator, and `overwrite` is not set.
    """
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16 pixels for the shapes to be recognisable; got {image_size}.")
    sizes = {"train": num_train, "val": num_val, "test": num_test}
    for split, size in sizes.items():
        if size < 0:
            raise ValueError(f"num_{split} must be non-negative; got {size}.")
    root = Path(root)
    check_synthetic_target(root, overwrite)
    rng = random.Random(seed)
    kind_names = list(QUESTION_KINDS)
    problems, pid_splits, captions, descriptions = {}, {}, {}, {}
    next_qid = 1
    for split, size in sizes.items():
        kinds = _balanced(rng, kind_names, size)
        num_choices = _balanced(rng, [2, 3, 4], size)
        # Balance answer positions separately for each number of choices.
        positions = {k: iter(_balanced(rng, list(range(k)), num_choices.count(k))) for k in (2, 3, 4)}
        pid_splits[split] = []
        for kind, k in zip(kinds, num_choices, strict=True):
            qid = str(next_qid)
            next_qid += 1
            item = QUESTION_KINDS[kind](rng, k)
            choices = list(item.distractors)
            rng.shuffle(choices)
            answer = next(positions[k])
            choices.insert(answer, item.correct)
            if item.shapes:
                image_dir = root / "images" / split / qid
                image_dir.mkdir(parents=True, exist_ok=True)
                _draw(item.shapes, image_size).save(image_dir / "image.png")
                captions[qid] = IMAGE_CAPTION
                descriptions[qid] = describe_picture(item.shapes)
            problems[qid] = {
                "question": item.question,
                "choices": choices,
                "answer": answer,
                "hint": item.hint,
                "image": "image.png" if item.shapes else None,
                "task": "closed choice",
                "grade": rng.choice(GRADES),
                "subject": item.subject,
                "topic": item.topic,
                "category": kind,
                "skill": item.skill,
                "lecture": item.lecture,
                "solution": item.solution,
                "split": split,
            }
            pid_splits[split].append(qid)
    pid_splits["trainval"] = pid_splits["train"] + pid_splits["val"]

    root.mkdir(parents=True, exist_ok=True)
    (root / SYNTHETIC_MARKER).write_text("Written by transformers_lavin.data.write_synthetic_scienceqa.\n")
    for name, content in (
        ("problems.json", problems),
        ("pid_splits.json", pid_splits),
        ("captions.json", {"captions": captions}),
        ("descriptions.json", {"descriptions": descriptions}),
    ):
        (root / name).write_text(json.dumps(content, indent=1) + "\n", encoding="utf-8")
    return root
