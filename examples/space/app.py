"""
LaVIN chat as a Hugging Face Space: copy this folder (app.py, requirements.txt, README.md) into a Gradio Space.

Set the Space variables `LAVIN_MODEL` (a LaVIN base: Hub id or path) and `LAVIN_ADAPTER` (an MMA adapter, optional);
without them the Space serves the tiny random demo model. Run locally with `python app.py`: it binds to 127.0.0.1,
while a Space sets `GRADIO_SERVER_NAME=0.0.0.0` itself.
"""

import os

from transformers_lavin.chat import DEMO_MODEL_NAME
from transformers_lavin.chat.app import launch, load_demo

demo = load_demo(os.environ.get("LAVIN_MODEL") or DEMO_MODEL_NAME, os.environ.get("LAVIN_ADAPTER") or None)

if __name__ == "__main__":
    # None: take the address and port from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (127.0.0.1:7860 when unset).
    launch(demo, host=None, port=None)
