"""Contracts that transformers' common model tests check for every model, run on a tiny LaVIN."""

import inspect

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForImageTextToText,
    GenerationMixin,
    LlavaForConditionalGeneration,
    LogitsProcessor,
    LogitsProcessorList,
    StaticCache,
)

from transformers_lavin import LavinForConditionalGeneration, LavinModel
from transformers_lavin.testing_utils import build_byte_tokenizer, build_tiny_lavin, tiny_lavin_config


@pytest.fixture
def in_vocab():
    """A tiny LaVIN whose image token id lies inside the LLM vocabulary, as in LLaVA."""
    tokenizer = build_byte_tokenizer()
    config = tiny_lavin_config(tokenizer=tokenizer, vocab_size=len(tokenizer))
    assert config.image_token_id < config.text_config.vocab_size
    return build_tiny_lavin(seed=0, config=config, tokenizer=tokenizer)


def test_return_dict_false_returns_tuples(tiny, mixed_batch):
    model, _ = tiny
    with torch.no_grad():
        expected = model(**mixed_batch).logits
        as_tuple = model(**mixed_batch, return_dict=False, use_cache=False)
        model.config.return_dict = False
        from_config = model(**mixed_batch, use_cache=False)
        base_tuple = model.model(**mixed_batch, use_cache=False)
    assert isinstance(as_tuple, tuple) and isinstance(from_config, tuple) and isinstance(base_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], expected, rtol=0, atol=0)
    torch.testing.assert_close(from_config[0], expected, rtol=0, atol=0)
    assert base_tuple[0].shape[:2] == mixed_batch["input_ids"].shape


def test_get_image_features_follows_the_v5_convention(tiny, mixed_batch):
    model, _ = tiny
    pixel_values = mixed_batch["pixel_values"]
    with torch.no_grad():
        outputs = model.get_image_features(pixel_values)
        with_states = model.get_image_features(pixel_values, output_hidden_states=True)
        as_tuple = model.get_image_features(pixel_values, return_dict=False)
    assert outputs.hidden_states is None
    assert len(with_states.hidden_states) == model.config.vision_config.num_hidden_layers + 1
    assert outputs.pooler_output.shape == (1, model.config.num_image_tokens, model.config.text_config.hidden_size)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[1], outputs.pooler_output, rtol=0, atol=0)


def test_get_image_features_follows_config_output_hidden_states(tiny, mixed_batch):
    model, _ = tiny
    pixel_values = mixed_batch["pixel_values"]
    with torch.no_grad():
        requested = model.get_image_features(pixel_values, output_hidden_states=True)
        model.config.output_hidden_states = True
        from_config = model.get_image_features(pixel_values)
        overridden = model.get_image_features(pixel_values, output_hidden_states=False)
        reference = model.model.vision_tower(pixel_values, output_hidden_states=True).hidden_states
    assert len(from_config.hidden_states) == len(reference) == model.config.vision_config.num_hidden_layers + 1
    for state, requested_state, expected in zip(
        from_config.hidden_states, requested.hidden_states, reference, strict=True
    ):
        torch.testing.assert_close(state, expected, rtol=0, atol=0)
        torch.testing.assert_close(requested_state, expected, rtol=0, atol=0)
    assert overridden.hidden_states is None
    torch.testing.assert_close(from_config.pooler_output, overridden.pooler_output, rtol=0, atol=0)


def test_generation_mixin_is_a_direct_base():
    assert GenerationMixin in LavinForConditionalGeneration.__bases__
    assert LavinForConditionalGeneration.can_generate() and not LavinModel.can_generate()


def _typed_kwargs(method) -> set[str]:
    """The keyword names `**kwargs: Unpack[...]` declares, read as transformers' testers read them."""
    return set(inspect.signature(method).parameters["kwargs"].annotation.__args__[0].__annotations__)


@pytest.mark.parametrize("method", ["forward", "get_image_features"])
def test_typed_kwargs_are_visible_to_transformers_as_llavas_are(method):
    # A string annotation (`from __future__ import annotations`) has no `__args__`: transformers would then think
    # the model cannot return attentions and skip the tests that compare them.
    expected = _typed_kwargs(getattr(LlavaForConditionalGeneration, method))
    assert "output_attentions" in expected
    assert _typed_kwargs(getattr(LavinForConditionalGeneration, method)) == expected
    assert _typed_kwargs(getattr(LavinModel, method)) == expected


