"""Checkpoints on disk for the conversion tests: a tiny reference LaVIN's adapter `.pth`, its LLaMA and its CLIP."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from reference_lavin import ReferenceArgs, ReferenceLavin, clip_hf_state_dict, llama_hf_state_dict, randomize
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, LlamaConfig

from transformers_lavin.testing_utils import build_byte_tokenizer


def build_reference(seed: int = 0, **overrides) -> ReferenceLavin:
    return randomize(ReferenceLavin(ReferenceArgs(**overrides)), seed)


def save_reference_adapter(
    model: ReferenceLavin, path: Path, training_checkpoint: bool = True, with_args: bool = True
) -> Path:
    """Save the adapter as the reference's train.py does (DDP `module.` names under "model"), or as a bare dict."""
    tensors = model.adapter_state_dict()
    if not training_checkpoint:
        torch.save(tensors, path)
        return path
    checkpoint = {
        "model": {f"module.{name}": value for name, value in tensors.items()},
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.009, "params": [0, 1]}]},
        "epoch": 19,
        "scaler": {"scale": 65536.0, "growth_factor": 2.0},
    }
    if with_args:
        args = model.args
        checkpoint["args"] = argparse.Namespace(
            adapter_type=args.adapter_type,
            visual_adapter_type=args.visual_adapter_type,
            adapter_dim=args.adapter_dim,
            adapter_scale=args.scale,
            temperature=args.temperature,
            hidden_proj=args.hidden_proj,
            llm_model="7B",
        )
    torch.save(checkpoint, path)
    return path


def save_llama(model: ReferenceLavin, directory: Path) -> Path:
    """The frozen LLaMA as a LlamaForCausalLM directory with the byte tokenizer."""
    args = model.args
    tokenizer = build_byte_tokenizer()
    config = LlamaConfig(
        vocab_size=args.vocab_size,
        hidden_size=args.dim,
        intermediate_size=args.ffn_hidden,
        num_hidden_layers=args.n_layers,
        num_attention_heads=args.n_heads,
        num_key_value_heads=args.n_heads,
        rms_norm_eps=args.norm_eps,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    directory.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(directory)
    save_file(llama_hf_state_dict(model), str(directory / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(directory)
    return directory


def clip_vision_config(model: ReferenceLavin) -> CLIPVisionConfig:
    args = model.args
    return CLIPVisionConfig(
        hidden_size=args.vision_width,
        intermediate_size=4 * args.vision_width,
        num_hidden_layers=args.vision_layers,
        num_attention_heads=args.vision_heads,
        image_size=args.image_size,
        patch_size=args.patch_size,
        projection_dim=args.vision_output_dim,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )


def save_clip(model: ReferenceLavin, directory: Path, full_clip: bool = False) -> Path:
    """The frozen CLIP tower as a CLIPVisionModel directory (hub key names), or inside a full CLIPModel."""
    directory.mkdir(parents=True, exist_ok=True)
    vision_config = clip_vision_config(model)
    vision_state = clip_hf_state_dict(model)
    if not full_clip:
        vision_config.save_pretrained(directory)
        save_file(vision_state, str(directory / "model.safetensors"), metadata={"format": "pt"})
        return directory
    text_config = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    clip = CLIPModel(
        CLIPConfig(
            text_config=text_config,
            vision_config=vision_config.to_dict(),
            projection_dim=model.args.vision_output_dim,
        )
    )
    missing, unexpected = _load_vision_into(clip, vision_state)
    assert not unexpected and not any(key.startswith("vision_model") for key in missing), (missing, unexpected)
    clip.save_pretrained(directory)
    return directory


def _load_vision_into(clip: CLIPModel, vision_state: dict[str, torch.Tensor]):
    result = clip.vision_model.load_state_dict(
        {key.removeprefix("vision_model."): value for key, value in vision_state.items()}, strict=False
    )
    return result.missing_keys, result.unexpected_keys


def write_all(model: ReferenceLavin, root: Path, full_clip: bool = False, **adapter_kwargs) -> tuple[Path, Path, Path]:
    """The three inputs of a conversion: adapter checkpoint, LLaMA directory, CLIP directory."""
    root.mkdir(parents=True, exist_ok=True)
    checkpoint = save_reference_adapter(model, root / "adapter.pth", **adapter_kwargs)
    return checkpoint, save_llama(model, root / "llama"), save_clip(model, root / "clip", full_clip=full_clip)


def random_image(seed: int, size: int = 30) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def tree_snapshot(root: Path) -> list[str]:
    """Every path under `root`, to check that a failed conversion wrote nothing."""
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


PROMPT = "Question: Which shape is shown? Response:"
ANSWER = " The answer is B."


def answer_ids(tokenizer) -> list[int]:
    return tokenizer.encode(ANSWER, add_special_tokens=False) + [tokenizer.eos_token_id]


def our_batch(processor, images: list | None, batch: int = 1) -> dict[str, torch.Tensor]:
    """Prompt + answer rows for this package's model: the processor writes BOS, the prefix and the image tokens."""
    tokenizer = processor.tokenizer
    encoded = processor(images=images, text=[PROMPT] * batch, return_tensors="pt")
    answer = torch.tensor([answer_ids(tokenizer)] * batch)
    input_ids = torch.cat([encoded["input_ids"], answer], dim=1)
    labels = input_ids.clone()
    labels[:, : encoded["input_ids"].shape[1]] = -100  # the prompt carries no loss
    inputs = {"input_ids": input_ids, "labels": labels}
    if "pixel_values" in encoded:
        inputs["pixel_values"] = encoded["pixel_values"]
    return inputs


def reference_batch(tokenizer, has_image: list[bool], padding: int = 16) -> dict[str, torch.Tensor]:
    """The same rows as the reference's data loader gives them: BOS + prompt + answer, zero-padded, labels 0 = ignore."""
    prompt = tokenizer.encode(PROMPT, add_special_tokens=False)
    answer = answer_ids(tokenizer)
    example = [tokenizer.bos_token_id, *prompt, *answer] + [0] * padding
    label = [0] * (1 + len(prompt)) + answer + [0] * padding
    rows = len(has_image)
    return {
        "examples": torch.tensor([example] * rows),
        "labels": torch.tensor([label] * rows),
        "prefix_img": torch.tensor(tokenizer.encode("Image: ", add_special_tokens=False)),
        "prefix_nonimg": torch.tensor(tokenizer.encode("Image: N/A", add_special_tokens=False)),
        "img_indicators": torch.tensor([int(flag) for flag in has_image]),
    }
