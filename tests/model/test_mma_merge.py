import pytest
import torch
from conftest import random_image
from helpers import mma_model
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText

from transformers_lavin.mma import MMALayer
from transformers_lavin.testing_utils import build_tiny_lavin


def structure(module: torch.nn.Module) -> list[tuple[str, str]]:
    return [(name, type(child).__name__) for name, child in module.named_modules()]


@pytest.fixture
def rows(tiny):
    _, processor = tiny
    image_row = processor(images=[random_image(7)], text=["What colour is it?"], return_tensors="pt")
    text_row = processor(text=["What is two plus two?"], return_tensors="pt")
    return {"image": image_row, "text": text_row}


@pytest.mark.parametrize("adapter_type", ["attn", "block"])
@pytest.mark.parametrize("modality", ["image", "text"])
def test_merged_model_matches_unmerged_for_its_modality(rows, modality, adapter_type, tmp_path):
    base, _ = build_tiny_lavin(seed=0)
    base_structure = structure(base.model.language_model)
    model = mma_model(base, seed=8, adapter_type=adapter_type)
    inputs = rows[modality]
    with torch.no_grad():
        expected = model(**inputs).logits
    merged = model.merge_and_unload(modality=modality)
    assert structure(merged.model.language_model) == base_structure
    assert not any(isinstance(m, MMALayer) for m in merged.model.language_model.modules())
    with torch.no_grad():
        actual = merged(**inputs).logits
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)

    # The folded biases are declared in the config and the routed vision adapters saved beside the model, so the
    # merged model saves and reloads as it is.
    merged.save_pretrained(tmp_path)
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("adapter_type", ["attn", "block"])
@pytest.mark.parametrize("vision_adapter_type", ["router", "router_block", "normal", "none"])
def test_every_variant_merged_saves_and_reloads_exactly_from_another_directory(
    rows, adapter_type, vision_adapter_type, tmp_path, monkeypatch
):
    model = mma_model(build_tiny_lavin(seed=0)[0], seed=5, adapter_type=adapter_type,
                      vision_adapter_type=vision_adapter_type)  # fmt: skip
    with torch.no_grad():
        expected = model(**rows["image"]).logits
    merged = model.merge_and_unload(modality="image")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    merged.save_pretrained("merged")  # a relative path, as a user types it
    saved = load_file("merged/model.safetensors")
    assert not [key for key in saved if "base_layer" in key or "mma_" in key]
    assert set(saved) == set(build_tiny_lavin(seed=0)[0].state_dict()) | set(biases_declared(merged))
    monkeypatch.chdir(tmp_path)
    reloaded = AutoModelForImageTextToText.from_pretrained("work/merged").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**rows["image"]).logits, expected, rtol=0, atol=1e-4)
    routed_vision = vision_adapter_type.startswith("router")
    assert (tmp_path / "work/merged/adapter_model.safetensors").exists() == routed_vision


def biases_declared(merged) -> list[str]:
    """The bias keys the merged LLM has that the base LLM had not (all of its linear layers', once declared)."""
    base = set(build_tiny_lavin(seed=0)[0].state_dict())
    new = [key for key in merged.state_dict() if key.endswith(".bias") and key not in base]
    return [key for key in new if "base_layer" not in key and "mma_" not in key]


def test_routed_vision_adapters_stay_and_normal_ones_fold(rows, tmp_path):
    base, _ = build_tiny_lavin(seed=0)
    merged = mma_model(base, seed=9).merge_and_unload(modality="image")
    assert all(m.routing_key is None for m in merged.modules() if isinstance(m, MMALayer))
    assert any(isinstance(m, MMALayer) for m in merged.model.vision_tower.modules())

    base, _ = build_tiny_lavin(seed=0)
    vision_structure = structure(base.model.vision_tower)
    model = mma_model(base, seed=9, vision_adapter_type="normal")
    with torch.no_grad():
        expected = model(**rows["image"]).logits
    merged = model.merge_and_unload(modality="image")
    assert structure(merged.model.vision_tower) == vision_structure
    with torch.no_grad():
        torch.testing.assert_close(merged(**rows["image"]).logits, expected, rtol=0, atol=1e-5)
    merged.save_pretrained(tmp_path)
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**rows["image"]).logits, expected, rtol=0, atol=1e-5)


def test_merge_needs_a_modality(tiny):
    base, _ = tiny
    model = mma_model(base)
    with pytest.raises(ValueError, match="modality='image'"):
        model.merge_and_unload()
    with pytest.raises(ValueError, match="modality='image'"):
        model.merge_adapter()
