"""`transformers serve` on LaVIN, through `python -m transformers_lavin.serving` (`lavin-serve`) in a subprocess on
loopback: a saved LaVIN, a merged one and an MMA adapter directory answer an image question (a base64 data URL) in an
OpenAI-style streamed chat completion, exactly what the same model generates in this process."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import string
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from peft import PeftModel, get_peft_model
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from transformers_lavin import MMAConfig
from transformers_lavin.testing_utils import build_tiny_lavin

pytest.importorskip("openai", reason="the serve extra is not installed")  # transformers serve's own requirement

NEW_TOKENS = 6
QUESTION = "What color is the square?"


def _png(rgb: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (30, 30), rgb).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGE = _png((220, 30, 30))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """`base` (a saved LaVIN), `adapter` (an MMA adapter trained on it) and `merged` (it, merged for images), each
    saved with the processor, as a user's directories."""
    root = tmp_path_factory.mktemp("serve")
    model, processor = build_tiny_lavin(seed=0)
    # Answers of letters and spaces, NEW_TOKENS long: each byte token a whole character, as the streamed text has it
    # (a stream holds back a byte that does not complete a character).
    tokenizer = processor.tokenizer
    allowed = {i for i in range(len(tokenizer)) if tokenizer.decode([i]) in set(string.ascii_letters + " ")}
    model.generation_config.suppress_tokens = sorted(set(range(model.config.text_config.vocab_size)) - allowed)
    model.save_pretrained(root / "base")
    processor.save_pretrained(root / "base")
    peft_model = get_peft_model(AutoModelForImageTextToText.from_pretrained(root / "base"), MMAConfig(dropout=0.0))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a trained adapter's effect: every trainable tensor random, non-zero
        for _, param in sorted(peft_model.named_parameters()):
            if param.requires_grad:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    peft_model.save_pretrained(root / "adapter")
    processor.save_pretrained(root / "adapter")
    peft_model.merge_and_unload(modality="image").save_pretrained(root / "merged")
    processor.save_pretrained(root / "merged")
    return root


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(models):
    """The launcher, started in the models' folder as a user would (model names are relative paths there)."""
    port = _free_port()
    command = [sys.executable, "-m", "transformers_lavin.serving", "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        command, cwd=models, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, f"the server stopped:\n{process.stdout.read()[-3000:]}"
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start in 120 s"
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def streamed_answer(url: str, model: str) -> tuple[str, int]:
    """An OpenAI-style streamed chat completion of one image question: the answer and the number of its chunks."""
    data_url = "data:image/png;base64," + base64.b64encode(IMAGE).decode()
    content = [{"type": "image_url", "image_url": {"url": data_url}}, {"type": "text", "text": QUESTION}]
    body = {"model": model, "messages": [{"role": "user", "content": content}], "stream": True}
    body |= {"max_tokens": NEW_TOKENS, "temperature": 0.0}
    text, chunks, finished = "", 0, None
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            (choice,) = json.loads(line.removeprefix("data: "))["choices"]
            text += choice["delta"].get("content") or ""
            chunks += 1
            finished = choice.get("finish_reason") or finished
    assert finished == "length"
    return text, chunks


def generated_here(model, processor, image: bytes | None = IMAGE) -> str:
    """What `model` answers the same question greedily in this process, from the processor's own chat template."""
    content = [{"type": "text", "text": QUESTION}]
    if image is not None:
        content.insert(0, {"type": "image", "image": Image.open(io.BytesIO(image))})
    inputs = processor.apply_chat_template(
        [{"role": "user", "content": content}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        output = model.eval().generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    return processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def test_a_saved_merged_and_adapter_lavin_answer_a_streamed_image_question(models, server):
    processor = AutoProcessor.from_pretrained(models / "base")
    base = AutoModelForImageTextToText.from_pretrained(models / "base")
    expected = {
        "base": generated_here(base, processor),
        "merged": generated_here(AutoModelForImageTextToText.from_pretrained(models / "merged"), processor),
        "adapter": generated_here(PeftModel.from_pretrained(base, models / "adapter"), processor),
    }
    assert expected["adapter"] == expected["merged"] != expected["base"]  # the adapter changes the answer
    for image in (None, _png((30, 60, 220))):  # ... and so does the image: the server must have read it
        assert generated_here(base, processor, image) != expected["base"]
    for name, answer in expected.items():
        text, chunks = streamed_answer(server, name)
        assert chunks > 2, name  # streamed: a role chunk, content chunks, a closing chunk
        assert text == answer, name
