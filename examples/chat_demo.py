"""
Chat with LaVIN in the browser: a Gradio demo with image upload, streamed answers and the MMA routing weights.

    python examples/chat_demo.py                                   # tiny random model, starts offline
    python examples/chat_demo.py --model path/to/lavin-7b --adapter me/lavin-7b-sqa

Installed, the same program is the `lavin-chat` command. It serves on http://127.0.0.1:7860 (see `--host`/`--port`)
and sends nothing anywhere: Gradio analytics are off and there is no share link.
"""

from transformers_lavin.chat.app import main

if __name__ == "__main__":
    main()
