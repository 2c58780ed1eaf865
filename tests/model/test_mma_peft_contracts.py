"""What PEFT's common tests check for every method (and LoRA does), run for MMA on a plain LLaMA and on LaVIN."""

import warnings

import peft
import pytest
import torch
from helpers import mma_model, randomize_adapters
from packaging.version import Version
from peft import AutoPeftModel, AutoPeftModelForCausalLM, PeftModel, get_peft_model, prepare_model_for_kbit_training
from peft.functional import set_adapter
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, LlamaForCausalLM

from transformers_lavin import MMAConfig
from transformers_lavin.mma import MMALayer, MMAModalityEmbedding
from transformers_lavin.mma import routing as routing_module
from transformers_lavin.testing_utils import build_tiny_lavin, tiny_lavin_config

IDS = torch.randint(4, 200, (2, 12), generator=torch.Generator().manual_seed(0))


def tiny_llama(seed=0):
    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_lavin_config().text_config).eval()


def logits(model, **inputs):
    with torch.no_grad():
        return model(**inputs).logits


def trainable_names(model):
    return {name for name, p in model.named_parameters() if p.requires_grad}


@pytest.fixture
def saved_llama(tmp_path):
    """A saved plain LLaMA base, an MMA adapter trained (randomised) on it, and that adapter's logits."""
    base_dir, adapter_dir = tmp_path / "base", tmp_path / "adapter"
    tiny_llama().save_pretrained(base_dir)
    model = mma_model(AutoModelForCausalLM.from_pretrained(base_dir), seed=3)
    model.save_pretrained(adapter_dir)
    return base_dir, adapter_dir, logits(model, input_ids=IDS)


# ------------------------------------------------------------------------------------------------------------ dtype
@pytest.mark.parametrize("kind", ["llama", "lavin"])
def test_a_peft_model_cast_to_bf16_runs(kind, mixed_batch):
    base = tiny_llama() if kind == "llama" else build_tiny_lavin(seed=0)[0]
    inputs = {"input_ids": IDS} if kind == "llama" else dict(mixed_batch)
    model = mma_model(base, seed=1)
    reference = logits(model, **inputs)
    model = model.to(torch.bfloat16)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].bfloat16()
    actual = logits(model, **inputs)
    assert actual.dtype == torch.bfloat16
    torch.testing.assert_close(actual.float(), reference, rtol=0.05, atol=0.15)


def test_adapters_are_upcast_unless_autocast_adapter_dtype_is_false():
    base = tiny_llama().to(torch.bfloat16)
    upcast = get_peft_model(base, MMAConfig())
    assert {p.dtype for n, p in upcast.named_parameters() if "mma_" in n} == {torch.float32}
    kept = get_peft_model(tiny_llama().to(torch.bfloat16), MMAConfig(), autocast_adapter_dtype=False)
    assert {p.dtype for n, p in kept.named_parameters() if "mma_" in n} == {torch.bfloat16}
    assert torch.isfinite(logits(kept, input_ids=IDS)).all()


def test_layers_report_their_features():
    model = mma_model(tiny_llama())
    layer = next(m for m in model.modules() if isinstance(m, MMALayer))
    assert layer.in_features == layer.out_features == tiny_llama().config.hidden_size


# ------------------------------------------------------------------------------------------------ several adapters
def test_a_second_adapter_on_a_plain_llm_gets_its_own_modality_token(saved_llama):
    base_dir, adapter_dir, expected = saved_llama
    model = mma_model(AutoModelForCausalLM.from_pretrained(base_dir), seed=5)
    first = logits(model, input_ids=IDS)
    model.add_adapter("b", MMAConfig(dropout=0.0))
    token = next(m for m in model.modules() if isinstance(m, MMAModalityEmbedding))
    assert set(token.mma_modality_embedding) == {"default", "b"}
    assert torch.equal(logits(model, input_ids=IDS), first)  # adding does not activate
    model.set_adapter("b")
    assert all(("default" not in n) for n in trainable_names(model))
    assert any("modality_embedding.b" in n for n in trainable_names(model))
    assert torch.equal(logits(model, input_ids=IDS), logits(tiny_llama(), input_ids=IDS))  # b starts at identity
    model.load_adapter(adapter_dir, adapter_name="c")
    model.set_adapter("c")
    assert torch.equal(logits(model, input_ids=IDS), expected)
    model.set_adapter("default")
    assert torch.equal(logits(model, input_ids=IDS), first)


def test_two_active_adapters_are_a_clear_error():
    model = mma_model(tiny_llama())
    model.add_adapter("b", MMAConfig())
    model.base_model.set_adapter(["default", "b"])
    with pytest.raises(ValueError, match="exactly one active adapter"):
        model(input_ids=IDS)


