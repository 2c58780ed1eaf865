"""Run one benchmark function in a fresh Python process and get its JSON result back.

Memory is measured this way: a fresh process holds one model only, and its peak is its own. The child is
`python -m benchmarks.child '<json>'`, run from the repository root; it prints its result as the last stdout line.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
_RESULT_PREFIX = "BENCH_RESULT "


def run_in_child(function: str, timeout: float | None = None, **kwargs) -> dict:
    """
    Call `function` ("module:name", e.g. "benchmarks.bench_training:training_memory") with JSON-serialisable
    `kwargs` in a new interpreter and return its result (a JSON-serialisable dict).
    """
    request = json.dumps({"function": function, "kwargs": kwargs})
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.child", request],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith(_RESULT_PREFIX)]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(
            f"Benchmark child {function} failed (exit {completed.returncode}):\n{completed.stderr[-4000:]}"
        )
    return json.loads(lines[-1][len(_RESULT_PREFIX) :])


def main() -> None:
    request = json.loads(sys.argv[1])
    module_name, _, name = request["function"].partition(":")
    function = getattr(importlib.import_module(module_name), name)
    result = function(**request["kwargs"])
    print(_RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
