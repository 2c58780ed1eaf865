"""Tiny local stand-ins for everything the docs name, in one place: the blocks then run exactly as written.

A Hub id or a placeholder path in the docs (`openai/clip-vit-large-patch14`, `path/to/lavin-7b`, `data/pope`) is a
folder relative to the working directory: `from_pretrained` and the data readers look there before the Hub, so a
tiny model or data set put at that path stands in for the real one, and `HF_HUB_OFFLINE=1` makes sure nothing is
fetched instead. Each doc's blocks run in a fresh working directory holding the stand-ins its text names.

The stand-in models answer at once (their generation config suppresses every token but EOS), so that documented
commands with the real models' generation budgets (LLaVA-Bench's 512 new tokens) finish in seconds; what they answer
does not matter here, that the documented code runs does.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from PIL import Image
from transformers import GenerationConfig

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "journeys"), str(HERE.parent / "conversion")]  # shared builders of other tests

from artifacts import ONE_THREAD, save_pretrained_parts, save_tiny_llava, write_scienceqa  # noqa: E402, F401
from conversion_helpers import build_reference, save_reference_adapter, write_all  # noqa: E402

# Path as the docs write it -> the stand-in put there.
PATHS = {
    "openai/clip-vit-large-patch14": "clip",
    "path/to/llama-7b-hf": "llama",
    "path/to/lavin-7b": "lavin",
    "path/to/lavin-base": "lavin",
    "path/or/hub-id-of-a-lavin-base": "lavin",
    "path/to/mma-adapter": "mma_adapter",
    "path/or/hub-id-of-an-mma-adapter": "mma_adapter",
    "my-mma-adapter": "mma_adapter",
    "llava-hf/llava-1.5-7b-hf": "llava",
    "photo.jpg": "photo",
    # lavin-convert's inputs: a reference LaVIN checkpoint (router CLIP adapters, with its training args, as the
    # published ones), one with the plain CLIP adapters, and the LLaMA and CLIP they were trained on.
    "LaVIN-7B-sqa.pth": "reference_router",
    "my-normal-adapter.pth": "reference_normal",
    "llama-7b-hf": "reference_llama",
    "clip-vit-large-patch14": "reference_clip",
    # lavin-eval's benchmarks, in their official layouts, and the user's own model callable.
    "data/scienceqa": "scienceqa",
    "data/pope": "pope",
    "data/coco": "coco",
    "data/vqav2": "vqa",
    "data/llava-bench-in-the-wild": "llava_bench",
    "my_pkg": "my_pkg",
    # The commands run from a checkout: the configs they name.
    "examples/accelerate": "accelerate_configs",
}
# Text replaced before a block runs: the judge endpoint, where the test serves an OpenAI-compatible judge.
TEXT = {"http://127.0.0.1:8000/v1": "{judge_url}"}
# Commands that serve until stopped, with the path that answers once they serve: started with `--port` on a free
# port, checked to answer there, then stopped.
SERVERS = {"lavin-chat": "/gradio_api/info", "lavin-serve": "/health"}
# The environment of every block: nothing from the Hub, and the working directory importable (`my_pkg`, as if the
# user had installed it). One torch thread unless the test's environment sets a count (ONE_THREAD, as the journeys).
ENVIRONMENT = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _image(path: Path, rgb=(200, 40, 40)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 32), rgb).save(path)


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _photo(target: Path) -> None:
    Image.new("RGB", (64, 48), (40, 120, 200)).save(target, format="JPEG")


def _clip(target: Path) -> None:
    save_pretrained_parts(target.parent / ".parts")
    (target.parent / ".parts" / "clip").rename(target)


def _llama(target: Path) -> None:
    save_pretrained_parts(target.parent / ".parts")
    (target.parent / ".parts" / "llama").rename(target)


def _answers_at_once(model_dir: Path, vocab_size: int) -> None:
    config = GenerationConfig.from_pretrained(model_dir)
    config.suppress_tokens = [token for token in range(vocab_size) if token != config.eos_token_id]
    config.save_pretrained(model_dir)


def _lavin(target: Path) -> None:
    from transformers_lavin.testing_utils import build_tiny_lavin

    model, processor = build_tiny_lavin(seed=0)
    model.save_pretrained(target)
    processor.save_pretrained(target)
    _answers_at_once(target, model.config.text_config.vocab_size)


def _llava(target: Path) -> None:
    save_tiny_llava(target)
    _answers_at_once(target, json.loads((target / "config.json").read_text())["text_config"]["vocab_size"])


def _accelerate_configs(target: Path) -> None:
    import shutil

    shutil.copytree(HERE.parents[1] / "examples" / "accelerate", target)


def _mma_adapter(target: Path) -> None:
    import torch
    from peft import get_peft_model

    from transformers_lavin import MMAConfig
    from transformers_lavin.testing_utils import build_tiny_lavin

    model, _ = build_tiny_lavin(seed=0)
    torch.manual_seed(0)
    get_peft_model(model, MMAConfig()).save_pretrained(target)


def _reference(target: Path, which: str) -> None:
    checkpoint, llama, clip = write_all(build_reference(seed=0), target.parent / ".reference")
    outputs = {"router": checkpoint, "llama": llama, "clip": clip}
    if which == "normal":
        outputs["normal"] = save_reference_adapter(
            build_reference(seed=0, visual_adapter_type="normal"), target.parent / ".reference" / "normal.pth"
        )
    outputs[which].rename(target)


def _scienceqa(target: Path) -> None:
    write_scienceqa(target)


def _pope(target: Path) -> None:
    for split in ("random", "popular", "adversarial"):
        _jsonl(
            target / f"coco_pope_{split}.json",
            [{"question_id": q, "image": f"img{q}.jpg", "text": "Is there a cat?", "label": "yes"} for q in (1, 2)],
        )
    for q in (1, 2):
        _image(target / "images" / f"img{q}.jpg")


def _coco(target: Path) -> None:
    images = [{"id": i, "file_name": f"{i:012d}.jpg"} for i in (1, 2)]
    annotations = [{"image_id": i, "id": i, "caption": "a red square on a white wall"} for i in (1, 2)]
    target.mkdir(parents=True)
    (target / "captions.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    for i in (1, 2):
        _image(target / "images" / f"{i:012d}.jpg")


def _vqa(target: Path) -> None:
    target.mkdir(parents=True)
    questions = [{"question_id": q, "image_id": 42, "question": "What color is it?"} for q in (1, 2)]
    answers = [{"answer": "red", "answer_id": k} for k in range(10)]
    annotations = [{"question_id": q, "image_id": 42, "answers": answers, "answer_type": "other"} for q in (1, 2)]
    (target / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(json.dumps({"questions": questions}))
    (target / "v2_mscoco_val2014_annotations.json").write_text(json.dumps({"annotations": annotations}))
    _image(target / "images" / "COCO_val2014_000000000042.jpg")


def _llava_bench(target: Path) -> None:
    rows = [(0, "conv", "What is on the wall?"), (1, "detail", "Describe the image."), (2, "complex", "Why red?")]
    _jsonl(
        target / "questions.jsonl",
        [{"question_id": q, "image": "001.jpg", "text": t, "category": c} for q, c, t in rows],
    )
    _jsonl(target / "answers_gpt4.jsonl", [{"question_id": q, "text": "A red square."} for q, _, _ in rows])
    _jsonl(target / "context.jsonl", [{"image": "001.jpg", "caption": "A red square on a white wall."}])
    _image(target / "images" / "001.jpg")


def _my_pkg(target: Path) -> None:
    target.mkdir(parents=True)
    (target / "__init__.py").write_text("")
    (target / "my_model.py").write_text(
        "def generate(images, prompts):\n    return ['The answer is A. Yes, it is red.' for _ in prompts]\n"
    )


BUILDERS: dict[str, Callable[[Path], None]] = {
    "clip": _clip,
    "llama": _llama,
    "lavin": _lavin,
    "mma_adapter": _mma_adapter,
    "llava": _llava,
    "photo": _photo,
    "reference_router": lambda target: _reference(target, "router"),
    "reference_normal": lambda target: _reference(target, "normal"),
    "reference_llama": lambda target: _reference(target, "llama"),
    "reference_clip": lambda target: _reference(target, "clip"),
    "scienceqa": _scienceqa,
    "pope": _pope,
    "coco": _coco,
    "vqa": _vqa,
    "llava_bench": _llava_bench,
    "my_pkg": _my_pkg,
    "accelerate_configs": _accelerate_configs,
}


def build(kind: str, store: Path) -> Path:
    """The stand-in `kind`, built once into `store/kind/` (each builder writes into a fresh folder)."""
    target = store / kind / kind
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        BUILDERS[kind](target)
    return target
