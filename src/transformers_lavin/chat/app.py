"""
The Gradio chat demo: chat with LaVIN about an optional image, with streamed answers and a view of the routing.

Run it with `lavin-chat` (or `python -m transformers_lavin.chat.app`); `--help` lists the options. It binds to
127.0.0.1, makes no calls out (Gradio analytics are off, no share link) and, with no `--model`, serves a tiny random
model so it starts offline.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from ..cli_errors import UserInputError, add_debug_argument, user_errors
from ..cli_flags import UnderscoreArgumentParser
from .generation import ChatInputError, chat_stream, load_image
from .loading import DEMO_MODEL_NAME, ModelLoadError, load_chat_model
from .memory import release_freed_memory
from .routing import plot_routing, routing_for_turn

# Gradio reads this when it is imported and again before each analytics call; it must never phone home. Gradio itself
# is imported where the page is built, so that `--help` and a bad option answer without its import time.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

if TYPE_CHECKING:
    import gradio as gr

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
WARNING = "⚠️ "
MAX_NEW_TOKENS_LIMIT = 1024
# Gradio refuses bigger uploads before they reach the app; a photo is a few MB.
DEFAULT_MAX_FILE_SIZE = "20mb"
# What one browser session may keep on the server: its last exchanges (older ones fall out of the prompt too), for an
# hour after its last turn; uploads are deleted from Gradio's cache an hour after they arrive.
MAX_SESSION_TURNS = 20
SESSION_TIME_TO_LIVE_S = 3600
UPLOAD_CACHE_DELETION = (600, 3600)  # (check every N s, delete files older than N s), Gradio's `delete_cache`


@dataclass
class ChatSession:
    """
    One browser session's conversation.

    Attributes:
        history (`list[dict[str, str]]`): the text turns the model sees, `{"role": ..., "content": str}`.
        display (`list[dict]`): the messages the chatbot shows (text, and the name of each upload where it was sent).
        image (`PIL.Image.Image`, *optional*): the conversation's image; LaVIN reads one, so a new upload
            replaces it.
        image_path (`str`, *optional*): where Gradio stored that upload, for the preview.
    """

    history: list[dict[str, str]] = field(default_factory=list)
    display: list[dict[str, Any]] = field(default_factory=list)
    image: Image.Image | None = None
    image_path: str | None = None

    def forget_old_turns(self, max_turns: int | None = None) -> None:
        """Keep the last `max_turns` exchanges (default `MAX_SESSION_TURNS`), in what the model sees and the page."""
        max_turns = MAX_SESSION_TURNS if max_turns is None else max_turns
        self.history = self.history[-2 * max_turns :]
        self.display = self.display[-2 * max_turns :]


def build_demo(
    model: Any | None,
    processor: Any | None,
    *,
    model_name: str = DEMO_MODEL_NAME,
    adapter: str | None = None,
    load_error: str | None = None,
    max_new_tokens: int = 128,
) -> gr.Blocks:
    """
    Build the chat interface around a loaded model.

    Args:
        model (`LavinForConditionalGeneration` or `PeftModel`, *optional*):
            The model to chat with; `None` when loading failed, in which case the page shows `load_error` and
            every turn answers with it, but the app keeps serving.
        processor (`LavinProcessor`, *optional*):
            The model's processor.
        model_name (`str`, *optional*, defaults to `"tiny-random-lavin"`):
            Name of the model, shown in the page.
        adapter (`str`, *optional*):
            Name of the MMA adapter, shown in the page.
        load_error (`str`, *optional*):
            Why the model could not be loaded.
        max_new_tokens (`int`, *optional*, defaults to 128):
            Initial value of the "max new tokens" slider.

    Returns:
        `gr.Blocks`: the demo; start it with [`launch`] (or `.launch()` as a Hub Space does).
    """
    import gradio as gr

    if model is None and load_error is None:
        raise ValueError("Pass either a model or the load_error that explains why there is none.")

    with gr.Blocks(title="LaVIN chat", analytics_enabled=False, delete_cache=UPLOAD_CACHE_DELETION) as demo:
        gr.Markdown(f"## LaVIN chat\n{_describe_model(model_name, adapter, model is not None)}")
        status = gr.Markdown(f"{WARNING}{load_error}" if load_error else "", elem_id="lavin-status")
        session = gr.State(ChatSession(), time_to_live=SESSION_TIME_TO_LIVE_S)
        with gr.Row():
            with gr.Column(scale=3):
                # Only local buttons: the "share" button would post the conversation to the Hub.
                chatbot = gr.Chatbot(label="Conversation", elem_id="lavin-chatbot", height=420, buttons=["copy_all"])
                textbox = gr.MultimodalTextbox(
                    placeholder="Ask about the image, or just chat. Attach an image with the clip button.",
                    sources=["upload"],
                    show_label=False,
                    elem_id="lavin-input",
                )
                clear_button = gr.Button("New conversation", elem_id="lavin-clear")
            with gr.Column(scale=2):
                preview = gr.Image(
                    label="Image in this conversation",
                    interactive=False,
                    height=180,
                    buttons=["fullscreen"],
                    elem_id="lavin-image",
                )
                # The figure carries its own title; a Gradio label would sit on top of it.
                routing_plot = gr.Plot(show_label=False, elem_id="lavin-routing")
                with gr.Accordion("Generation settings", open=False):
                    max_tokens = gr.Slider(
                        1, MAX_NEW_TOKENS_LIMIT, value=max_new_tokens, step=1, label="Max new tokens"
                    )
                    temperature = gr.Slider(0.0, 2.0, value=0.0, step=0.05, label="Temperature (0 = greedy)")
                    top_p = gr.Slider(0.05, 1.0, value=0.9, step=0.05, label="Top-p (when sampling)")

        def respond(
            user_input: dict[str, Any] | None,
            chat: ChatSession,
            max_tokens: float,
            temperature: float,
            top_p: float,
        ) -> Iterator[dict[gr.components.Component, Any]]:
            text = ((user_input or {}).get("text") or "").strip()
            files = (user_input or {}).get("files") or []
            cleared_input = {"text": "", "files": []}
            if model is None:
                yield {status: f"{WARNING}No model is loaded, so there is nothing to answer with.\n\n{load_error}"}
                return

            new_image = None
            if files:
                try:
                    # One image per conversation: of several files sent at once, the last is the one kept.
                    new_image = load_image(files[-1], reduce_to=processor.input_image_size())
                except ChatInputError as error:
                    # Drop the bad file but keep the typed text, so the user only has to attach a real image.
                    yield {textbox: {"text": text, "files": []}, status: f"{WARNING}{error}"}
                    return
                finally:
                    release_freed_memory()  # the full-size decode is freed: give it back (see memory.py)
            if not text and new_image is None:
                yield {status: f"{WARNING}Please type a message: LaVIN needs a question or instruction to answer."}
                return

            note = ""
            if new_image is not None:
                if chat.image is not None:
                    note = "This image replaces the earlier one (this app keeps one image per conversation). "
                chat.image, chat.image_path = new_image, files[-1]
                # Named, not shown: Gradio gives images in the chat a "share" button that uploads them to the Hub.
                chat.display.append({"role": "user", "content": f"*(image: {Path(files[-1]).name})*"})
            if not text:
                yield {
                    textbox: cleared_input,
                    session: chat,
                    chatbot: chat.display,
                    preview: chat.image_path,
                    status: f"{note}Image received. Ask a question about it.",
                }
                return

            has_image = chat.image is not None
            shown = [*chat.display, {"role": "user", "content": text}]
            yield {
                textbox: cleared_input,
                session: chat,
                chatbot: [*shown, {"role": "assistant", "content": "…"}],
                preview: chat.image_path,
                routing_plot: plot_routing(routing_for_turn(model, has_image), has_image),
                status: f"{note}Generating…",
            }
            answer, start = "", time.perf_counter()
            try:
                for answer in chat_stream(
                    model,
                    processor,
                    text,
                    chat.history,
                    chat.image,
                    max_new_tokens=int(max_tokens),
                    temperature=temperature,
                    top_p=top_p,
                ):
                    yield {chatbot: [*shown, {"role": "assistant", "content": answer}]}
            except Exception as error:
                if not isinstance(error, ChatInputError):
                    logger.exception("Generation failed")
                    error = f"Generation failed: {error}"
                # The turn is dropped; give the text back so it can be sent again.
                yield {textbox: {"text": text, "files": []}, chatbot: chat.display, status: f"{WARNING}{error}"}
                return

            chat.history += [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]
            chat.display = [*shown, {"role": "assistant", "content": answer or "*(the model produced no text)*"}]
            chat.forget_old_turns()
            yield {
                session: chat,
                chatbot: chat.display,
                status: f"{note}Answered in {time.perf_counter() - start:.1f} s.",
            }

        def clear() -> dict[gr.components.Component, Any]:
            return {
                textbox: {"text": "", "files": []},
                session: ChatSession(),
                chatbot: [],
                preview: None,
                routing_plot: None,
                status: "",
            }

        outputs = {textbox, session, chatbot, preview, routing_plot, status}
        # Named API endpoints (`/chat`, `/new_conversation`), not Gradio's numbered defaults.
        textbox.submit(respond, [textbox, session, max_tokens, temperature, top_p], outputs, api_name="chat")
        clear_button.click(clear, None, outputs, api_name="new_conversation")
        # The chatbot's own trash button must reset the session too; it is the same action, not another endpoint.
        chatbot.clear(clear, None, outputs, api_visibility="private")
    return demo


def launch(demo: gr.Blocks, host: str | None = DEFAULT_HOST, port: int | None = DEFAULT_PORT, **kwargs: Any) -> None:
    """
    Serve the demo locally: no share link, no server-side rendering, errors shown in the page.

    Args:
        demo (`gr.Blocks`): from [`build_demo`].
        host (`str`, *optional*, defaults to `"127.0.0.1"`): address to bind; `None` lets Gradio choose
            (`GRADIO_SERVER_NAME`, which a Hub Space sets to 0.0.0.0).
        port (`int`, *optional*, defaults to 7860): port; `None` lets Gradio choose (`GRADIO_SERVER_PORT`).
        kwargs: passed on to `gr.Blocks.launch`; `max_file_size` (the upload limit) defaults to
            `DEFAULT_MAX_FILE_SIZE` (20 MB).
    """
    kwargs.setdefault("max_file_size", DEFAULT_MAX_FILE_SIZE)
    demo.queue(default_concurrency_limit=1)  # one generation at a time: they share the model
    demo.launch(server_name=host, server_port=port, share=False, ssr_mode=False, show_error=True, **kwargs)


def load_demo(model: str = DEMO_MODEL_NAME, adapter: str | None = None, **kwargs: Any) -> gr.Blocks:
    """
    Load a model and build the demo; a model that fails to load is reported in the page (and logged), not raised,
    so that a Hub Space still serves a page that says why (`lavin-chat` stops at start instead).

    Args:
        model (`str`, *optional*, defaults to `"tiny-random-lavin"`): Hub id or local directory of a LaVIN base.
        adapter (`str`, *optional*): Hub id or local directory of an MMA adapter.
        kwargs: passed on to [`build_demo`].

    Returns:
        `gr.Blocks`: the demo.
    """
    try:
        loaded, processor = load_chat_model(model, adapter)
    except ModelLoadError as error:
        logger.error("%s", error)
        return build_demo(None, None, model_name=model, adapter=adapter, load_error=str(error), **kwargs)
    return build_demo(loaded, processor, model_name=model, adapter=adapter, **kwargs)


def _describe_model(model_name: str, adapter: str | None, loaded: bool) -> str:
    """One line about the served model for the top of the page."""
    line = f"Model: `{model_name}`" + (f" with MMA adapter `{adapter}`" if adapter else "")
    if not loaded:
        return line + " (failed to load)"
    if model_name == DEMO_MODEL_NAME:
        line += " (random, untrained weights: its answers are noise; use `--model` for a real one)"
    return line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options of `lavin-chat`."""
    parser = UnderscoreArgumentParser(prog="lavin-chat", description=__doc__.strip().splitlines()[0])
    parser.add_argument(
        "--model",
        default=DEMO_MODEL_NAME,
        help=f"Hub id or local directory of a LaVIN base model (default: {DEMO_MODEL_NAME}, a tiny offline model)",
    )
    parser.add_argument("--adapter", default=None, help="Hub id or local directory of an MMA adapter to load on it")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default: {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    parser.add_argument("--max_new_tokens", type=int, default=128, help="initial answer length limit")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        raise UserInputError(f"--port must be between 1 and 65535; got {args.port}.")
    if not 1 <= args.max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
        raise UserInputError(
            f"--max_new_tokens must be between 1 and {MAX_NEW_TOKENS_LIMIT} (the slider's range); got "
            f"{args.max_new_tokens}."
        )
    return args


@user_errors("lavin-chat")
def main(argv: Sequence[str]) -> None:
    """Entry point of the `lavin-chat` console script: a model that cannot be loaded stops it before it serves."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        model, processor = load_chat_model(args.model, args.adapter)
    except ModelLoadError as error:
        raise UserInputError(str(error)) from error
    demo = build_demo(
        model, processor, model_name=args.model, adapter=args.adapter, max_new_tokens=args.max_new_tokens
    )
    launch(demo, args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