@pytest.mark.parametrize("kind", ["llama", "lavin"])
def test_loading_for_inference_leaves_nothing_trainable(kind, tmp_path):
    base = tiny_llama() if kind == "llama" else build_tiny_lavin(seed=0)[0]
    mma_model(base, seed=2).save_pretrained(tmp_path)
    fresh = tiny_llama() if kind == "llama" else build_tiny_lavin(seed=0)[0]
    loaded = PeftModel.from_pretrained(fresh, tmp_path, is_trainable=False)
    assert trainable_names(loaded) == set()
    trainable = PeftModel.from_pretrained(tiny_llama() if kind == "llama" else build_tiny_lavin(seed=0)[0], tmp_path)
    assert trainable_names(trainable) == set()  # PEFT's default is is_trainable=False too
    retrain = PeftModel.from_pretrained(
        tiny_llama() if kind == "llama" else build_tiny_lavin(seed=0)[0], tmp_path, is_trainable=True
    )
    assert trainable_names(retrain) and all("mma_" in n or "modules_to_save" in n for n in trainable_names(retrain))


def test_deleting_adapters_removes_everything_and_the_last_leaves_the_base():
    model = mma_model(tiny_llama(), seed=4)
    model.add_adapter("b", MMAConfig())
    model.delete_adapter("b")
    layer = next(m for m in model.modules() if isinstance(m, MMALayer))
    for attribute in (*MMALayer.adapter_layer_names, *MMALayer.other_param_names):
        assert "b" not in getattr(layer, attribute)
    token = next(m for m in model.modules() if isinstance(m, MMAModalityEmbedding))
    assert "b" not in token.mma_modality_embedding
    assert not any(".b." in name for name, _ in model.named_parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.delete_adapter("default")
    # PeftModel itself needs an active config (as with LoRA); the adapted model is the base again.
    assert torch.equal(logits(model.base_model.model, input_ids=IDS), logits(tiny_llama(), input_ids=IDS))


def test_disable_adapter_gives_the_base(mixed_batch):
    base, _ = build_tiny_lavin(seed=0)
    expected = logits(base, **mixed_batch)
    model = mma_model(base, seed=1)
    with model.disable_adapter():
        assert torch.equal(logits(model, **mixed_batch), expected)
    assert not torch.allclose(logits(model, **mixed_batch), expected)


# ---------------------------------------------------------------------------------------------------------- merging
def test_merge_and_unload_on_a_plain_llm_needs_no_modality_and_keeps_peft_argument_order():
    model = mma_model(tiny_llama(), seed=1)
    expected = logits(model, input_ids=IDS)
    merged = model.merge_and_unload(True)  # progressbar, positionally, as PEFT's signature has it
    assert type(merged) is LlamaForCausalLM
    torch.testing.assert_close(logits(merged, input_ids=IDS), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("adapter_type", ["attn", "block"])
def test_merge_adapter_is_exact_and_unmerge_restores_the_weights(adapter_type, mixed_batch):
    base, _ = build_tiny_lavin(seed=0)
    weights_before = {n: p.detach().clone() for n, p in base.named_parameters()}
    model = mma_model(base, seed=1, adapter_type=adapter_type)
    image_rows = {k: v[:1] for k, v in mixed_batch.items()}
    text_rows = {k: v[1:] for k, v in mixed_batch.items() if k != "pixel_values"}
    expected_image, expected_text = logits(model, **image_rows), logits(model, **text_rows)

    model.merge_adapter(modality="image")
    assert any(m.merged for m in model.modules() if isinstance(m, MMALayer))
    torch.testing.assert_close(logits(model, **image_rows), expected_image, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="merged for 'image'.*unmerge_adapter"):
        logits(model, **text_rows)
    model.unmerge_adapter()
    torch.testing.assert_close(logits(model, **text_rows), expected_text, rtol=0, atol=1e-5)
    restored = {
        n.replace(".base_layer", "").replace(".original_module", ""): p
        for n, p in base.named_parameters()
        if "mma_" not in n and "modules_to_save" not in n
    }
    for name, before in weights_before.items():
        torch.testing.assert_close(restored[name], before, rtol=0, atol=1e-6)
        assert (restored[name].shape == before.shape) and restored[name].dtype == before.dtype
    llm_queries = [m for n, m in base.named_modules() if "language_model" in n and n.endswith("q_proj")]
    assert llm_queries and all(m.bias is None for m in llm_queries)  # biases the merge created are gone again

    model.peft_config["default"].merge_modality = "text"  # the modality may come from the config
    model.merge_adapter()
    torch.testing.assert_close(logits(model, **text_rows), expected_text, rtol=0, atol=1e-5)


def test_safe_merge_refuses_a_broken_adapter_with_peft_s_message(mixed_batch):
    model = mma_model(build_tiny_lavin(seed=0)[0], seed=1)
    layer = next(m for m in model.modules() if isinstance(m, MMALayer) and m.routing_key is not None)
    with torch.no_grad():
        layer.mma_down["default"].weight[0, 0] = float("nan")
    with pytest.raises(
        ValueError, match="NaNs detected in the merged weights. The adapter default seems to be broken"
    ):
        model.merge_adapter(safe_merge=True, modality="image")


# ------------------------------------------------------------------------------------------- k-bit recipe and loading
def test_peft_s_kbit_recipe_with_its_reentrant_default_trains_with_router_gradients(mixed_batch):
    base, _ = build_tiny_lavin(seed=0)
    base.train()
    base = prepare_model_for_kbit_training(base)  # enables reentrant checkpointing by default
    model = get_peft_model(base, MMAConfig(dropout=0.0))
    randomize_adapters(model, seed=1)
    model.train()
    loss = model(**mixed_batch, labels=mixed_batch["input_ids"]).loss
    loss.backward()
    routers = [p for n, p in model.named_parameters() if "mma_router" in n and ".layers." in n and "language" in n]
    assert routers and all(p.grad is not None and p.grad.abs().sum() > 0 for p in routers)
    reference = get_peft_model(build_tiny_lavin(seed=0)[0].train(), MMAConfig(dropout=0.0))
    randomize_adapters(reference, seed=1)
    reference.train()
    reference(**mixed_batch, labels=mixed_batch["input_ids"]).loss.backward()
    ours = dict(model.named_parameters())
    for name, param in reference.named_parameters():
        if param.requires_grad and "mma_router" in name:
            torch.testing.assert_close(ours[name].grad, param.grad, rtol=1e-4, atol=1e-6)


def test_transformers_adapter_api_and_auto_peft_classes_load_mma(saved_llama):
    base_dir, adapter_dir, expected = saved_llama
    through_transformers = AutoModelForCausalLM.from_pretrained(base_dir)
    through_transformers.load_adapter(adapter_dir)
    assert torch.equal(logits(through_transformers, input_ids=IDS), expected)
    assert torch.equal(logits(AutoModelForCausalLM.from_pretrained(adapter_dir), input_ids=IDS), expected)
    assert torch.equal(logits(AutoPeftModelForCausalLM.from_pretrained(adapter_dir), input_ids=IDS), expected)
    assert torch.equal(logits(AutoPeftModel.from_pretrained(adapter_dir), input_ids=IDS), expected)


def test_lavin_adapter_loads_through_transformers_from_its_directory(tmp_path, mixed_batch):
    base, _ = build_tiny_lavin(seed=0)
    base.save_pretrained(tmp_path / "base")
    model = mma_model(AutoModelForImageTextToText.from_pretrained(tmp_path / "base"), seed=2)
    model.save_pretrained(tmp_path / "adapter")
    expected = logits(model, **mixed_batch)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "adapter").eval()
    assert torch.equal(logits(loaded, **mixed_batch), expected)


def test_transformers_adapter_api_with_this_peft_loads_and_switches_through_peft_functional(tmp_path, mixed_batch):
    """The route docs/mma.md gives while transformers' own set_adapter/active_adapters need PEFT >= 0.22."""
    base, _ = build_tiny_lavin(seed=0)
    base.save_pretrained(tmp_path / "base")
    expected = {}
    for name, seed in (("science", 2), ("chat", 3)):
        model = mma_model(AutoModelForImageTextToText.from_pretrained(tmp_path / "base"), seed=seed)
        expected[name] = logits(model, **mixed_batch)
        model.save_pretrained(tmp_path / name)

    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "base").eval()
    model.load_adapter(tmp_path / "science", adapter_name="science")
    assert torch.equal(logits(model, **mixed_batch), expected["science"])
    model.load_adapter(tmp_path / "chat", adapter_name="chat")
    for name in ("chat", "science", "chat"):
        set_adapter(model, name, inference_mode=True)
        assert torch.equal(logits(model, **mixed_batch), expected[name])
        assert {tuple(m.active_adapters) for m in model.modules() if isinstance(m, BaseTunerLayer)} == {(name,)}
    assert not any(p.requires_grad for p in model.parameters())

    if Version(peft.__version__) < Version("0.22"):  # what the docs say needs PEFT >= 0.22
        for call in (lambda: model.set_adapter("science"), model.active_adapters, model.disable_adapters):
            with pytest.raises(ValueError, match="0.22"):
                call()


