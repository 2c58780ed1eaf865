"""Two `lavin-eval` runs on one output folder: the second is refused, so their results cannot mix."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from transformers_lavin.evaluation.cli import main
from transformers_lavin.evaluation.output_lock import LOCK_NAME


def _model(tmp_path, started=None, seconds: float = 0.0):
    module = tmp_path / "model.py"
    module.write_text(
        "import pathlib, time\n"
        "def generate(images, prompts):\n"
        f"    if {str(started)!r} != 'None':\n"
        f"        pathlib.Path({str(started)!r}).touch()\n"
        f"    time.sleep({seconds})\n"
        "    return ['The answer is A.' for _ in prompts]\n"
    )
    return f"mine={module}:generate"


def test_a_second_run_on_a_busy_folder_is_refused_and_the_first_completes(scienceqa_dir, tmp_path, capsys):
    out, started = tmp_path / "runs", tmp_path / "started"
    task = ["--task", f"scienceqa={scienceqa_dir}", "--output_dir", str(out), "--no_progress"]
    first = subprocess.Popen(
        [sys.executable, "-m", "transformers_lavin.evaluation.cli", "--model", _model(tmp_path, started, 8), *task],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not started.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert started.exists(), first.communicate()
        (tmp_path / "second").mkdir()
        assert main(["--model", _model(tmp_path / "second"), *task, "--overwrite"]) == 1
        lines = [line for line in capsys.readouterr().err.splitlines() if "lavin-eval: error:" in line]
        assert (
            len(lines) == 1 and f"another lavin-eval run (pid {first.pid}) is writing to {out.resolve()}" in lines[0]
        )
    finally:
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    results = (out / "mine" / "scienceqa" / "results.jsonl").read_text().splitlines()
    assert len(results) == len({json.loads(line)["id"] for line in results}) == 6  # one run's answers, once each


def test_a_lock_file_left_by_a_dead_run_is_taken_over(scienceqa_dir, tmp_path):
    out = tmp_path / "runs"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / LOCK_NAME).write_text(dead.stdout)  # what a killed run leaves
    task = ["--task", f"scienceqa={scienceqa_dir}", "--output_dir", str(out), "--no_progress"]
    assert main(["--model", _model(tmp_path), *task]) == 0
    assert (out / "mine" / "scienceqa" / "summary.json").is_file()
