import pytest
from transformers import AutoConfig, CLIPVisionConfig, LlamaConfig

from transformers_lavin import LavinConfig


def test_defaults_are_lavin_7b_shapes():
    config = LavinConfig()
    assert config.vision_config.hidden_size == 1024 and config.vision_config.num_hidden_layers == 24
    assert config.vision_config.patch_size == 14 and config.vision_config.image_size == 224
    assert config.text_config.hidden_size == 4096 and config.text_config.num_hidden_layers == 32
    assert config.vision_feature_layers == [4, 8, 12, 16, 20, 24]
    assert config.num_image_tokens == 6 and config.projector_hidden_size == 128


def test_sub_configs_as_objects_or_dicts_are_the_same(tmp_path):
    vision = CLIPVisionConfig(hidden_size=48, num_hidden_layers=8, num_attention_heads=4, intermediate_size=96)
    text = LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    from_objects = LavinConfig(vision_config=vision, text_config=text, image_token_id=7)
    from_dicts = LavinConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_id=7)
    assert from_objects.to_dict() == from_dicts.to_dict()
    assert from_objects.vision_feature_layers == [4, 8]

    from_objects.save_pretrained(tmp_path)
    reloaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(reloaded, LavinConfig)
    strip = lambda d: {k: v for k, v in d.items() if k != "_name_or_path"}  # noqa: E731
    assert strip(reloaded.to_dict()) == strip(from_objects.to_dict())


def test_a_full_clip_config_keeps_its_vision_part():
    config = LavinConfig(
        vision_config={
            "model_type": "clip",
            "vision_config": {"hidden_size": 40, "num_hidden_layers": 4, "num_attention_heads": 4},
        }
    )
    assert isinstance(config.vision_config, CLIPVisionConfig) and config.vision_config.hidden_size == 40


@pytest.mark.parametrize("layers", [[], [0, 25], [-1]])
def test_bad_vision_feature_layers_are_refused(layers):
    with pytest.raises(ValueError, match="vision_feature_layers"):
        LavinConfig(vision_feature_layers=layers)
