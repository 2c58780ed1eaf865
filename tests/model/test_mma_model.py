import json

import pytest
import torch
from conftest import random_image
from helpers import llm_layers, mma_model, randomize_adapters
from peft import PeftModel, get_peft_model
from peft.utils.peft_types import PeftType
from safetensors.torch import load_file

import transformers_lavin  # noqa: F401
from transformers_lavin import LavinConfig, LavinForConditionalGeneration, MMAConfig, compute_routing_table
from transformers_lavin.mma import MMALayer, add_mma_peft_type, register_mma_with_peft
from transformers_lavin.testing_utils import build_tiny_lavin


@pytest.mark.parametrize(
    "text_shape, expected",
    [
        ({}, 3_781_296),  # LLaMA-7B
        (
            {"hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 40, "num_attention_heads": 40},
            5_390_080,  # LLaMA-13B
        ),
    ],
)
def test_trainable_parameters_match_the_paper_exactly(text_shape, expected):
    config = LavinConfig(
        text_config={"model_type": "llama", "vocab_size": 32000, **text_shape} if text_shape else None
    )
    with torch.device("meta"):
        base = LavinForConditionalGeneration(config)
    model = get_peft_model(base, MMAConfig())
    trainable, _ = model.get_nb_trainable_parameters()
    assert trainable == expected


def test_peft_type_shim_is_idempotent():
    first = add_mma_peft_type()
    assert add_mma_peft_type() is first is PeftType.MMA is PeftType("MMA")
    register_mma_with_peft()  # a second registration is a no-op, not an error
    assert list(PeftType).count(PeftType.MMA) == 1


def test_outputs_equal_the_base_model_at_initialisation(tiny, mixed_batch):
    base, _ = tiny
    with torch.no_grad():
        expected = base(**mixed_batch).logits
    model = mma_model(base, randomize=False)
    with torch.no_grad():
        actual = model(**mixed_batch).logits
    assert torch.equal(expected, actual)


def test_adapters_change_outputs_and_save_reload_exactly(tiny, mixed_batch, tmp_path):
    base, _ = tiny
    with torch.no_grad():
        base_logits = base(**mixed_batch).logits.clone()
    model = mma_model(base)
    with torch.no_grad():
        logits = model(**mixed_batch).logits
    assert not torch.allclose(logits[0], base_logits[0]) and not torch.allclose(logits[1], base_logits[1])

    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "MMA"
    saved = load_file(tmp_path / "adapter_model.safetensors")
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert len(saved) == len(trainable)
    assert sum(t.numel() for t in saved.values()) == sum(p.numel() for p in trainable.values())

    fresh, _ = build_tiny_lavin(seed=0)
    reloaded = PeftModel.from_pretrained(fresh, tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(**mixed_batch).logits, logits)


def test_routing_equals_the_reference_modality_token_computation(tiny, mixed_batch):
    """Run the reference's way: modality token at position 0, hidden from every other token, routers read it."""
    base, _ = tiny
    model = mma_model(base, seed=1)
    lavin = model.base_model.model.model
    table = compute_routing_table(model)
    used = {}

    def capture(module, args, kwargs):
        routing = kwargs.get("mma_routing")
        if isinstance(routing, dict):
            used[module.routing_key] = routing[module.routing_key].clone()

    handles = [layer.register_forward_pre_hook(capture, with_kwargs=True) for layer in llm_layers(model)]
    for row in (0, 1):  # the image row and the text-only row, each alone
        inputs = {k: v[row : row + 1] for k, v in mixed_batch.items() if k != "pixel_values"}
        if row == 0:
            inputs["pixel_values"] = mixed_batch["pixel_values"]
        keep = inputs["attention_mask"][0].bool()
        inputs = {k: v[:, keep] if k in ("input_ids", "attention_mask") else v for k, v in inputs.items()}
        modality = int(lavin.get_modality_ids(inputs["input_ids"])[0])
        with torch.no_grad():
            ours = model(**inputs).logits
            # The reference's sequence: [modality token] + tokens, the token masked from all later positions.
            embeds = lavin.get_input_embeddings()(inputs["input_ids"].masked_fill(inputs["input_ids"] >= 259, 0))
            if row == 0:
                image_mask = inputs["input_ids"] == model.config.image_token_id
                embeds[image_mask] = lavin.get_image_features(inputs["pixel_values"]).pooler_output[0]
            token = lavin.modality_embedding(torch.tensor([[modality]]))
            sequence = torch.cat([token, embeds], dim=1)
            length = sequence.shape[1]
            mask = torch.full((length, length), float("-inf")).triu(1)
            mask[1:, 0] = float("-inf")
            router_inputs = {}
            hooks = [
                layer.mma_router["default"].register_forward_hook(
                    lambda m, a, out, key=layer.routing_key, store=router_inputs: store.__setitem__(key, out)
                )
                for layer in llm_layers(model)
            ]
            hidden = lavin.language_model(
                inputs_embeds=sequence,
                attention_mask=mask[None, None],
                position_ids=torch.arange(length)[None],
                mma_routing=None,  # no routing given: each adapter routes on position 0, as the reference
            ).last_hidden_state
            for hook in hooks:
                hook.remove()
            reference = model.base_model.model.lm_head(hidden)[:, 1:]
        torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
        for index, layer in enumerate(llm_layers(model)):
            expected = torch.softmax(router_inputs[layer.routing_key] / 10.0, dim=-1)[0]
            torch.testing.assert_close(used[layer.routing_key][0], expected, rtol=0, atol=1e-6)
            torch.testing.assert_close(table[index, modality], expected, rtol=0, atol=1e-6)
    for handle in handles:
        handle.remove()
    assert not torch.allclose(table[:, 0], table[:, 1])  # the two modalities route differently


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("adapter_type", ["attn", "block"])
def test_gradient_checkpointing_gives_equal_outputs_and_gradients(attn_implementation, adapter_type, mixed_batch):
    results = []
    for checkpointing in (False, True):
        base, _ = build_tiny_lavin(seed=0)
        base.set_attn_implementation(attn_implementation)
        model = mma_model(base, seed=2, adapter_type=adapter_type, dropout=0.1)
        if checkpointing:
            model.activation_checkpointing_enable()
        model.train()
        torch.manual_seed(5)
        outputs = model(
            **mixed_batch, labels=mixed_batch["input_ids"].masked_fill(mixed_batch["attention_mask"] == 0, -100)
        )
        outputs.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((outputs.logits.detach(), grads))
    (logits_a, grads_a), (logits_b, grads_b) = results
    torch.testing.assert_close(logits_a, logits_b, rtol=0, atol=1e-6)
    assert grads_a.keys() == grads_b.keys()
    router_grads = [n for n in grads_a if "language_model" in n and "mma_router" in n]
    assert router_grads and all(grads_a[n].abs().sum() > 0 for n in router_grads)
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-5, atol=1e-6, msg=name)


