"""Judges for open-ended answers: a local Hugging Face causal LM, or any OpenAI-compatible chat endpoint.

A judge is any callable `(system, user) -> str`. Nothing is called unless a judge is given explicitly: there is no
default endpoint and no default model (LLaVA's published numbers used `gpt-4-0314`). [`HFJudge`] decodes greedily
(LLaVA samples at temperature 0.2), so that a local judge gives the same review twice. [`parse_judge_scores`] reads the two scores a review starts with.
"""

import contextlib
import json
import math
import os
import socket
import threading
import time
from typing import Any, Protocol

import httpx

from ..cli_errors import UserInputError


class JudgeError(UserInputError):
    """A judge failed: no answer (timeout, HTTP error) or an answer that cannot be read."""


class Judge(Protocol):
    """Anything that maps a system message and a user message to the judge's reply text."""

    def __call__(self, system: str, user: str) -> str: ...


def parse_judge_scores(review: str) -> tuple[float, float]:
    """
    Reads the two scores from the first line of a review, as LLaVA's `parse_score` does
    (`llava/eval/eval_gpt_review_bench.py`): the text before the first newline, commas replaced by spaces, split on
    single spaces; exactly two pieces, each a number. So `"8 6"` and `"8,6"` are read, while `"8, 6"` (three pieces),
    `"8  6"` and a review starting with an empty line are not.

    Args:
        review (`str`): The judge's reply.

    Returns:
        `tuple[float, float]`: the score of the first (reference) answer and of the second (model) answer.

    Raises:
        `JudgeError`: if the first line is not read as two numbers.
    """
    first_line = review.split("\n")[0]
    pieces = first_line.replace(",", " ").split(" ")
    try:
        if len(pieces) != 2:
            raise ValueError
        scores = float(pieces[0]), float(pieces[1])
        if not all(math.isfinite(score) for score in scores):  # "NaN NaN" or "inf 1" is no rating
            raise ValueError
        return scores
    except ValueError:
        raise JudgeError(f"The judge's reply does not start with two scores: {first_line[:200]!r}") from None


class _HTTPStatus(Exception):
    def __init__(self, status: int, reason: str, location: str | None) -> None:
        super().__init__(f"HTTP {status} {reason}")
        self.status, self.reason, self.location = status, reason, location


