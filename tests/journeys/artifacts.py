"""What a user has on disk before the journeys start: a tiny CLIP and a tiny LLaMA (the "pretrained parts"), a tiny
LLaVA with its processor, and training and evaluation data in the layouts the docs describe, with relative paths.

Shared by `tests/journeys` and `tests/docs`, so both walk the same artifacts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

from transformers_lavin.data import write_synthetic_scienceqa
from transformers_lavin.testing_utils import build_byte_tokenizer

IMAGE_SIZE = 30
COLORS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 180, 60)}
# LLaVA-1.5's conversation format ("USER: <image>\n... ASSISTANT: ..."), as its Hub processors carry it.
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: "
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n{% else %}{{ part['text'] }}"
    "{% endif %}{% endfor %} {% else %}ASSISTANT: {% for part in message['content'] %}{{ part['text'] }}{% endfor %}"
    "</s>{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


# One torch thread per command unless the environment sets its own: the tiny models gain nothing from more, and on a
# loaded machine (shared cores, CI runners) the threads of every op wait for each other, several times slower.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def command_environment(**env: str) -> dict[str, str]:
    """The environment commands run in: this one, with ONE_THREAD where it sets no thread count, and `env`."""
    return {**ONE_THREAD, **os.environ, **env}


def console_script(name: str) -> str:
    """The installed console script `name` (beside this interpreter)."""
    return str(Path(sys.executable).with_name(name))


def run(args: list[str], cwd: Path, timeout: int = 300, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    """Run a command as a user would (its own process, in `cwd`); on failure, show what it printed."""
    result = subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=command_environment(**env)
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def run_python(code: str, cwd: Path, timeout: int = 300) -> dict:
    """Run a Python snippet in a fresh interpreter in `cwd`; it prints one JSON object last, which is returned."""
    result = run([sys.executable, "-c", code], cwd)
    return json.loads(result.stdout.strip().splitlines()[-1])


def save_pretrained_parts(root: Path) -> tuple[Path, Path]:
    """A tiny CLIP vision tower and a tiny LLaMA with its tokenizer, as `from_pretrained` directories."""
    torch.manual_seed(0)
    clip = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            image_size=IMAGE_SIZE,
            patch_size=6,
        )
    )
    clip.save_pretrained(root / "clip")
    tokenizer = build_byte_tokenizer()
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer) - 1,  # LLaMA's vocabulary; the image token is LaVIN's, outside it
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    llama.save_pretrained(root / "llama")
    tokenizer.save_pretrained(root / "llama")
    return root / "clip", root / "llama"


def save_tiny_llava(directory: Path) -> Path:
    """A tiny LLaVA-1.5-shaped model with its processor and chat template, as `save_pretrained` writes it."""
    tokenizer = build_byte_tokenizer()
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=6,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(directory)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=6,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    processor.save_pretrained(directory)
    return directory


def write_images(folder: Path) -> dict[str, str]:
    """One small picture per colour; returns colour -> file name."""
    folder.mkdir(parents=True, exist_ok=True)
    names = {}
    for color, rgb in COLORS.items():
        Image.new("RGB", (IMAGE_SIZE + 2, IMAGE_SIZE), rgb).save(folder / f"{color}.png")
        names[color] = f"{color}.png"
    return names


def chat_rows(image_folder: str) -> list[dict]:
    """TRL's conversational rows: typed parts (an image part beside text parts) and text-only rows mixed."""
    rows = []
    for color in COLORS:
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is it?"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": f"It is {color}."}]},
                ],
                "images": [f"{image_folder}/{color}.png"],
            }
        )
    for question, answer in (("Say hi.", "Hi."), ("Name a fruit.", "An apple."), ("Count to two.", "One, two.")):
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": question}]},
                    {"role": "assistant", "content": [{"type": "text", "text": answer}]},
                ],
                "images": [],
            }
        )
    return rows


def write_training_data(data: Path) -> Path:
    """`data/train.jsonl` (TRL conversational, image paths relative to the file) and its images in `data/images/`."""
    write_images(data / "images")
    path = data / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in chat_rows("images")))
    return path


def write_scienceqa(root: Path) -> Path:
    """A small ScienceQA in the official layout (problems.json, pid_splits.json, images/)."""
    return write_synthetic_scienceqa(root, num_train=8, num_val=0, num_test=4, image_size=IMAGE_SIZE, seed=0)