def test_eager_and_sdpa_agree(mixed_batch):
    outputs = []
    for implementation in ("eager", "sdpa"):
        base, _ = build_tiny_lavin(seed=0)
        base.set_attn_implementation(implementation)
        with torch.no_grad():
            outputs.append(mma_model(base, seed=3)(**mixed_batch).logits)
    real = mixed_batch["attention_mask"].bool()  # padding positions carry no meaning
    torch.testing.assert_close(outputs[0][real], outputs[1][real], rtol=0, atol=1e-5)


def test_reentrant_checkpointing_is_refused_with_a_clear_error(tiny, mixed_batch):
    base, _ = tiny
    model = mma_model(base, seed=2)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
    model.train()
    with pytest.raises(RuntimeError, match="use_reentrant': False"):
        model(**mixed_batch)


def test_generation_routes_once_and_cache_matches_no_cache(tiny, mixed_batch):
    base, _ = tiny
    model = mma_model(base, seed=4)
    calls = []
    lavin = model.base_model.model.model
    hook = lavin.modality_embedding.register_forward_hook(lambda *args: calls.append(1))
    with_cache = model.generate(**mixed_batch, max_new_tokens=6, do_sample=False)
    assert len(calls) == 1  # one routing pass at prefill, none per decoding step
    hook.remove()
    without_cache = model.generate(**mixed_batch, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(with_cache, without_cache)
    beams = model.generate(**mixed_batch, max_new_tokens=6, num_beams=3, do_sample=False)
    assert beams.shape == with_cache.shape


def test_generation_in_a_batch_matches_each_row_alone(tiny, mixed_batch):
    base, processor = tiny
    model = mma_model(base, seed=4)
    batch_out = model.generate(**mixed_batch, max_new_tokens=6, do_sample=False)
    alone = processor(images=[random_image(1)], text=["What is in the picture?"], return_tensors="pt")
    alone_out = model.generate(**alone, max_new_tokens=6, do_sample=False)
    assert torch.equal(batch_out[0, -6:], alone_out[0, -6:])


def test_disabled_adapters_give_the_base_model(tiny, mixed_batch):
    base, _ = tiny
    with torch.no_grad():
        expected = base(**mixed_batch).logits.clone()
    model = mma_model(base, seed=6)
    with torch.no_grad(), model.disable_adapter():
        assert torch.equal(model(**mixed_batch).logits, expected)


def test_unload_removes_adapters_and_keeps_the_trained_lavin_parts(tiny, mixed_batch):
    base, _ = tiny
    model = mma_model(base, seed=6)
    restored = model.unload()
    assert not any(isinstance(m, MMALayer) for m in restored.modules())
    # As for every PEFT method, unload keeps the trained modules_to_save (here the projector) in place.
    expected_model, _ = build_tiny_lavin(seed=0)
    expected_model.model.multi_modal_projector.load_state_dict(restored.model.multi_modal_projector.state_dict())
    with torch.no_grad():
        assert torch.equal(restored(**mixed_batch).logits, expected_model(**mixed_batch).logits)


def test_only_adapters_and_lavin_parts_train(tiny):
    base, _ = tiny
    model = get_peft_model(base, MMAConfig())
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("mma_" in n or "multi_modal_projector" in n or "modality_embedding" in n for n in names), (
        names
    )
    assert any("vision_tower" in n for n in names) and any("language_model" in n for n in names)


def test_randomize_helper_touches_only_trainable_tensors(tiny):
    base, _ = tiny
    frozen_before = {n: p.clone() for n, p in base.named_parameters()}
    model = get_peft_model(base, MMAConfig())
    randomize_adapters(model)
    for name, param in model.base_model.model.named_parameters():
        if not param.requires_grad and name in frozen_before:
            assert torch.equal(param, frozen_before[name]), name
