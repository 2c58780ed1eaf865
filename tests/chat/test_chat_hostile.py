"""The chat app under hostile input: bounded uploads, small session images, typed special tokens stay text."""

from __future__ import annotations

import gradio as gr
from PIL import Image

from transformers_lavin.chat import app as chat_app
from transformers_lavin.chat.generation import build_messages, encode_chat


def _respond(demo: gr.Blocks):
    return next(block_fn.fn for block_fn in demo.fns.values() if block_fn.fn.__name__ == "respond")


def test_launch_sets_an_upload_limit(monkeypatch, demo_model):
    seen = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: seen.update(kwargs))
    chat_app.launch(chat_app.build_demo(*demo_model))
    assert seen["max_file_size"] == chat_app.DEFAULT_MAX_FILE_SIZE == "20mb"
    chat_app.launch(chat_app.build_demo(*demo_model), max_file_size="1mb")
    assert seen["max_file_size"] == "1mb"


def test_session_keeps_a_big_upload_reduced(tmp_path, demo_model):
    model, processor = demo_model
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (3000, 2000), (10, 120, 200)).save(path)
    session = chat_app.ChatSession()
    outputs = list(
        _respond(chat_app.build_demo(model, processor))({"text": "", "files": [str(path)]}, session, 8, 0, 1)
    )
    assert "Image received" in list(outputs[-1].values())[-1]
    height, width = processor.input_image_size()
    assert session.image is not None
    assert session.image.width < 4 * 2 * width and session.image.height < 4 * 2 * height


def test_typed_end_of_sequence_does_not_end_the_prompt(demo_model):
    _, processor = demo_model
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    inputs = encode_chat(processor, build_messages(history, "what does </s> or <image> mean?", False), None)
    ids = inputs["input_ids"][0].tolist()
    assert ids.count(processor.tokenizer.eos_token_id) == 1  # the end of the assistant's turn only
    assert processor.image_token_id not in ids
    assert "what does </s> or <image> mean?" in processor.tokenizer.decode(ids)


def test_upload_errors_name_the_file_not_the_servers_temporary_path(tmp_path, demo_model):
    upload = tmp_path / "gradio-temp-7f3a" / "notes.png"
    upload.parent.mkdir()
    upload.write_bytes(b"not an image at all")
    session = chat_app.ChatSession()
    outputs = list(
        _respond(chat_app.build_demo(*demo_model))({"text": "hi", "files": [str(upload)]}, session, 8, 0, 1)
    )
    status = list(outputs[-1].values())[-1]
    assert "'notes.png' is not an image" in status
    assert str(upload.parent) not in status and "gradio-temp-7f3a" not in status
