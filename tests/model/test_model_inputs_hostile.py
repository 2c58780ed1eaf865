"""Hostile model inputs and processor calls: each is refused with one clear ValueError that says what was wrong and
what to do, never a traceback from deep inside torch or the tokenizer, while the inputs LavinProcessor makes (and
accelerate's offloading) still run."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from accelerate import cpu_offload

from transformers_lavin.testing_utils import build_tiny_lavin


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_pixel_values_that_are_not_floating_point_are_refused(tiny, mixed_batch, dtype):
    model, _ = tiny
    raw = (mixed_batch["pixel_values"] * 60 + 128).clamp(0, 255).to(dtype)
    with pytest.raises(ValueError, match=rf"got dtype {dtype}.*Use LavinProcessor .* to make pixel_values"):
        model(**dict(mixed_batch, pixel_values=raw))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_pixel_values_with_nan_or_inf_are_refused_in_forward_and_generate(tiny, mixed_batch, value):
    model, _ = tiny
    pixel_values = mixed_batch["pixel_values"].clone()
    pixel_values[0, 1, 5, 7] = value  # one value of one image is enough
    with pytest.raises(ValueError, match="pixel_values hold NaN or inf. Use LavinProcessor"):
        model(**dict(mixed_batch, pixel_values=pixel_values))
    with pytest.raises(ValueError, match="pixel_values hold NaN or inf"):
        model.generate(**dict(mixed_batch, pixel_values=pixel_values), max_new_tokens=2)


def test_half_precision_pixel_values_are_accepted(tiny, mixed_batch):
    model, _ = tiny
    with torch.no_grad():
        expected = model(**mixed_batch).logits
        half = model(**dict(mixed_batch, pixel_values=mixed_batch["pixel_values"].to(torch.bfloat16))).logits
    assert torch.allclose(expected, half, atol=0.1)


@pytest.mark.parametrize("cut", [slice(None, -2), slice(None, None)])
def test_an_attention_mask_of_another_shape_is_refused(tiny, mixed_batch, cut):
    model, _ = tiny
    mask = mixed_batch["attention_mask"]
    wrong = mask[:, cut] if cut.stop else torch.cat([mask, mask[:, :3]], dim=1)
    inputs = dict(mixed_batch, attention_mask=wrong)
    shape = rf"\({wrong.shape[0]}, {wrong.shape[1]}\)"
    with pytest.raises(ValueError, match=rf"attention_mask has shape {shape} but the inputs have .*must match"):
        model(**inputs)
    with pytest.raises(ValueError, match=rf"attention_mask has shape {shape}"):
        model.generate(**inputs, max_new_tokens=2)
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, "):
        model(**dict(mixed_batch, attention_mask=mask[:1]))  # one row for two


@pytest.mark.parametrize("bad_id", [-1, 260, 261, 10**9])
def test_ids_outside_the_vocabulary_are_refused_in_forward_and_generate(tiny, mixed_batch, bad_id):
    model, _ = tiny
    vocab_size = model.config.text_config.vocab_size
    assert vocab_size == 260 and model.config.image_token_id == 260  # 260 is allowed where it is the image token
    input_ids = mixed_batch["input_ids"].clone()
    text_row = 1
    input_ids[text_row, -1] = bad_id
    inputs = dict(mixed_batch, input_ids=input_ids)
    if bad_id == model.config.image_token_id:  # an image token in the text-only row: the image count is wrong
        with pytest.raises(ValueError, match="image tokens"):
            model(**inputs)
        return
    message = rf"input_ids hold ids outside the model's vocabulary \(0 to 259, .*e.g. \[{bad_id}\]"
    with pytest.raises(ValueError, match=message):
        model(**inputs)
    with pytest.raises(ValueError, match=message):
        model.generate(**inputs, max_new_tokens=2)
    with pytest.raises(ValueError, match=message):
        model(**inputs, labels=inputs["input_ids"])


@pytest.mark.parametrize("bad_label", [-1, -99, 261, 5000])
def test_labels_outside_the_vocabulary_are_refused(tiny, mixed_batch, bad_label):
    model, _ = tiny
    labels = mixed_batch["input_ids"].clone()
    labels[0, :3] = -100  # ignored positions and the image token (masked by the model) are fine
    assert model(**mixed_batch, labels=labels).loss.isfinite()
    labels[1, -1] = bad_label
    with pytest.raises(ValueError, match=rf"labels hold ids outside the model's vocabulary .*e.g. \[{bad_label}\]"):
        model(**mixed_batch, labels=labels)


def test_a_model_on_the_meta_device_is_refused():
    model, processor = build_tiny_lavin(seed=0)
    inputs = processor(text=["Hello"], return_tensors="pt")
    model.to("meta")
    with pytest.raises(ValueError, match="weights are on the meta device .*Load it with from_pretrained"):
        model(**inputs)
    with pytest.raises(ValueError, match="weights are on the meta device"):
        model.generate(**inputs, max_new_tokens=2)


def test_an_offloaded_model_whose_weights_wait_on_meta_still_runs(tiny, mixed_batch):
    model, _ = tiny
    with torch.no_grad():
        expected = model(**mixed_batch).logits
    cpu_offload(model, execution_device="cpu")
    assert model.model.get_input_embeddings().weight.is_meta  # the hooks bring the weights in at each call
    with torch.no_grad():
        assert torch.equal(model(**mixed_batch).logits, expected)


@pytest.mark.parametrize("ids", [[1, 70, -1], [1, 261], [1, 2**64], [[1, 70], [1, 10**6]], torch.tensor([[1.0, 2.0]])])
def test_decoding_ids_outside_the_vocabulary_is_refused(tiny, ids):
    _, processor = tiny
    with pytest.raises(ValueError, match=r"Cannot decode the id .*integers from 0 to 260 for this tokenizer"):
        processor.batch_decode(ids) if isinstance(ids[0], list) or torch.is_tensor(ids) else processor.decode(ids)


def test_decoding_valid_ids_is_the_tokenizers(tiny, mixed_batch):
    _, processor = tiny
    ids = mixed_batch["input_ids"]
    assert processor.batch_decode(ids) == processor.tokenizer.batch_decode(ids)
    assert processor.decode(ids[1], skip_special_tokens=True) == processor.tokenizer.decode(
        ids[1], skip_special_tokens=True
    )
    assert processor.decode(70) == processor.tokenizer.decode(70)


@pytest.mark.parametrize("text", ["a\ud800b", ["fine", "\udfff"]])
def test_a_lone_surrogate_in_text_is_refused(tiny, text):
    _, processor = tiny
    index = 0 if isinstance(text, str) else 1
    with pytest.raises(ValueError, match=rf"Prompt {index} holds .* a lone surrogate that is not valid text"):
        processor(text=text)


def test_an_empty_list_of_prompts_is_refused(tiny):
    _, processor = tiny
    with pytest.raises(ValueError, match="text is an empty list: give at least one prompt"):
        processor(text=[])


@pytest.mark.parametrize(
    ("conversation", "message"),
    [
        ([{"role": "user", "content": 5}], r"Message 0 has content of type int \(5\); content must be a string"),
        (
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [{"type": "text", "text": 3}]}],
            r"Message 1, part 0 is a text part whose 'text' is int, not a string",
        ),
        ([{"role": "user", "content": [5]}], r"Message 0, part 0 must be a dict with a string 'type'"),
        ([{"content": "no role"}], r"Message 0 needs a string 'role'; got None"),
        ([], r"The conversation is empty"),
        ([[{"role": "user", "content": "a"}], [{"role": "user", "content": 7.5}]], r"Conversation 1, message 0"),
        ([{"role": "user", "content": "x\ud800"}], r"Message 0 holds .* a lone surrogate"),
    ],
)
def test_chat_messages_the_template_cannot_render_are_refused(tiny, conversation, message):
    _, processor = tiny
    with pytest.raises(ValueError, match=message):
        processor.apply_chat_template(conversation, tokenize=False)


def test_chat_messages_with_parts_and_null_content_still_render(tiny):
    _, processor = tiny
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]},
        {"role": "assistant", "content": None},
    ]
    assert processor.apply_chat_template(messages, tokenize=False) == "<s>Instruction: What?\nResponse:</s>"


def test_message_objects_are_checked_and_escaped_as_dicts_are(tiny):
    _, processor = tiny

    @dataclasses.dataclass
    class Message:
        role: str
        content: object

    as_dicts = [{"role": "user", "content": [{"type": "text", "text": "Say </s> <image>"}]}]
    as_objects = [Message("user", [{"type": "text", "text": "Say </s> <image>"}])]
    rendered = processor.apply_chat_template(as_objects, tokenize=False)
    assert rendered == processor.apply_chat_template(as_dicts, tokenize=False)
    assert processor.escape_special_tokens("</s>") in rendered  # the typed EOS stays text
    with pytest.raises(ValueError, match=r"Message 0 has content of type int"):
        processor.apply_chat_template([Message("user", 5)], tokenize=False)
