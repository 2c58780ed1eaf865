"""How the console scripts report bad input: one line on stderr (what, where, how to fix) and a non-zero exit.

A script's `main(argv)` is wrapped with [`user_errors`]. Errors that describe the user's input (a [`UserInputError`],
or the `ValueError`s and `OSError`s the package raises for files and values it cannot use) are printed as
`prog: error: message` and the script exits with status 1. `--debug` (or `LAVIN_DEBUG=1`) prints the traceback as
well. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import traceback
from collections.abc import Callable, Sequence

DEBUG_FLAG = "--debug"
DEBUG_ENVIRONMENT_VARIABLE = "LAVIN_DEBUG"
EXIT_USER_ERROR = 1

# What the package raises for input it cannot use. `OSError` covers missing files and full disks, `ImportError` an
# optional dependency the chosen option needs (its message says what to install).
USER_ERROR_TYPES: tuple[type[BaseException], ...] = (ValueError, OSError, ImportError)


class UserInputError(ValueError):
    """Input the package cannot use; the message says what is wrong, where, and how to fix it."""


def pop_debug_flag(argv: Sequence[str]) -> tuple[list[str], bool]:
    """
    Remove a bare `--debug` from `argv`. A `--debug` followed by a value (TrainingArguments' own `--debug
    underflow_overflow`) is left in place.
    """
    argv = list(argv)
    debug = os.environ.get(DEBUG_ENVIRONMENT_VARIABLE, "") not in ("", "0")
    for index, token in enumerate(argv):
        if token == DEBUG_FLAG and (index + 1 == len(argv) or argv[index + 1].startswith("-")):
            del argv[index]
            return argv, True
    return argv, debug


def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    """List `--debug` in a parser's help; the flag itself is taken out of `argv` by [`user_errors`]."""
    parser.add_argument(DEBUG_FLAG, action="store_true", help="On an error, print the traceback too.")


def one_line(error: BaseException) -> str:
    """The error's message on one line (a wrapped `OSError` keeps its file name)."""
    text = str(error) or type(error).__name__
    return " ".join(text.split())


def _decompression_bomb_error() -> type[BaseException] | None:
    # Only loaded PIL can raise it; the scripts' --help stays without PIL.
    image_module = sys.modules.get("PIL.Image")
    return getattr(image_module, "DecompressionBombError", None)


def _is_user_error(error: BaseException) -> bool:
    bomb = _decompression_bomb_error()
    return isinstance(error, USER_ERROR_TYPES) or (bomb is not None and isinstance(error, bomb))


def _advice(error: BaseException) -> str:
    """What to do, for errors raised by libraries with a message that does not say it."""
    bomb = _decompression_bomb_error()
    if bomb is not None and isinstance(error, bomb):
        return (
            " An image in the data is over PIL's decompression-bomb limit: remove or shrink it, or, if you trust it, "
            "raise PIL.Image.MAX_IMAGE_PIXELS (see docs/security.md)."
        )
    return ""


def user_errors(prog: str) -> Callable[[Callable[[list[str]], int | None]], Callable[[Sequence[str] | None], int]]:
    """
    Decorate a script's `main(argv)` so that bad input ends in one clear line and exit status 1.

    Args:
        prog (`str`): the script's name, the prefix of the message (`lavin-convert: error: ...`).

    Returns:
        A decorator; the decorated `main(argv=None)` reads `sys.argv[1:]` when `argv` is `None` and returns the exit
        status (the wrapped function's return value, or 0).
    """

    def decorate(main: Callable[[list[str]], int | None]) -> Callable[[Sequence[str] | None], int]:
        @functools.wraps(main)
        def wrapper(argv: Sequence[str] | None = None) -> int:
            argv, debug = pop_debug_flag(sys.argv[1:] if argv is None else argv)
            try:
                return main(argv) or 0
            except Exception as error:
                if not _is_user_error(error):
                    raise
                if debug:
                    traceback.print_exc()
                hint = "" if debug else f" (run again with {DEBUG_FLAG} for the traceback)"
                print(f"{prog}: error: {one_line(error)}{_advice(error)}{hint}", file=sys.stderr)
                return EXIT_USER_ERROR

        return wrapper

    return decorate


__all__ = [
    "UserInputError",
    "user_errors",
    "pop_debug_flag",
    "add_debug_argument",
    "one_line",
    "USER_ERROR_TYPES",
    "EXIT_USER_ERROR",
]
