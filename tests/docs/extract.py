"""The small extractor: fenced code blocks of a Markdown file, and the commands of a shell block."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^```(?P<language>[\w+-]*)[^\n]*\n(?P<code>.*?)^```[ \t]*$", re.S | re.M)
SHELL = ("bash", "sh", "shell", "console")
PYTHON = ("python", "py")


@dataclass(frozen=True)
class Block:
    """One fenced block: its file, the line its fence opens on, its language (empty for text) and its code."""

    doc: str
    line: int
    language: str
    code: str

    @property
    def runnable(self) -> bool:
        return self.language in SHELL + PYTHON

    def __str__(self) -> str:
        return f"{self.doc}:{self.line} ({self.language or 'text'})"


def blocks(path: Path, root: Path) -> list[Block]:
    """Every fenced block of `path`, in document order."""
    text = path.read_text(encoding="utf-8")
    return [
        Block(str(path.relative_to(root)), text.count("\n", 0, match.start()) + 1, match["language"], match["code"])
        for match in FENCE.finditer(text)
    ]


def shell_commands(code: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comment lines and trailing comments dropped."""
    commands, current = [], ""
    for line in code.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        command = current + stripped
        current = ""
        # A trailing comment starts at " #" outside quotes (the docs quote no "#").
        commands.append(re.split(r"\s+#\s", command, maxsplit=1)[0].strip())
    return commands
