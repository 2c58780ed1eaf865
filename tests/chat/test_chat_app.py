"""The Gradio app without a browser: command line, page contents, and that nothing can phone home."""

from __future__ import annotations

import os

import gradio as gr
import pytest

from transformers_lavin.chat import DEMO_MODEL_NAME
from transformers_lavin.chat import app as chat_app


def component(demo: gr.Blocks, elem_id: str) -> gr.components.Component:
    return next(block for block in demo.blocks.values() if getattr(block, "elem_id", None) == elem_id)


def test_command_line_defaults_are_local_and_offline():
    args = chat_app.parse_args([])
    assert args.host == "127.0.0.1"
    assert args.model == DEMO_MODEL_NAME and args.adapter is None
    args = chat_app.parse_args(["--model", "me/lavin", "--adapter", "./mma", "--port", "9000"])
    assert (args.model, args.adapter, args.port) == ("me/lavin", "./mma", 9000)


def test_analytics_are_off():
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    assert not gr.analytics.analytics_enabled()


def test_launch_is_local_without_share_link(monkeypatch, demo_model):
    seen = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: seen.update(kwargs))
    chat_app.launch(chat_app.build_demo(*demo_model))
    assert seen["server_name"] == "127.0.0.1" and seen["share"] is False


def test_page_names_the_model(demo_model):
    demo = chat_app.build_demo(*demo_model, adapter="me/mma")
    header = next(block.value for block in demo.blocks.values() if isinstance(block, gr.Markdown))
    assert DEMO_MODEL_NAME in header and "me/mma" in header and "random" in header
    assert component(demo, "lavin-status").value == ""


def test_load_failure_is_shown_in_the_page(tmp_path):
    missing = tmp_path / "no-such-model"
    demo = chat_app.load_demo(str(missing))  # must not raise: the page reports it
    status = component(demo, "lavin-status").value
    assert f"Could not load the model from '{missing}'" in status


def test_command_line_stops_at_start_when_the_model_cannot_load(monkeypatch, tmp_path, capsys):
    served = []
    monkeypatch.setattr(chat_app, "launch", lambda demo, host, port: served.append(demo))
    missing = tmp_path / "no-such-model"
    assert chat_app.main(["--model", str(missing), "--port", "7999"]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"lavin-chat: error: Could not load the model from '{missing}': no such directory")
    assert error.count("\n") == 1 and not served  # one line, and nothing served


def test_api_endpoints_have_meaningful_names(demo_model):
    demo = chat_app.build_demo(*demo_model)
    names = {dependency.api_name for dependency in demo.fns.values() if dependency.api_visibility == "public"}
    assert names == {"chat", "new_conversation"}


def test_a_demo_needs_a_model_or_a_reason():
    with pytest.raises(ValueError, match="load_error"):
        chat_app.build_demo(None, None)
