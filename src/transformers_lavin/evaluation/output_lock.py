"""One `lavin-eval` run per output folder: two runs appending to one `results.jsonl` would mix their answers.

The lock is an OS lock (`fcntl.flock`) on `<output_dir>/.lavin-eval.lock`, which holds the pid of its holder for the
message. The OS releases it when the process ends, however it ends, so the file a killed run leaves behind is no
lock: the next run takes it over.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".lavin-eval.lock"


@contextlib.contextmanager
def output_folder_lock(output_dir: str | Path) -> Iterator[Path]:
    """
    Holds the lock on `output_dir` (created if missing) for the duration of the `with` block.

    Raises:
        `ValueError`: when another process holds it, naming its pid.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / LOCK_NAME
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise ValueError(
                f"another lavin-eval run (pid {holder}) is writing to {output_dir.resolve()}; wait for it to end or "
                "give this run another --output_dir (two runs in one folder would mix their results)."
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(descriptor)  # releases the lock
