"""Every console script: bad input gives one clear line and a non-zero exit, no traceback; `--debug` shows it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from transformers_lavin.cli_errors import UserInputError, pop_debug_flag, user_errors


@user_errors("lavin-example")
def _main(argv: list[str]) -> int:
    if argv == ["bad"]:
        raise UserInputError("the value 'bad' in argv[0] is not allowed.\nPass 'good'.")
    if argv == ["missing"]:
        open("/nonexistent/file.json")  # noqa: SIM115
    if argv == ["bug"]:
        raise KeyError("internal")
    return 0


def test_user_error_is_one_line_and_status_1(capsys):
    assert _main(["bad"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("lavin-example: error: the value 'bad' in argv[0] is not allowed. Pass 'good'.")


def test_missing_file_names_it(capsys):
    assert _main(["missing"]) == 1
    assert "/nonexistent/file.json" in capsys.readouterr().err


def test_debug_shows_the_traceback(capsys):
    assert _main(["bad", "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_bugs_keep_their_traceback():
    with pytest.raises(KeyError):
        _main(["bug"])


def test_debug_with_a_value_is_left_for_training_arguments():
    assert pop_debug_flag(["--debug", "underflow_overflow"]) == (["--debug", "underflow_overflow"], False)
    assert pop_debug_flag(["--x", "1", "--debug"]) == (["--x", "1"], True)
    assert pop_debug_flag(["--debug", "--x"]) == (["--x"], True)


@pytest.mark.parametrize(
    ("module", "argv", "expected"),
    [
        ("transformers_lavin.conversion.cli", ["export", "--adapter-dir", "/nonexistent", "--output", "x.pth"],
         "is not an adapter directory"),
        ("transformers_lavin.scripts.sft", ["--tiny", "--bf16", "false", "--output_dir", "{tmp}/out", "--dataset_dir", "{tmp}/none"],
         "holds no problems.json"),
        ("transformers_lavin.chat.app", ["--port", "70000"], "--port must be"),
        ("transformers_lavin.chat.app", ["--max-new-tokens", "0"], "--max_new_tokens must be"),
    ],
)  # fmt: skip
def test_console_scripts_print_one_line(tmp_path, module, argv, expected):
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    result = subprocess.run(
        [sys.executable, "-m", module, *argv], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "error:" in last and expected in last, result.stderr
    assert not (tmp_path / "out").exists()  # nothing written
