"""Turning a chat (text turns plus at most one image, the app's choice) into a streamed LaVIN answer."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import TextIteratorStreamer

from .. import image_loading


class ChatInputError(ValueError):
    """Raised for user input the demo cannot use; the message is meant to be shown to the user as is."""


def load_image(path: str | Path, reduce_to: tuple[int, int] | None = None) -> Image.Image:
    """
    Open an uploaded file as an RGB image, with a readable error for anything that is not an image.

    Args:
        path (`str` or `Path`):
            Path of the uploaded file.
        reduce_to (`tuple[int, int]`, *optional*):
            `(height, width)` the model reads; a bigger upload is kept reduced to about twice that, so a session
            never holds a full-size photo.

    Returns:
        `PIL.Image.Image`: the image, fully decoded and converted to RGB.

    Raises:
        `ChatInputError`: if the file is missing or is not an image Pillow can decode.
    """
    name = Path(path).name
    if not Path(path).is_file():
        raise ChatInputError(f"The uploaded file '{name}' is no longer available; please upload it again.")
    try:
        # Fully decoded here, so a truncated or corrupt file fails now and not inside generate; every mode is
        # converted to RGB by the package's documented rules.
        return image_loading.load_image(path, reduce_to=reduce_to)
    except ValueError as error:
        # The page shows this: name the upload as the user named it, never the server's temporary path.
        reason = str(error).replace(str(path), name)
        raise ChatInputError(
            f"'{name}' is not an image LaVIN can read ({reason}). Upload a picture (PNG, JPEG, WebP, GIF or BMP)."
        ) from error


def build_messages(history: Sequence[dict[str, str]], message: str, has_image: bool) -> list[dict[str, Any]]:
    """
    Build chat-template messages from plain text turns.

    The app keeps at most one image per conversation, and the processor puts a conversation's one image at the start
    of the sequence, so the image is attached to the first user turn, whichever turn it was uploaded in.

    Args:
        history (`Sequence[dict[str, str]]`):
            Earlier turns, each `{"role": "user" | "assistant", "content": str}`.
        message (`str`):
            The new user message.
        has_image (`bool`):
            Whether the conversation has an image.

    Returns:
        `list[dict]`: messages in the transformers chat format (`content` is a list of typed parts).
    """
    messages = [{"role": turn["role"], "content": [{"type": "text", "text": turn["content"]}]} for turn in history]
    messages.append({"role": "user", "content": [{"type": "text", "text": message}]})
    if has_image:
        first_user = next(m for m in messages if m["role"] == "user")
        first_user["content"].insert(0, {"type": "image"})
    return messages


def encode_chat(processor: Any, messages: list[dict[str, Any]], image: Image.Image | None) -> dict[str, torch.Tensor]:
    """
    Tokenize a conversation (and its image) for `generate`.

    Args:
        processor (`LavinProcessor`):
            The model's processor.
        messages (`list[dict]`):
            Messages as built by [`build_messages`].
        image (`PIL.Image.Image`, *optional*):
            The conversation's image.

    Returns:
        `dict[str, torch.Tensor]`: `input_ids`, `attention_mask` and, with an image, `pixel_values`.
    """
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    images = [[image]] if image is not None else [[]]
    return dict(processor(images=images, text=[prompt], return_tensors="pt"))


def chat_stream(
    model: Any,
    processor: Any,
    message: str,
    history: Sequence[dict[str, str]] = (),
    image: Image.Image | None = None,
    *,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    timeout: float = 300.0,
    **generate_kwargs: Any,
) -> Iterator[str]:
    """
    Answer one chat turn, yielding the answer text as it grows, token by token.

    Generation runs in a background thread that feeds a [`~transformers.TextIteratorStreamer`]; an error raised
    there is re-raised here once the stream ends, so the caller sees it.

    Args:
        model (`LavinForConditionalGeneration` or `PeftModel`):
            The model to chat with.
        processor (`LavinProcessor`):
            Its processor.
        message (`str`):
            The new user message; must contain some text.
        history (`Sequence[dict[str, str]]`, *optional*):
            Earlier turns, each `{"role": "user" | "assistant", "content": str}`.
        image (`PIL.Image.Image`, *optional*):
            The conversation's image (the app keeps one per conversation).
        max_new_tokens (`int`, *optional*, defaults to 128):
            Most tokens to generate.
        temperature (`float`, *optional*, defaults to 0.0):
            Sampling temperature; 0 means greedy decoding.
        top_p (`float`, *optional*, defaults to 1.0):
            Nucleus-sampling mass, used only when sampling.
        timeout (`float`, *optional*, defaults to 300.0):
            Seconds to wait for the next token before giving up.
        generate_kwargs:
            Further arguments for `generate`, e.g. `repetition_penalty`.

    Yields:
        `str`: the answer so far (each value extends the previous one).

    Raises:
        `ChatInputError`: for an empty message or out-of-range settings.
    """
    message = message.strip()
    if not message:
        raise ChatInputError("Please type a message: LaVIN needs a question or instruction to answer.")
    if max_new_tokens < 1:
        raise ChatInputError(f"max_new_tokens must be at least 1, got {max_new_tokens}.")
    if temperature < 0 or not 0 < top_p <= 1:
        raise ChatInputError(f"Need temperature >= 0 and 0 < top_p <= 1, got {temperature} and {top_p}.")

    inputs = encode_chat(processor, build_messages(history, message, image is not None), image)
    device = next(model.parameters()).device
    inputs = {name: tensor.to(device) for name, tensor in inputs.items()}
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)

    sampling = (
        {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
    )
    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=timeout)
    failure: list[BaseException] = []

    def generate() -> None:
        try:
            with torch.inference_mode():
                model.generate(
                    **inputs, streamer=streamer, max_new_tokens=max_new_tokens, **sampling, **generate_kwargs
                )
        except BaseException as error:  # noqa: B036 - handed to the consumer thread below
            failure.append(error)
            # Unblock the consumer, which would otherwise wait for tokens that never come.
            streamer.end()

    thread = threading.Thread(target=generate, name="lavin-chat-generate", daemon=True)
    thread.start()
    answer = ""
    for piece in streamer:
        if piece:
            answer += piece
            yield answer
    thread.join()
    if failure:
        raise failure[0]