def test_weights_missing_from_a_checkpoint_get_clips_own_initialisation(tmp_path):
    """CLIP initialises its attention and MLP projections with widths of its own, not the generic std 0.02."""
    model, _ = build_tiny_lavin(seed=0, vision_hidden_size=64, vision_layers=4)
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    missing = [key for key in weights if ".encoder.layers." in key and "vision_tower" in key]
    save_file({k: v for k, v in weights.items() if k not in missing}, tmp_path / "model.safetensors")
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path)

    vision = model.config.vision_config
    width, layers = vision.hidden_size, vision.num_hidden_layers
    in_proj, out_proj = width**-0.5 * (2 * layers) ** -0.5, width**-0.5  # CLIP's formulas, factor 1
    expected_std = {"q_proj": in_proj, "k_proj": in_proj, "v_proj": in_proj, "out_proj": out_proj}
    expected_std |= {"fc1": (2 * width) ** -0.5, "fc2": in_proj}
    state = reloaded.state_dict()
    checked = 0
    for key in missing:
        kind = key.split(".")[-2]
        if key.endswith(".weight") and kind in expected_std:
            assert state[key].std().item() == pytest.approx(expected_std[kind], rel=0.15), key
            checked += 1
        elif key.endswith(".bias") and kind in expected_std:
            assert torch.count_nonzero(state[key]) == 0, key
    assert checked == 6 * layers
    # Loaded weights are kept as they were.
    for key, value in weights.items():
        if key not in missing:
            torch.testing.assert_close(state[key], value, rtol=0, atol=0)


def test_generate_from_inputs_embeds_for_text_only_input(tiny):
    model, processor = tiny
    inputs = processor(text=["A text-only question?"], return_tensors="pt")
    with torch.no_grad():
        from_ids = model.generate(**inputs, max_new_tokens=5, do_sample=False)
        embeds = model.get_input_embeddings()(inputs["input_ids"])
        from_embeds = model.generate(
            inputs_embeds=embeds, attention_mask=inputs["attention_mask"], max_new_tokens=5, do_sample=False
        )
    assert from_embeds.tolist() == from_ids[:, inputs["input_ids"].shape[1] :].tolist()


def test_inputs_embeds_with_pixel_values_needs_an_in_vocabulary_image_token(tiny, mixed_batch):
    model, _ = tiny
    embeds = model.get_input_embeddings()(mixed_batch["input_ids"].clamp(max=model.config.text_config.vocab_size - 1))
    with pytest.raises(ValueError, match="outside the LLM vocabulary.*get_image_features"):
        model(inputs_embeds=embeds, pixel_values=mixed_batch["pixel_values"])


def test_inputs_embeds_with_pixel_values_equal_input_ids(in_vocab, mixed_batch):
    model, _ = in_vocab
    with torch.no_grad():
        expected = model(**mixed_batch).logits
        embeds = model.get_input_embeddings()(mixed_batch["input_ids"])
        actual = model(
            inputs_embeds=embeds,
            attention_mask=mixed_batch["attention_mask"],
            pixel_values=mixed_batch["pixel_values"],
        ).logits
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_inputs_embeds_with_visual_tokens_in_place_equal_input_ids(tiny, mixed_batch):
    model, _ = tiny
    input_ids = mixed_batch["input_ids"]
    image_mask = input_ids == model.config.image_token_id
    with torch.no_grad():
        expected = model(**mixed_batch).logits
        embeds = model.get_input_embeddings()(input_ids.masked_fill(image_mask, 0))
        embeds[image_mask] = model.get_image_features(mixed_batch["pixel_values"]).pooler_output.flatten(0, 1)
        actual = model(
            inputs_embeds=embeds,
            attention_mask=mixed_batch["attention_mask"],
            modality_ids=image_mask.any(-1).long(),
        ).logits
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_assisted_decoding_with_itself_as_assistant_equals_greedy(tiny, mixed_batch):
    model, _ = tiny
    row = {key: value[:1] for key, value in mixed_batch.items()}  # assisted decoding takes one row
    keep = row["attention_mask"][0].bool()
    row["input_ids"], row["attention_mask"] = row["input_ids"][:, keep], row["attention_mask"][:, keep]
    with torch.no_grad():
        greedy = model.generate(**row, max_new_tokens=8, do_sample=False)
        assisted = model.generate(**row, max_new_tokens=8, do_sample=False, assistant_model=model)
    assert assisted.tolist() == greedy.tolist()


