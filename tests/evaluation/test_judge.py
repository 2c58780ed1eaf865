"""Judges: the HTTP judge against a small OpenAI-compatible server on 127.0.0.1, a local HF judge, and bad replies."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from conftest import BENCH_ROWS, ScriptedModel
from transformers import LlamaConfig, LlamaForCausalLM

from transformers_lavin.evaluation import (
    HFJudge,
    HTTPJudge,
    JudgeError,
    LlavaBenchTask,
    parse_judge_scores,
    read_results,
    run_task,
)
from transformers_lavin.testing_utils import build_byte_tokenizer


class ChatServer:
    """An OpenAI-compatible chat-completions server whose replies the test scripts; it records every request."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.script = lambda body: (200, {"choices": [{"message": {"role": "assistant", "content": "8 6\nFine."}}]})
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
                status, reply = server.script(body)
                data = reply.encode() if isinstance(reply, str) else json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def reply_with(self, content: str) -> None:
        self.script = lambda body: (200, {"choices": [{"message": {"role": "assistant", "content": content}}]})


@pytest.fixture
def chat_server():
    server = ChatServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def test_parse_judge_scores():
    assert parse_judge_scores("8 6\nBecause...") == (8.0, 6.0)
    for garbage in ["Assistant 1 is better.", "8", "", "8 6 4", "NaN NaN", "inf 3"]:
        with pytest.raises(JudgeError):
            parse_judge_scores(garbage)


def test_http_judge_request_shape(chat_server):
    judge = HTTPJudge(chat_server.url, "judge-model", api_key="secret", timeout=5)
    assert judge("be fair", "rate this") == "8 6\nFine."
    request = chat_server.requests[0]
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer secret"
    assert request["model"] == "judge-model" and request["temperature"] == 0.2
    assert request["messages"] == [{"role": "system", "content": "be fair"}, {"role": "user", "content": "rate this"}]


def test_llava_bench_with_http_judge(bench_dir, chat_server, tmp_path):
    # The server scores by the question in the judge's prompt.
    scores = {row[2]: pair for row, pair in zip(BENCH_ROWS, ["8 6", "5 5", "10 4"], strict=True)}

    def script(body):
        content = next(v for k, v in scores.items() if k in body["messages"][1]["content"])
        return 200, {"choices": [{"message": {"content": content + "\nExplanation."}}]}

    chat_server.script = script
    model = ScriptedModel(lambda prompt: f"My answer to: {prompt}")
    task = LlavaBenchTask(bench_dir, judge=HTTPJudge(chat_server.url, "j", timeout=5))
    summary = run_task(model, task, tmp_path, progress=False)
    # Relative score = 100 * sum(model) / sum(reference).
    assert summary["conv"] == pytest.approx(75.0)
    assert summary["detail"] == pytest.approx(100.0)
    assert summary["complex"] == pytest.approx(40.0)
    assert summary["overall"] == pytest.approx(100 * (6 + 5 + 4) / (8 + 5 + 10))
    assert summary["n_judged"] == 3 and summary["n_judge_failures"] == 0
    # The judge saw the image description, the question, the reference and the model's answer.
    prompt = chat_server.requests[0]["messages"][1]["content"]
    question, reference = BENCH_ROWS[0][2], BENCH_ROWS[0][3]
    for part in ["An apple on a kitchen table.", question, reference, f"My answer to: {question}"]:
        assert part in prompt


def test_garbage_judge_reply_is_recorded_not_fatal(bench_dir, chat_server, tmp_path):
    chat_server.reply_with("I cannot rate this.")
    task = LlavaBenchTask(bench_dir, judge=HTTPJudge(chat_server.url, "j", timeout=5), unreadable_reviews="skip")
    summary = run_task(ScriptedModel(lambda p: "answer"), task, tmp_path, progress=False)
    assert summary["n_judged"] == 0 and summary["n_judge_failures"] == 3 and summary["overall"] is None
    record = read_results(tmp_path / "model" / "llava_bench" / "results.jsonl")[0]
    assert "does not start with two scores" in record["judge_error"] and record["review"] == "I cannot rate this."


def test_malformed_http_replies(chat_server):
    judge = HTTPJudge(chat_server.url, "j", timeout=5, retries=0)
    chat_server.script = lambda body: (200, "<html>not json</html>")
    with pytest.raises(JudgeError, match="did not reply with JSON"):
        judge("s", "u")
    chat_server.script = lambda body: (200, {"error": "oops"})
    with pytest.raises(JudgeError, match=r"without choices\[0\].message.content"):
        judge("s", "u")
    chat_server.script = lambda body: (401, {"error": "bad key"})
    with pytest.raises(JudgeError, match="HTTP 401"):
        judge("s", "u")


def test_retries_after_server_errors(chat_server):
    replies = iter(
        [(503, {"error": "busy"}), (500, {"error": "x"}), (200, {"choices": [{"message": {"content": "9 9"}}]})]
    )
    chat_server.script = lambda body: next(replies)
    assert HTTPJudge(chat_server.url, "j", timeout=5, retries=2, backoff=0.01)("s", "u") == "9 9"
    assert len(chat_server.requests) == 3


def test_timeout_is_retried_then_reported(chat_server, bench_dir, tmp_path):
    def slow(body):
        time.sleep(0.5)
        return 200, {"choices": [{"message": {"content": "8 8"}}]}

    chat_server.script = slow
    judge = HTTPJudge(chat_server.url, "j", timeout=0.1, retries=1, backoff=0.01)
    with pytest.raises(JudgeError, match="no answer after 2 attempt"):
        judge("s", "u")
    summary = run_task(ScriptedModel(lambda p: "a"), LlavaBenchTask(bench_dir, judge=judge), tmp_path, progress=False)
    assert summary["n_judge_failures"] == 3
    assert "no answer" in read_results(tmp_path / "model" / "llava_bench" / "results.jsonl")[0]["judge_error"]


def test_no_judge_by_default(bench_dir, tmp_path):
    summary = run_task(ScriptedModel(lambda p: "a"), LlavaBenchTask(bench_dir), tmp_path, progress=False)
    assert summary["n_judged"] == 0 and summary["overall"] is None
    assert read_results(tmp_path / "model" / "llava_bench" / "results.jsonl")[0]["judge_error"] == "no judge given"


def test_bad_judge_url():
    with pytest.raises(ValueError, match="must start with http"):
        HTTPJudge("127.0.0.1:8000", "j")


def test_hf_judge_with_a_tiny_causal_lm(bench_dir, tmp_path):
    tokenizer = build_byte_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    judge = HFJudge(LlamaForCausalLM(config).eval(), tokenizer, max_new_tokens=4)
    review = judge("system", "user")
    assert isinstance(review, str)
    # Random weights give an unreadable review: recorded per sample, never a crash.
    summary = run_task(ScriptedModel(lambda p: "a"), LlavaBenchTask(bench_dir, judge=judge), tmp_path, progress=False)
    assert summary["n"] == 3 and summary["n_judged"] + summary["n_judge_failures"] == 3
