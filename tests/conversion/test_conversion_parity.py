"""After conversion, this package's LaVIN computes what the reference LaVIN computes (fp32, tiny sizes)."""

from __future__ import annotations

import json

import pytest
import torch
from conversion_helpers import build_reference, our_batch, random_image, reference_batch, write_all
from peft import PeftModel, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file

import transformers_lavin  # noqa: F401  (registers LaVIN and MMA)
from transformers_lavin import LavinForConditionalGeneration, LavinProcessor, MMAConfig
from transformers_lavin.conversion import LavinConversionError, convert_lavin_checkpoint

TOLERANCE = 1e-5

VARIANTS = {
    # Published recipe, saved as the reference's training checkpoint; CLIP given as a CLIPVisionModel.
    "attn-router": {"reference": {"adapter_type": "attn", "visual_adapter_type": "router"}, "save": {}, "clip": {}},
    # Every other adapter site, a bare dict of tensors (temperature given by hand), CLIP given as a full CLIPModel.
    "block-router_block": {
        "reference": {"adapter_type": "block", "visual_adapter_type": "router_block", "temperature": 5.0},
        "save": {"training_checkpoint": False},
        "clip": {"full_clip": True},
        "temperature": 5.0,
    },
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def converted(request, tmp_path_factory):
    variant = VARIANTS[request.param]
    root = tmp_path_factory.mktemp(request.param)
    reference = build_reference(seed=0, **variant["reference"])
    checkpoint, llama, clip = write_all(
        reference, root / "inputs", full_clip=variant["clip"].get("full_clip", False), **variant["save"]
    )
    convert_lavin_checkpoint(
        checkpoint,
        llama,
        clip,
        base_dir=root / "base",
        adapter_dir=root / "adapter",
        temperature=variant.get("temperature"),
    )
    base = LavinForConditionalGeneration.from_pretrained(root / "base", dtype=torch.float32)
    model = PeftModel.from_pretrained(base, root / "adapter").eval()
    processor = LavinProcessor.from_pretrained(root / "base")
    return reference, model, processor, root


def _max_diff(ours: torch.Tensor, reference_logits: torch.Tensor) -> float:
    # The reference's logits start with the modality token's position; ours have no such position.
    length = ours.shape[1]
    return (ours - reference_logits[:, 1 : 1 + length]).abs().max().item()


@pytest.mark.parametrize("with_image", [True, False], ids=["image-row", "text-row"])
def test_loss_and_logits_match_reference(converted, with_image):
    reference, model, processor, _ = converted
    image = random_image(seed=1)
    inputs = our_batch(processor, [image] if with_image else None)
    pixel_values = our_batch(processor, [image])["pixel_values"]  # the reference encodes an image for every row
    with torch.no_grad():
        ours = model(**inputs)
        ref_loss, ref_logits = reference(images=pixel_values, **reference_batch(processor.tokenizer, [with_image]))
        with model.disable_adapter():
            unadapted = model(**inputs)
    difference = _max_diff(ours.logits, ref_logits)
    print(f"max |logits - reference| = {difference:.2e}, |loss - reference| = {abs(ours.loss - ref_loss):.2e}")
    assert difference <= TOLERANCE
    assert abs(ours.loss.item() - ref_loss.item()) <= TOLERANCE
    # The comparison is sensitive: the converted adapters change the output far beyond the tolerance.
    assert _max_diff(unadapted.logits, ref_logits) > 1e-2


def test_images_reach_the_output(converted):
    """Two images give different answers-logits (guards against a parity test that compares image-blind models)."""
    reference, _, processor, _ = converted
    pixel_values = our_batch(processor, [random_image(seed=1), random_image(seed=2)], batch=2)["pixel_values"]
    with torch.no_grad():
        _, logits = reference(
            images=pixel_values, per_image_vision=True, **reference_batch(processor.tokenizer, [True, True])
        )
    assert (logits[0, -5:] - logits[1, -5:]).abs().max() > 1e-3


def test_batch_of_two_images_shows_the_reference_vision_coupling(converted):
    """
    The reference runs CLIP in (L, N, D) layout, so its vision routers read `x[:, 0]` = the tokens of the first image
    of the batch and route every image with them. Row 0 agrees with this package; row 1 does not, and agrees once the
    reference encodes each image on its own.
    """
    reference, model, processor, _ = converted
    images = [random_image(seed=1), random_image(seed=2)]
    inputs = our_batch(processor, images, batch=2)
    batch = reference_batch(processor.tokenizer, [True, True])
    with torch.no_grad():
        ours = model(**inputs).logits
        _, coupled = reference(images=inputs["pixel_values"], **batch)
        _, per_image = reference(images=inputs["pixel_values"], per_image_vision=True, **batch)
    first_row = _max_diff(ours[:1], coupled[:1])
    second_row = _max_diff(ours[1:], coupled[1:])
    print(
        f"batch of 2: row 0 differs by {first_row:.2e}, row 1 by {second_row:.2e} (reference routes CLIP by image 0)"
    )
    assert first_row <= TOLERANCE
    assert second_row > 1e-3
    assert _max_diff(ours, per_image) <= TOLERANCE


def test_adapter_directory_is_what_peft_saves(converted, tmp_path):
    reference, model, _, root = converted
    base = LavinForConditionalGeneration.from_pretrained(root / "base", dtype=torch.float32)
    config = json.loads((root / "adapter" / "adapter_config.json").read_text())
    fresh = get_peft_model(
        base,
        MMAConfig(
            adapter_type=reference.args.adapter_type,
            vision_adapter_type=reference.args.visual_adapter_type,
            temperature=reference.args.temperature,
        ),
    )
    fresh.save_pretrained(tmp_path / "native")
    native = load_file(tmp_path / "native" / "adapter_model.safetensors")
    converted_state = load_file(root / "adapter" / "adapter_model.safetensors")
    assert {k: tuple(v.shape) for k, v in converted_state.items()} == {k: tuple(v.shape) for k, v in native.items()}
    native_config = json.loads((tmp_path / "native" / "adapter_config.json").read_text())
    for field in ("peft_type", "adapter_hidden_size", "groups", "scale", "temperature", "adapter_type"):
        assert config[field] == native_config[field], field
    assert config["vision_adapter_type"] == native_config["vision_adapter_type"]
    result = set_peft_model_state_dict(fresh, converted_state)
    assert not result.unexpected_keys
    assert not [key for key in result.missing_keys if "mma_" in key or "modules_to_save" in key]
    # Same parameter count as the reference trains (every parameter named "adapter").
    reference_count = sum(value.numel() for value in reference.adapter_state_dict().values())
    assert sum(value.numel() for value in converted_state.values()) == reference_count


# ------------------------------------------------------------------------------ the reference's plain CLIP adapters
@pytest.fixture(scope="module")
def plain_vision(tmp_path_factory):
    root = tmp_path_factory.mktemp("normal")
    reference = build_reference(seed=3, visual_adapter_type="normal")
    return reference, write_all(reference, root / "inputs"), root


def test_plain_vision_adapters_refuse_an_adapter_directory(plain_vision):
    _, (checkpoint, llama, clip), root = plain_vision
    with pytest.raises(LavinConversionError, match="no identity path"):
        convert_lavin_checkpoint(checkpoint, llama, clip, base_dir=root / "b", adapter_dir=root / "a")
    assert not (root / "b").exists() and not (root / "a").exists()


@pytest.mark.parametrize("modality", ["image", "text"])
def test_merged_model_matches_reference_for_its_modality(plain_vision, modality):
    reference, (checkpoint, llama, clip), root = plain_vision
    target = root / f"merged-{modality}"
    convert_lavin_checkpoint(checkpoint, llama, clip, merged_dir=target, modality=modality)
    merged = LavinForConditionalGeneration.from_pretrained(target, dtype=torch.float32).eval()
    processor = LavinProcessor.from_pretrained(target)
    with_image = modality == "image"
    image = random_image(seed=1)
    inputs = our_batch(processor, [image] if with_image else None)
    with torch.no_grad():
        ours = merged(**inputs)
        ref_loss, ref_logits = reference(
            images=our_batch(processor, [image])["pixel_values"],
            **reference_batch(processor.tokenizer, [with_image]),
        )
    difference = _max_diff(ours.logits, ref_logits)
    print(f"merged ({modality}): max |logits - reference| = {difference:.2e}")
    assert difference <= TOLERANCE
    assert abs(ours.loss.item() - ref_loss.item()) <= TOLERANCE
    assert not any("mma" in name for name, _ in merged.named_parameters())


def test_merged_model_refused_for_routed_vision_adapters(converted):
    _, _, _, root = converted
    inputs = root / "inputs"
    target = root / "merged"
    with pytest.raises(LavinConversionError, match="routed"):
        convert_lavin_checkpoint(
            inputs / "adapter.pth",
            inputs / "llama",
            inputs / "clip",
            merged_dir=target,
            modality="image",
            temperature=5.0,
        )
    assert not target.exists()