class _ForceTokenAt(LogitsProcessor):
    def __init__(self, token_id: int, position: int):
        self.token_id, self.position = token_id, position

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] == self.position:
            scores = torch.full_like(scores, float("-inf"))
            scores[:, self.token_id] = 0.0
        return scores


def test_an_emitted_in_vocabulary_image_token_never_crashes_generation(in_vocab, mixed_batch):
    model, _ = in_vocab
    prompt_length = mixed_batch["input_ids"].shape[1]
    force = LogitsProcessorList([_ForceTokenAt(model.config.image_token_id, prompt_length + 1)])
    with torch.no_grad():
        output = model.generate(**mixed_batch, max_new_tokens=5, do_sample=False, logits_processor=force)
    assert output.shape[1] == prompt_length + 5
    assert (output[:, prompt_length + 1] == model.config.image_token_id).all()


def test_parallelism_and_compile_declarations(tiny):
    model, _ = tiny
    assert model._tp_plan.get("lm_head") == "colwise_gather_output"
    assert type(model)._can_compile_fullgraph is True


def test_compiled_decode_step_with_a_static_cache_equals_eager(tiny, mixed_batch):
    model, _ = tiny
    batch, length = mixed_batch["input_ids"].shape
    cache = StaticCache(config=model.config, max_cache_len=length + 4)
    with torch.no_grad():
        prefill = model(**mixed_batch, cache=cache)
    next_token = prefill.logits[:, -1:].argmax(-1)
    attention_mask = torch.cat([mixed_batch["attention_mask"], torch.ones(batch, 1, dtype=torch.long)], dim=1)
    position_ids = attention_mask.sum(-1, keepdim=True) - 1
    step = {"input_ids": next_token, "attention_mask": attention_mask, "position_ids": position_ids}
    modality_ids = model.model.get_modality_ids(mixed_batch["input_ids"])
    eager_cache = StaticCache(config=model.config, max_cache_len=length + 4)
    with torch.no_grad():
        model(**mixed_batch, cache=eager_cache)
        eager = model(**step, cache=eager_cache, modality_ids=modality_ids).logits
        torch._dynamo.reset()
        compiled_forward = torch.compile(model.forward, fullgraph=True, backend="eager")
        compiled = compiled_forward(**step, cache=cache, modality_ids=modality_ids).logits
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


def test_torch_export_of_the_model_equals_eager(tiny, mixed_batch):
    model, _ = tiny
    inputs = dict(mixed_batch)
    with torch.no_grad():
        expected = model(**inputs, use_cache=False).logits
        exported = torch.export.export(model, args=(), kwargs={**inputs, "use_cache": False}, strict=False)
        actual = exported.module()(**inputs, use_cache=False).logits
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_an_emitted_image_token_keeps_a_text_row_on_the_text_path(in_vocab):
    from helpers import llm_layers, mma_model

    from transformers_lavin import compute_routing_table

    base, processor = in_vocab
    model = mma_model(base, seed=1)
    inputs = processor(text=["A text-only question?"], return_tensors="pt")
    layer = llm_layers(model)[0]
    used = []

    def capture(module, args, kwargs):
        if isinstance(kwargs["mma_routing"], dict):  # the rows' weights, not the routing pass
            used.append(kwargs["mma_routing"][module.routing_key].clone())

    handle = layer.register_forward_pre_hook(capture, with_kwargs=True)
    prompt_length = inputs["input_ids"].shape[1]
    force = LogitsProcessorList([_ForceTokenAt(base.config.image_token_id, prompt_length + 1)])
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=4, do_sample=False, logits_processor=force)
    handle.remove()
    assert output[0, prompt_length + 1] == base.config.image_token_id
    text_path = compute_routing_table(model)[0, 0]
    assert len(used) == 4 and all(torch.equal(weights[0], text_path) for weights in used)
