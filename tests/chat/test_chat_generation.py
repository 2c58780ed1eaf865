"""The chat function: image and text-only turns, multi-turn prompts, streaming, and bad input."""

from __future__ import annotations

import time

import pytest
import torch
from PIL import Image

from transformers_lavin.chat import ChatInputError, chat_stream, load_image
from transformers_lavin.chat.generation import build_messages, encode_chat


def generate_at_once(model, processor, messages, image, max_new_tokens):
    """The same turn without streaming: greedy `generate`, then decode the new tokens."""
    inputs = encode_chat(processor, messages, image)
    with torch.inference_mode():
        ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.tokenizer.decode(ids[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def test_image_turn_answers_like_generate(demo_model, picture):
    model, processor = demo_model
    image = load_image(picture)
    question = "What is in the image?"
    answers = list(chat_stream(model, processor, question, [], image, max_new_tokens=12))
    assert answers, "no answer text was streamed"
    expected = generate_at_once(model, processor, build_messages([], question, True), image, 12)
    assert answers[-1] == expected
    # The image reaches the model: the same question without it gets another answer.
    text_only = list(chat_stream(model, processor, question, [], None, max_new_tokens=12))
    assert text_only[-1] != answers[-1]


def test_text_only_multi_turn(demo_model):
    model, processor = demo_model
    history = [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
    ]
    answers = list(chat_stream(model, processor, "And another one?", history, max_new_tokens=10))
    expected = generate_at_once(model, processor, build_messages(history, "And another one?", False), None, 10)
    assert answers[-1] == expected

    prompt = processor.tokenizer.decode(
        encode_chat(processor, build_messages(history, "And another one?", False), None)["input_ids"][0]
    )
    # Earlier turns come before the new message, and a text-only input gets no image placeholders.
    assert prompt.index("Name a colour.") < prompt.index("Blue.") < prompt.index("And another one?")
    assert processor.image_token not in prompt


def test_image_goes_with_the_first_user_turn():
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    messages = build_messages(history, "What is this?", has_image=True)
    assert messages[0]["content"][0] == {"type": "image"}
    assert all({"type": "image"} not in message["content"] for message in messages[1:])


def test_later_turns_keep_the_image(demo_model, picture):
    model, processor = demo_model
    image = load_image(picture)
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    inputs = encode_chat(processor, build_messages(history, "What is this?", True), image)
    assert inputs["pixel_values"].shape[0] == 1
    assert (inputs["input_ids"] == processor.image_token_id).sum() == processor.num_image_tokens


def test_streams_token_by_token(demo_model):
    model, processor = demo_model
    space = processor.tokenizer.convert_tokens_to_ids("Ġ")  # the byte-level space token
    # The streamer releases text at word ends; favouring spaces makes every token one, so each must arrive alone.
    answers = list(
        chat_stream(model, processor, "Hello", max_new_tokens=6, sequence_bias={(space,): 100.0}, timeout=30)
    )
    assert len(answers) == 6
    for shorter, longer in zip(answers, answers[1:], strict=False):
        assert longer.startswith(shorter) and len(longer) > len(shorter)


def test_sampling_settings_are_used(demo_model):
    model, processor = demo_model
    greedy = list(chat_stream(model, processor, "Hello", max_new_tokens=16))[-1]
    torch.manual_seed(0)
    sampled = list(chat_stream(model, processor, "Hello", max_new_tokens=16, temperature=5.0, top_p=1.0))[-1]
    assert sampled != greedy


@pytest.mark.parametrize("message", ["", "   \n "])
def test_empty_message_is_refused(demo_model, message):
    model, processor = demo_model
    with pytest.raises(ChatInputError, match="type a message"):
        next(chat_stream(model, processor, message))


@pytest.mark.parametrize(
    "settings",
    [{"max_new_tokens": 0}, {"temperature": -1.0}, {"temperature": float("nan")}, {"top_p": 0.0}, {"top_p": 1.5}],
    ids=str,
)
def test_bad_settings_are_refused(demo_model, settings):
    model, processor = demo_model
    with pytest.raises(ChatInputError):
        next(chat_stream(model, processor, "Hello", **settings))


def test_generation_error_reaches_the_caller(demo_model, monkeypatch):
    model, processor = demo_model

    def broken_generate(**kwargs):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(model, "generate", broken_generate)
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="simulated"):
        list(chat_stream(model, processor, "Hello", timeout=30))
    assert time.perf_counter() - start < 10, "the stream waited for tokens that could never come"


def test_load_image_reads_pictures(picture, tmp_path):
    image = load_image(picture)
    assert image.mode == "RGB" and image.size == (64, 48)
    grey = tmp_path / "grey.png"
    Image.new("LA", (8, 8)).save(grey)
    assert load_image(grey).mode == "RGB"


def test_load_image_refuses_other_files(not_an_image, picture, tmp_path):
    with pytest.raises(ChatInputError, match="'notes.txt' is not an image"):
        load_image(not_an_image)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(picture.read_bytes()[:60])
    with pytest.raises(ChatInputError, match="'cut.png' is not an image"):
        load_image(truncated)
    with pytest.raises(ChatInputError, match="no longer available"):
        load_image(tmp_path / "gone.png")