@pytest.mark.parametrize("auto_class", [AutoPeftModel, AutoPeftModelForCausalLM])
def test_auto_peft_model_loads_a_lavin_adapter_saved_with_its_processor(auto_class, tmp_path, mixed_batch):
    base, processor = build_tiny_lavin(seed=0)
    base.save_pretrained(tmp_path / "base")
    processor.save_pretrained(tmp_path / "base")
    model = mma_model(AutoModelForImageTextToText.from_pretrained(tmp_path / "base"), seed=2)
    expected = logits(model, **mixed_batch)
    model.save_pretrained(tmp_path / "adapter")
    processor.save_pretrained(tmp_path / "adapter")  # as a training script leaves it: tokenizer_config.json beside
    # The tokenizer holds the image token, one past the LLM's vocabulary: PEFT resizes to len(tokenizer).
    assert len(processor.tokenizer) == base.config.text_config.vocab_size + 1

    # No import_allowlist: the adapter names LaVIN's base by transformers' Auto class, which PEFT may import.
    loaded = auto_class.from_pretrained(tmp_path / "adapter").eval()
    assert type(loaded.get_base_model()).__name__ == "LavinForConditionalGeneration"
    assert loaded.get_base_model().get_input_embeddings().num_embeddings == base.config.text_config.vocab_size
    actual = logits(loaded, **mixed_batch)
    assert actual.shape == expected.shape
    assert torch.equal(actual, expected)


