import re

import pytest
import torch
from helpers import mma_model
from peft import PeftModel, get_peft_model
from transformers import LlamaForCausalLM

from transformers_lavin import MMAConfig
from transformers_lavin.testing_utils import build_tiny_lavin, tiny_lavin_config


def test_unknown_adapter_types_are_refused():
    with pytest.raises(ValueError, match="Unknown adapter_type 'mlp'"):
        MMAConfig(adapter_type="mlp")
    with pytest.raises(ValueError, match="Unknown vision_adapter_type"):
        MMAConfig(vision_adapter_type="routed")
    with pytest.raises(ValueError, match="divisible by groups"):
        MMAConfig(adapter_hidden_size=7)


def test_a_target_that_matches_nothing_is_a_clear_error(tiny):
    base, _ = tiny
    with pytest.raises(ValueError, match="target_modules \\['attention_block'\\] match no module in the LLM"):
        get_peft_model(base, MMAConfig(target_modules=["attention_block"]))


def test_adapter_for_another_shape_is_refused(tmp_path):
    base, _ = build_tiny_lavin(seed=0)
    mma_model(base).save_pretrained(tmp_path)
    wider, _ = build_tiny_lavin(seed=0, text_hidden_size=48)
    with pytest.raises(RuntimeError, match="size mismatch"):
        PeftModel.from_pretrained(wider, tmp_path)


def test_adapter_for_another_architecture_is_refused(tmp_path):
    base, _ = build_tiny_lavin(seed=0)
    mma_model(base).save_pretrained(tmp_path)
    llama = LlamaForCausalLM(tiny_lavin_config().text_config)
    with pytest.raises(ValueError, match="does not fit the base model \\(LlamaForCausalLM\\)"):
        PeftModel.from_pretrained(llama, tmp_path)


def test_a_model_without_a_decoder_is_refused():
    with pytest.raises(ValueError, match="decoder-only LLM"):
        get_peft_model(torch.nn.Sequential(torch.nn.Linear(4, 4)), MMAConfig(target_modules=["0"]))


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"temperature": float("nan")}, "temperature must be a finite number"),
        ({"temperature": float("inf")}, "temperature must be a finite number"),
        ({"scale": float("nan")}, "scale must be a finite number"),
        ({"temperature": "10"}, "temperature must be a finite number, got '10'"),
        ({"temperature": 0.0}, "temperature must be > 0.0"),
        ({"groups": 0}, "groups must be a positive integer"),
        ({"adapter_hidden_size": 8.0}, "adapter_hidden_size must be a positive integer"),
        ({"dropout": 1.0}, "dropout must be < 1.0"),
        ({"merge_modality": "audio"}, "merge_modality must be 'image', 'text' or None"),
    ],
)
def test_config_values_are_checked_for_type_finiteness_and_range(settings, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        MMAConfig(**settings)
