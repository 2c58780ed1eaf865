"""What PEFT's common tester expects of every method, checked for MMA with LoRA as the control on the same model.

Each test runs the same steps on both methods; where MMA needs a modality (a VLM), the config gives it."""

import warnings

import pytest
import torch
from helpers import randomize_adapters
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from transformers import LlamaForCausalLM

from transformers_lavin import MMAConfig
from transformers_lavin.mma import MMALayer, MMAModalityEmbedding
from transformers_lavin.testing_utils import build_tiny_lavin, build_tiny_vlm, tiny_lavin_config

IDS = torch.randint(4, 200, (2, 9), generator=torch.Generator().manual_seed(0))
METHODS = ("mma", "lora")


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_lavin_config().text_config).eval()


def adapter_config(method: str, dropout: float = 0.0, **mma_kwargs):
    """A non-identity adapter of either method (PEFT's tests start adapters away from the identity too)."""
    if method == "lora":
        return LoraConfig(target_modules=["q_proj", "v_proj"], init_lora_weights=False, lora_dropout=dropout)
    return MMAConfig(init_weights=False, dropout=dropout, **mma_kwargs)


def logits(model, **inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.parametrize("method", METHODS)
def test_low_cpu_mem_usage_creates_adapters_on_meta_and_loads_them(method, tmp_path):
    on_meta = get_peft_model(tiny_llama(), adapter_config(method), low_cpu_mem_usage=True)
    assert {p.device.type for n, p in on_meta.named_parameters() if "lora_" in n or "mma_" in n} == {"meta"}

    trained = get_peft_model(tiny_llama(), adapter_config(method))
    expected = logits(trained, input_ids=IDS)
    trained.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(tiny_llama(), tmp_path, low_cpu_mem_usage=True)
    assert {p.device.type for p in loaded.parameters()} == {"cpu"}
    torch.testing.assert_close(logits(loaded, input_ids=IDS), expected, rtol=0, atol=0)


def test_low_cpu_mem_usage_loads_a_lavin_adapter_exactly(tmp_path, mixed_batch):
    trained = get_peft_model(build_tiny_lavin(seed=0)[0], adapter_config("mma"))
    randomize_adapters(trained, seed=1)  # the projector and modality embedding too
    expected = logits(trained.eval(), **mixed_batch)
    trained.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(build_tiny_lavin(seed=0)[0], tmp_path, low_cpu_mem_usage=True)
    assert "meta" not in {p.device.type for p in loaded.parameters()}
    torch.testing.assert_close(logits(loaded, **mixed_batch), expected, rtol=0, atol=0)


@pytest.mark.parametrize("method", METHODS)
def test_merging_after_a_forward_under_inference_mode(method):
    model = get_peft_model(tiny_llama(), adapter_config(method)).eval()
    with torch.inference_mode():
        expected = model(input_ids=IDS).logits
    model.merge_adapter()
    torch.testing.assert_close(logits(model, input_ids=IDS), expected.clone(), rtol=0, atol=1e-5)
    model.unmerge_adapter()
    with torch.inference_mode():
        model(input_ids=IDS)
    merged = model.merge_and_unload()
    torch.testing.assert_close(logits(merged, input_ids=IDS), expected.clone(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_merging_twice_gives_peft_s_warning_and_changes_nothing(method):
    model = get_peft_model(tiny_llama(), adapter_config(method)).eval()
    model.merge_adapter()
    expected = logits(model, input_ids=IDS)
    with pytest.warns(UserWarning, match="All adapters are already merged, nothing to do"):
        model.merge_adapter()
    torch.testing.assert_close(logits(model, input_ids=IDS), expected, rtol=0, atol=0)


@pytest.mark.parametrize("method", METHODS)
def test_disable_adapter_on_a_merged_model_gives_the_base(method):
    base = tiny_llama()
    expected_base = logits(base, input_ids=IDS)
    model = get_peft_model(base, adapter_config(method)).eval()
    expected = logits(model, input_ids=IDS)
    model.merge_adapter()
    with model.disable_adapter():
        torch.testing.assert_close(logits(model, input_ids=IDS), expected_base, rtol=0, atol=1e-5)
    torch.testing.assert_close(logits(model, input_ids=IDS), expected, rtol=0, atol=1e-5)


def test_disable_adapter_on_a_lavin_merged_for_images_serves_text_rows_as_the_base(mixed_batch):
    base, _ = build_tiny_lavin(seed=0)
    expected_base = logits(base, **mixed_batch)  # an image row and a text-only row
    model = get_peft_model(base, adapter_config("mma", merge_modality="image")).eval()
    model.merge_adapter()
    with model.disable_adapter():
        torch.testing.assert_close(logits(model, **mixed_batch), expected_base, rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_dropout_in_adapter_layers_left_in_train_mode_repeats_with_the_seed(method):
    # get_peft_model leaves new adapter layers in training mode under an eval-mode model (LoRA's too): dropout acts.
    model = get_peft_model(tiny_llama(), adapter_config(method, dropout=0.5))
    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    assert not model.base_model.model.training and all(layer.training for layer in layers)

    def first_scores():
        torch.manual_seed(0)
        return model.generate(input_ids=IDS, max_new_tokens=2, do_sample=False, output_scores=True,
                              return_dict_in_generate=True).scores[0]  # fmt: skip

    first = first_scores()
    with model.disable_adapter():
        first_scores()
    torch.testing.assert_close(first_scores(), first, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["llama", "llava"])
def test_the_tuner_s_modality_token_answers_what_peft_asks_of_a_layer(kind):
    base = tiny_llama() if kind == "llama" else build_tiny_vlm("llava")
    model = get_peft_model(base, MMAConfig(), adapter_name="foobar")
    (token,) = [m for m in model.modules() if isinstance(m, MMAModalityEmbedding)]
    assert token.weight.shape == (2, token.out_features) and token.bias is None and token.in_features == 2
    assert all(
        hasattr(m, "in_features") and hasattr(m, "out_features")
        for m in model.modules()
        if isinstance(m, BaseTunerLayer)
    )

    # PEFT's clean-up check: no public dict-like attribute that held the adapter still holds it after delete_adapter.
    def holders(obj):
        return [(obj, name) for name in dir(obj) if not name.startswith("_") and "foobar" in _dict_like(obj, name)]

    before = holders(model) + [held for m in model.modules() if isinstance(m, BaseTunerLayer) for held in holders(m)]
    assert len(before) > 1
    model.delete_adapter("foobar")
    assert not [name for obj, name in before if "foobar" in getattr(obj, name)]


def _dict_like(obj, name):
    try:
        value = getattr(obj, name)
    except AttributeError:
        return {}
    return value if callable(getattr(value, "keys", None)) and hasattr(value, "__contains__") else {}


@pytest.mark.parametrize("method", METHODS)
def test_merge_and_unload_of_an_inactive_adapter_is_that_adapter(method):
    model = get_peft_model(tiny_llama(), adapter_config(method))
    torch.manual_seed(1)
    model.add_adapter("b", adapter_config(method))
    model.set_adapter("b")
    model.eval()
    expected_b = logits(model, input_ids=IDS)
    model.set_adapter("default")
    assert not torch.allclose(logits(model, input_ids=IDS), expected_b, atol=1e-3)
    merged = model.merge_and_unload(adapter_names=["b"])
    torch.testing.assert_close(logits(merged, input_ids=IDS), expected_b, rtol=0, atol=1e-5)


def test_a_lavin_merged_from_an_inactive_adapter_has_its_projector_and_routing(mixed_batch):
    model = get_peft_model(build_tiny_lavin(seed=0)[0], MMAConfig(dropout=0.0))
    model.add_adapter("b", MMAConfig(dropout=0.0))
    model.set_adapter("b")
    randomize_adapters(model, seed=2)  # b's adapters, projector and modality embedding
    model.set_adapter("default")
    randomize_adapters(model, seed=3)
    model.eval()
    image_row = {key: value[:1] for key, value in mixed_batch.items()}
    model.set_adapter("b")
    expected_b = logits(model, **image_row)
    model.set_adapter("default")
    merged = model.merge_and_unload(adapter_names=["b"], modality="image")
    torch.testing.assert_close(logits(merged, **image_row), expected_b, rtol=0, atol=1e-5)
    assert {name for m in merged.modules() if isinstance(m, MMALayer) for name in m.mma_down} == {"b"}


def test_merging_several_adapters_with_routed_vision_adapters_says_why_not():
    model = get_peft_model(build_tiny_lavin(seed=0)[0], MMAConfig())
    model.add_adapter("b", MMAConfig())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="Routed vision adapters cannot fold.*vision_adapter_type='normal'"):
            model.merge_and_unload(adapter_names=["default", "b"], modality="image")
    assert not any(m.merged for m in model.modules() if isinstance(m, MMALayer))  # nothing changed
