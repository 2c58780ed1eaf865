"""A Gradio chat demo for LaVIN.

The model-facing pieces (`chat_stream`, `load_image`, `load_chat_model`, `routing_for_turn`) import no Gradio, so
they can be used and tested without it; `transformers_lavin.chat.app` builds the Gradio interface on top of them.
"""

from .generation import ChatInputError, chat_stream, load_image
from .loading import DEMO_MODEL_NAME, ModelLoadError, load_chat_model
from .routing import plot_routing, routing_for_turn

__all__ = [
    "DEMO_MODEL_NAME",
    "ChatInputError",
    "ModelLoadError",
    "chat_stream",
    "load_chat_model",
    "load_image",
    "plot_routing",
    "routing_for_turn",
]
