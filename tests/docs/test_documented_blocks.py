"""Every fenced code block of README.md and docs/*.md runs as written, on tiny local stand-ins (stand_ins.py), except
the few listed with their reason in not_runnable.py. Blocks without a language are text (file trees, templates).

Each document's blocks run in document order in one fresh working directory, as a reader following the page would:
Python blocks in a fresh interpreter each, shell blocks command by command through bash, with the package's console
scripts on PATH. Shell commands that serve (lavin-chat, lavin-serve) are started on a free port, checked to answer, and stopped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from extract import PYTHON, blocks, shell_commands
from not_runnable import BLOCKS, COMMANDS
from stand_ins import ENVIRONMENT, ONE_THREAD, PATHS, SERVERS, TEXT, build

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ALL_BLOCKS = [block for doc in DOCS for block in blocks(doc, ROOT)]


def _listed_block(block) -> str | None:
    return next((reason for (doc, text), reason in BLOCKS.items() if doc == block.doc and text in block.code), None)


def _listed_command(doc: str, command: str) -> str | None:
    return next((reason for (d, start), reason in COMMANDS.items() if d == doc and command.startswith(start)), None)


def _to_run(doc: Path):
    name = str(doc.relative_to(ROOT))
    return [block for block in ALL_BLOCKS if block.doc == name and block.runnable and not _listed_block(block)]


def _mentions(text: str, path: str) -> bool:
    return re.search(rf"(?<![\w/.-])(\./)?{re.escape(path)}(?![\w-])", text) is not None


class _Judge(BaseHTTPRequestHandler):
    """An OpenAI-compatible judge on loopback that rates every answer "8 7"."""

    def do_POST(self):  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"choices": [{"message": {"role": "assistant", "content": "8 7\nA fair answer."}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def judge_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("stand-ins")


def _workspace(doc: Path, directory: Path, store: Path) -> Path:
    text = doc.read_text(encoding="utf-8")
    for path, kind in PATHS.items():
        if _mentions(text, path):
            source, target = build(kind, store), directory / path
            target.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)
    return directory


def _environment(workspace: Path) -> dict[str, str]:
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    python_path = os.pathsep.join(filter(None, [str(workspace), os.environ.get("PYTHONPATH")]))
    return {**ONE_THREAD, **os.environ, **ENVIRONMENT, "PATH": path, "PYTHONPATH": python_path}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve(command: str, workspace: Path, env: dict[str, str], where: str) -> None:
    port = _free_port()
    server = subprocess.Popen(
        ["bash", "-c", f"exec {command} --port {port}"], cwd=workspace, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, f"{where}: `{command}` stopped:\n{server.stdout.read()[-3000:]}"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{SERVERS[command.split()[0]]}", timeout=5)
                return
            except OSError:
                assert time.monotonic() < deadline, f"{where}: `{command}` did not serve"
                time.sleep(1)
    finally:
        server.terminate()
        server.wait(timeout=30)


def _run(args: list[str], workspace: Path, env: dict[str, str], where: str) -> None:
    result = subprocess.run(args, cwd=workspace, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (
        f"{where} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    )


@pytest.mark.parametrize("doc", [doc for doc in DOCS if _to_run(doc)], ids=lambda doc: doc.name)
def test_documented_blocks_run_as_written(doc, tmp_path, store, judge_url):
    workspace = _workspace(doc, tmp_path, store)
    env = _environment(workspace)
    for block in _to_run(doc):
        code = block.code
        for text, replacement in TEXT.items():
            code = code.replace(text, replacement.format(judge_url=judge_url))
        if block.language in PYTHON:
            _run([sys.executable, "-c", code], workspace, env, str(block))
            continue
        for command in shell_commands(code):
            if _listed_command(block.doc, command):
                continue
            if command.split()[0] in SERVERS:
                _serve(command, workspace, env, f"{block}: {command}")
            else:
                _run(["bash", "-c", command], workspace, env, f"{block}: {command}")


def test_every_listed_exception_still_matches_the_docs():
    for (doc, text), reason in BLOCKS.items():
        matches = [block for block in ALL_BLOCKS if block.doc == doc and text in block.code]
        assert len(matches) == 1, f"{doc}: {text!r} ({reason}) matches {len(matches)} blocks"
    for (doc, start), reason in COMMANDS.items():
        commands = [c for b in ALL_BLOCKS if b.doc == doc and b.runnable for c in shell_commands(b.code)]
        assert any(c.startswith(start) for c in commands), f"{doc}: no command starts with {start!r} ({reason})"


def test_the_list_of_blocks_that_cannot_run_is_short():
    runnable = [block for block in ALL_BLOCKS if block.runnable]
    assert len(BLOCKS) <= len(runnable) // 2, [str(block) for block in runnable if _listed_block(block)]