class HTTPJudge:
    """
    A judge behind an OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, TGI, llama.cpp server, ...).
    Uses `httpx`, with TLS certificates verified and no proxy or credentials taken from the environment.

    Hostile or broken servers are bounded: redirects are never followed (the key would travel to another address, and
    a redirected POST turns into a GET), so a 3xx reply is an error naming its target; a reply body larger than
    `max_reply_bytes` is refused; and `timeout` is a deadline for the whole request (connect, send, the reply to its
    last byte), so a server that trickles bytes cannot hold a run.

    Args:
        url (`str`):
            The endpoint, e.g. `"http://127.0.0.1:8000/v1/chat/completions"`. A URL ending in `/v1` gets
            `/chat/completions` appended.
        model (`str`): The model name sent in the request.
        api_key (`str`, *optional*): Sent as a bearer token, to this URL only; defaults to the environment variable
            `api_key_env`.
        api_key_env (`str`, *optional*, defaults to `"OPENAI_API_KEY"`): Where to read the key when none is given.
        timeout (`float`, *optional*, defaults to 60): Seconds for one whole request.
        retries (`int`, *optional*, defaults to 2): Further attempts after a timeout, a connection error, a 429 or
            a 5xx reply, with exponential backoff starting at `backoff` seconds.
        backoff (`float`, *optional*, defaults to 1.0)
        max_tokens (`int`, *optional*, defaults to 1024): LLaVA's value.
        temperature (`float`, *optional*, defaults to 0.2): LLaVA's value.
        max_reply_bytes (`int`, *optional*, defaults to 1 MiB): The largest reply body accepted.
    """

    def __init__(
        self,
        url: str,
        model: str,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        retries: int = 2,
        backoff: float = 1.0,
        max_tokens: int = 1024,
        temperature: float = 0.2,
        max_reply_bytes: int = 1 << 20,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"The judge URL must start with http:// or https://; got {url!r}.")
        self.url = url.rstrip("/") + "/chat/completions" if url.rstrip("/").endswith("/v1") else url
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get(api_key_env)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.max_reply_bytes = max_reply_bytes

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        deadline = time.monotonic() + self.timeout
        sockets = []

        def keep_socket(event: str, info: dict[str, Any]) -> None:
            # httpcore's trace hook hands over each stream it opens (TCP, then TLS): the watchdog below shuts it.
            if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
                sockets.append(info["return_value"].get_extra_info("socket"))

        def abort() -> None:
            # httpx times each connect, write and read, not the whole request: a server trickling bytes (headers or
            # body) would never hit its timeout, so the deadline wakes a blocked read by shutting the socket.
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

        # No proxy or .netrc from the environment (trust_env=False): the request and key go to this URL only.
        client = httpx.Client(timeout=self.timeout, follow_redirects=False, trust_env=False)
        watchdog = threading.Timer(self.timeout, abort)
        watchdog.start()
        try:
            trace = {"trace": keep_socket}
            with client.stream("POST", self.url, json=payload, headers=headers, extensions=trace) as response:
                if response.status_code >= 300:
                    raise _HTTPStatus(response.status_code, response.reason_phrase, response.headers.get("Location"))
                body = bytearray()
                for chunk in response.iter_raw():
                    body += chunk
                    if len(body) > self.max_reply_bytes:
                        raise JudgeError(
                            f"The judge at {self.url} sent a reply larger than {self.max_reply_bytes} bytes; raise "
                            "max_reply_bytes (--judge_max_reply_bytes) if that is expected."
                        )
            if time.monotonic() >= deadline:  # the watchdog ended the reply early
                raise TimeoutError(f"no complete reply within {self.timeout} s")
        except httpx.HTTPError as error:
            if time.monotonic() >= deadline or isinstance(error, httpx.TimeoutException):
                raise TimeoutError(f"no complete reply within {self.timeout} s") from error
            raise ConnectionError(str(error) or type(error).__name__) from error
        finally:
            watchdog.cancel()
            client.close()
        text = body.decode("utf-8", errors="replace")
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise JudgeError(f"The judge at {self.url} did not reply with JSON: {text[:200]!r}") from error

    def __call__(self, system: str, user: str) -> str:
        payload = {
            "model": self.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        last_error: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                reply = self._post(payload)
            except _HTTPStatus as error:
                last_error = error
                if error.status == 429 or error.status >= 500:
                    continue
                if 300 <= error.status < 400:
                    raise JudgeError(
                        f"The judge at {self.url} redirected the request (HTTP {error.status}) to {error.location!r}. "
                        "Redirects are not followed, so the API key never leaves the host it was given for; give "
                        "the final URL with --judge_url."
                    ) from None
                raise JudgeError(
                    f"The judge at {self.url} refused the request: HTTP {error.status} {error.reason}"
                ) from None
            except (TimeoutError, ConnectionError) as error:
                last_error = error
                continue
            try:
                content = reply["choices"][0]["message"]["content"]
            except (KeyError, IndexError, TypeError) as error:
                raise JudgeError(
                    f"The judge at {self.url} replied without choices[0].message.content: {str(reply)[:200]}"
                ) from error
            if not isinstance(content, str):
                raise JudgeError(f"The judge at {self.url} replied with non-text content: {content!r}")
            return content
        raise JudgeError(f"The judge at {self.url} gave no answer after {self.retries + 1} attempt(s): {last_error}")


class HFJudge:
    """
    A judge run locally with a Hugging Face causal LM (greedy decoding).

    Args:
        model (`PreTrainedModel`): A causal LM, e.g. from `AutoModelForCausalLM.from_pretrained`.
        tokenizer (`PreTrainedTokenizerBase`): Its tokenizer; its chat template is used when it has one.
        max_new_tokens (`int`, *optional*, defaults to 256)
    """

    def __init__(self, model: Any, tokenizer: Any, max_new_tokens: int = 256) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens

    def __call__(self, system: str, user: str) -> str:
        import torch

        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = f"{system}\n\n{user}\n\n"
        inputs = self.tokenizer(text, return_tensors="pt").to(self.model.device)
        with torch.no_grad():
            output = self.model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
        return self.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def load_hf_judge(name_or_path: str, max_new_tokens: int = 256, **model_kwargs: Any) -> HFJudge:
    """
    Loads a local causal LM as a judge with `AutoModelForCausalLM` and `AutoTokenizer`.

    Args:
        name_or_path (`str`): A local directory (or a Hub id, if the user allows downloads).
        max_new_tokens (`int`, *optional*, defaults to 256)
        model_kwargs: Passed to `from_pretrained` (e.g. `dtype`, `device_map`).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(name_or_path, **model_kwargs).eval()
    return HFJudge(model, tokenizer, max_new_tokens)
