"""Loading the model the chat demo serves, with errors a user can act on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

# Importing the package registers "lavin" with the Auto classes and "MMA" with PEFT, which loading relies on.
from .. import MMAConfig

DEMO_MODEL_NAME = "tiny-random-lavin"
"""Model name that selects the built-in tiny random LaVIN (with fresh MMA adapters unless an adapter is given):
needs no download, answers with random tokens; for trying the interface."""


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
            model built in code (works offline, for trying the interface). Without `adapter`, the demo model gets
            freshly initialised MMA adapters, so the routing view has something to show.
        adapter (`str`, *optional*):
            Hub id or local directory of an MMA adapter saved with PEFT's `save_pretrained`.
        device (`str`, *optional*):
            Device to run on; the GPU when there is one by default.

    Returns:
        `tuple`: the model in eval mode and its processor.

    Raises:
        `ModelLoadError`: if the base model, its processor or the adapter cannot be loaded.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if model_name_or_path == DEMO_MODEL_NAME:
        from transformers_lavin.testing_utils import build_tiny_lavin

        model, processor = build_tiny_lavin(seed=0)
        if not adapter:
            from peft import get_peft_model

            torch.manual_seed(0)  # the same demo model in every run
            model = get_peft_model(model, MMAConfig())
    else:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        _check_local_path(model_name_or_path, "model")
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

        _check_local_path(adapter, "MMA adapter")
        try:
            model = PeftModel.from_pretrained(model, adapter)
        except Exception as error:
            raise ModelLoadError(
                f"Could not load the MMA adapter '{adapter}' onto '{model_name_or_path}': {_first_line(error)}\n"
                "Pass a directory written by PEFT's `save_pretrained` (it holds adapter_config.json) or its Hub id."
            ) from error
    return model.to(device).eval(), processor


def _check_local_path(name_or_path: str, what: str) -> None:
    """Fail early, and plainly, for a local path that does not exist: the Hub client would call it a bad repo id."""
    path = Path(name_or_path).expanduser()
    looks_local = path.is_absolute() or name_or_path.startswith((".", "~")) or name_or_path.count("/") > 1
    if looks_local and not path.is_dir():
        problem = "it is a file, not a directory" if path.exists() else "no such directory"
        raise ModelLoadError(
            f"Could not load the {what} from '{name_or_path}': {problem}.\n"
            "Pass the directory that `save_pretrained` wrote, or a Hub id such as 'user/model'."
        )


def _first_line(error: BaseException) -> str:
    """The first line of an exception's message: transformers' loading errors run to several paragraphs."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
