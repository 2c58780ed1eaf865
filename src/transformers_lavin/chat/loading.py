"""Loading the model the chat demo serves, with errors a user can act on."""

from __future__ import annotations

from typing import Any

import torch

DEMO_MODEL_NAME = "tiny-random-lavin"
"""Model name that selects the built-in tiny random LaVIN: needs no download, answers with random tokens."""


class ModelLoadError(RuntimeError):
    """Raised when the base model or the adapter cannot be loaded; the message says what was tried and why."""


def load_chat_model(
    model_name_or_path: str = DEMO_MODEL_NAME, adapter: str | None = None, device: str | None = None
) -> tuple[Any, Any]:
    """
    Load a LaVIN base model and its processor, plus an optional MMA adapter.

    Args:
        model_name_or_path (`str`, *optional*, defaults to `"tiny-random-lavin"`):
            A Hub id or local directory saved with `save_pretrained`, or [`DEMO_MODEL_NAME`] for the tiny random
            model built in code (works offline, for trying the interface).
        adapter (`str`, *optional*):
            Hub id or local directory of an MMA adapter saved with PEFT's `save_pretrained`.
        device (`str`, *optional*):
            Device to run on; the GPU when there is one by default.

    Returns:
        `tuple`: the model in eval mode and its processor.

    Raises:
        `ModelLoadError`: if the base model, its processor or the adapter cannot be loaded.
    """
    import transformers_lavin  # noqa: F401 - registers "lavin" with the Auto classes and "MMA" with PEFT

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if model_name_or_path == DEMO_MODEL_NAME:
        from transformers_lavin.testing_utils import build_tiny_lavin

        model, processor = build_tiny_lavin(seed=0)
    else:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        try:
            processor = AutoProcessor.from_pretrained(model_name_or_path)
            model = AutoModelForImageTextToText.from_pretrained(model_name_or_path)
        except Exception as error:
            raise ModelLoadError(
                f"Could not load a LaVIN model from '{model_name_or_path}': {_first_line(error)}\n"
                "Pass a local directory written by `save_pretrained` or a Hub id you can reach, "
                f"or leave the model unset to try the offline demo model '{DEMO_MODEL_NAME}'."
            ) from error
    if adapter:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, adapter)
        except Exception as error:
            raise ModelLoadError(
                f"Could not load the MMA adapter '{adapter}' onto '{model_name_or_path}': {_first_line(error)}\n"
                "Pass a directory written by PEFT's `save_pretrained` (it holds adapter_config.json) or its Hub id."
            ) from error
    return model.to(device).eval(), processor


def _first_line(error: BaseException) -> str:
    """The first line of an exception's message: transformers' loading errors run to several paragraphs."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
