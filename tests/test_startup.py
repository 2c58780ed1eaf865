"""What a user sees when the package, or any of its commands, starts: no other library's noise."""

import subprocess
import sys

import pytest

COMMANDS = ["lavin-demo", "lavin-train", "lavin-eval", "lavin-chat", "lavin-convert"]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=300)


def test_importing_the_package_prints_nothing():
    result = _run([sys.executable, "-c", "import transformers_lavin, peft, bitsandbytes"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""


@pytest.mark.parametrize("command", COMMANDS)
def test_no_command_prints_the_bitsandbytes_kernels_notice(command):
    scripts = sys.executable.rsplit("/", 1)[0]
    result = _run([f"{scripts}/{command}", "--help"])
    assert result.returncode == 0, result.stderr
    assert "kernels" not in result.stderr, result.stderr
