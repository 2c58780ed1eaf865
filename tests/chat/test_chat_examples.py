"""The thin wrappers: the example script and the Hub Space app run the package's demo."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import gradio as gr
import pytest

from transformers_lavin.chat import DEMO_MODEL_NAME
from transformers_lavin.chat import app as chat_app

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.fixture
def launched(monkeypatch) -> list[tuple]:
    """Record launches instead of serving."""
    calls = []
    monkeypatch.setattr(chat_app, "launch", lambda demo, host, port: calls.append((demo, host, port)))
    return calls


def page_text(demo: gr.Blocks) -> str:
    return "\n".join(str(block.value) for block in demo.blocks.values() if isinstance(block, gr.Markdown))


def test_example_script_is_the_command_line(launched, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["chat_demo.py", "--port", "7901"])
    runpy.run_path(str(EXAMPLES / "chat_demo.py"), run_name="__main__")
    demo, host, port = launched[0]
    assert (host, port) == ("127.0.0.1", 7901)
    assert DEMO_MODEL_NAME in page_text(demo)


def test_space_app_serves_the_demo_model_by_default(launched, monkeypatch):
    monkeypatch.delenv("LAVIN_MODEL", raising=False)
    monkeypatch.delenv("LAVIN_ADAPTER", raising=False)
    namespace = runpy.run_path(str(EXAMPLES / "space" / "app.py"), run_name="__main__")
    demo, host, port = launched[0]
    assert demo is namespace["demo"]  # a Space (or `gradio app.py`) finds the app under this name
    assert (host, port) == (None, None)  # a Space's GRADIO_SERVER_NAME / GRADIO_SERVER_PORT decide
    assert DEMO_MODEL_NAME in page_text(demo) and "⚠️" not in page_text(demo)


def test_space_app_takes_the_model_from_its_variables(launched, monkeypatch, tmp_path):
    monkeypatch.setenv("LAVIN_MODEL", str(tmp_path / "no-such-model"))
    runpy.run_path(str(EXAMPLES / "space" / "app.py"), run_name="__main__")
    demo, _, _ = launched[0]
    assert "Could not load the model from" in page_text(demo)
