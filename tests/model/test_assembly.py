import pytest
import torch
from transformers import AutoModelForImageTextToText, CLIPVisionModel, LlamaForCausalLM

from transformers_lavin import build_lavin_from_parts
from transformers_lavin.testing_utils import build_byte_tokenizer, tiny_lavin_config


@pytest.fixture
def part_dirs(tmp_path):
    config = tiny_lavin_config()
    torch.manual_seed(1)
    vision = CLIPVisionModel(config.vision_config)
    language_model = LlamaForCausalLM(config.text_config)
    vision.save_pretrained(tmp_path / "clip")
    language_model.save_pretrained(tmp_path / "llm")
    tokenizer = build_byte_tokenizer()
    tokenizer.save_pretrained(tmp_path / "llm")
    return tmp_path, vision, language_model


def test_build_from_local_parts_keeps_pretrained_weights(part_dirs):
    root, vision, language_model = part_dirs
    model, processor = build_lavin_from_parts(root / "clip", root / "llm", vision_feature_layers=[2, 4])
    assert torch.equal(
        model.model.vision_tower.encoder.layers[1].mlp.fc1.weight, vision.encoder.layers[1].mlp.fc1.weight
    )
    assert torch.equal(
        model.model.language_model.layers[1].self_attn.v_proj.weight,
        language_model.model.layers[1].self_attn.v_proj.weight,
    )
    assert torch.equal(model.lm_head.weight, language_model.lm_head.weight)
    assert model.config.image_token_id == processor.image_token_id
    text = processor(text=["hello"], return_tensors="pt")
    # The text path of a fresh LaVIN is the LLM reading the "Image: N/A" prefix and the text.
    with torch.no_grad():
        expected = language_model(input_ids=text["input_ids"]).logits
        actual = model(**text).logits
    torch.testing.assert_close(actual, expected)


def test_assembled_model_saves_and_reloads(part_dirs, tmp_path):
    root, _, _ = part_dirs
    model, processor = build_lavin_from_parts(root / "clip", root / "llm", vision_feature_layers=[2, 4])
    model.save_pretrained(tmp_path / "lavin")
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "lavin")
    for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_missing_part_is_a_clear_error(tmp_path):
    with pytest.raises(OSError):
        build_lavin_from_parts(tmp_path / "no-clip", tmp_path / "no-llm")