def test_lavin_keeps_its_embeddings_for_its_own_tokenizer_and_resizes_for_new_tokens():
    model, processor = build_tiny_lavin(seed=0)
    vocab_size = model.config.text_config.vocab_size
    before = model.get_input_embeddings().weight.clone()
    model.resize_token_embeddings(len(processor.tokenizer))  # the image token needs no row
    assert torch.equal(model.get_input_embeddings().weight, before)
    model.resize_token_embeddings(vocab_size + 3)  # real new tokens do
    assert model.get_input_embeddings().num_embeddings == vocab_size + 3
    assert model.get_output_embeddings().out_features == vocab_size + 3


# -------------------------------------------------------------------------------------------------- routing cost
def test_the_routing_table_is_computed_once_per_parameter_state(monkeypatch, mixed_batch):
    passes = []
    real_pass = routing_module.run_routing_pass
    monkeypatch.setattr(routing_module, "run_routing_pass", lambda *a, **k: passes.append(1) or real_pass(*a, **k))
    model = mma_model(build_tiny_lavin(seed=0)[0], seed=1)
    first = logits(model, **mixed_batch)
    logits(model, **mixed_batch)
    model.generate(**mixed_batch, max_new_tokens=3, do_sample=False)
    assert len(passes) == 1  # two forwards and a whole generate reuse one table

    with torch.no_grad():  # a parameter change (an optimizer step, a load) gives a new table, exactly
        layer = next(m for m in model.modules() if isinstance(m, MMALayer) and m.routing_key is not None)
        layer.mma_router["default"].weight.mul_(3.0)
    changed = logits(model, **mixed_batch)
    assert len(passes) == 2 and not torch.allclose(changed, first)
    with torch.no_grad():
        layer.mma_router["default"].weight.div_(3.0)
    torch.testing.assert_close(logits(model, **mixed_batch), first, rtol=0, atol=1e-6)

    model.add_adapter("b", MMAConfig())
    model.set_adapter("b")
    logits(model, **mixed_batch)
    assert len(passes) == 4

    model.train()  # training computes it at every forward, with gradients
    count = len(passes)
    model(**mixed_batch)
    model(**mixed_batch)
    assert len(passes) == count + 2


def test_the_routing_cache_follows_replaced_and_cast_parameters(mixed_batch):
    model = mma_model(build_tiny_lavin(seed=0)[0], seed=1)
    router = routing_module.find_router(model)

    def uncached(**inputs):
        router._cached = None  # the independent computation: a fresh routing pass
        return logits(model, **inputs)

    first = logits(model, **mixed_batch)
    # A frozen weight replaced by a new Parameter (no in-place change, so no version bump on the old one).
    attention = next(m for m in model.modules() if isinstance(m, MMALayer) and m.routing_key is not None)
    projection = attention.get_base_layer().q_proj
    projection.weight = nn.Parameter(projection.weight.detach() * 2.0, requires_grad=False)
    changed = logits(model, **mixed_batch)
    assert not torch.allclose(changed, first)
    assert torch.equal(changed, uncached(**mixed_batch))

    # A cast and back: each state gets its own table.
    model.to(torch.float64)
    assert torch.equal(logits(model, **mixed_batch), uncached(**mixed_batch))
    model.to(torch.float32)
    assert torch.equal(logits(model, **mixed_batch), uncached(**mixed_batch))
