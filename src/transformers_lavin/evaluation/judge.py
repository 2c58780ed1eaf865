"""Judges for open-ended answers: a local Hugging Face causal LM, or any OpenAI-compatible chat endpoint.

A judge is any callable `(system, user) -> str`. Nothing is called unless a judge is given explicitly: there is no
default endpoint and no default model. [`parse_judge_scores`] reads the two scores a review starts with.
"""

import json
import os
import re
import time
import urllib.error
import urllib.request
from typing import Any, Protocol


class JudgeError(RuntimeError):
    """A judge failed: no answer (timeout, HTTP error) or an answer that cannot be read."""


class Judge(Protocol):
    """Anything that maps a system message and a user message to the judge's reply text."""

    def __call__(self, system: str, user: str) -> str: ...


_NUMBER = r"(-?\d+(?:\.\d+)?)"
_SCORE_PAIR = re.compile(rf"^\s*{_NUMBER}\s*(?:,|\s)\s*{_NUMBER}\s*$")


def parse_judge_scores(review: str) -> tuple[float, float]:
    """
    Reads the two scores from the first non-empty line of a review, e.g. `"8 6"` or `"8, 6"`.

    Args:
        review (`str`): The judge's reply.

    Returns:
        `tuple[float, float]`: the score of the first (reference) answer and of the second (model) answer.

    Raises:
        `JudgeError`: if the first line is not two numbers in [0, 10].
    """
    first_line = next((line for line in review.splitlines() if line.strip()), "")
    match = _SCORE_PAIR.match(first_line)
    if match is None:
        raise JudgeError(f"The judge's reply does not start with two scores: {first_line[:200]!r}")
    scores = float(match.group(1)), float(match.group(2))
    if not all(0 <= score <= 10 for score in scores):
        raise JudgeError(f"The judge's scores must lie in [0, 10]; got {scores}.")
    return scores


class HTTPJudge:
    """
    A judge behind an OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, TGI, llama.cpp server, ...).
    Uses only the standard library.

    Args:
        url (`str`):
            The endpoint, e.g. `"http://127.0.0.1:8000/v1/chat/completions"`. A URL ending in `/v1` gets
            `/chat/completions` appended.
        model (`str`): The model name sent in the request.
        api_key (`str`, *optional*): Sent as a bearer token; defaults to the environment variable `api_key_env`.
        api_key_env (`str`, *optional*, defaults to `"OPENAI_API_KEY"`): Where to read the key when none is given.
        timeout (`float`, *optional*, defaults to 60): Seconds to wait for one reply.
        retries (`int`, *optional*, defaults to 2): Further attempts after a timeout, a connection error, a 429 or
            a 5xx reply, with exponential backoff starting at `backoff` seconds.
        backoff (`float`, *optional*, defaults to 1.0)
        max_tokens (`int`, *optional*, defaults to 256)
        temperature (`float`, *optional*, defaults to 0.0)
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
        max_tokens: int = 256,
        temperature: float = 0.0,
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

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(payload).encode(), headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            body = response.read().decode("utf-8", errors="replace")
        try:
            return json.loads(body)
        except json.JSONDecodeError as error:
            raise JudgeError(f"The judge at {self.url} did not reply with JSON: {body[:200]!r}") from error

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
            except urllib.error.HTTPError as error:
                last_error = error
                if error.code == 429 or error.code >= 500:
                    continue
                raise JudgeError(
                    f"The judge at {self.url} refused the request: HTTP {error.code} {error.reason}"
                ) from error
            except (TimeoutError, urllib.error.URLError, ConnectionError) as error:
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
