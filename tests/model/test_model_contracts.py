"""Contracts that transformers' common model tests check for every model, run on a tiny LaVIN."""

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList, StaticCache

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
