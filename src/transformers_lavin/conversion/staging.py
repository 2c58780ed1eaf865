"""All-or-nothing writes: outputs are built in hidden temporary siblings and moved into place only at the end.

What is moved into place gets the modes a plain `open()` / `mkdir()` would have given it under the process umask:
temporary directories are created 0700, and safetensors (0.8) writes its files 0600, which would leave a team on
shared storage unable to read a model one of them wrote.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .reference_format import LavinConversionError


def check_target(path: Path, overwrite: bool) -> None:
    """Refuse to replace an existing, non-empty output unless `overwrite`."""
    if path.exists() and not overwrite and (path.is_file() or any(path.iterdir())):
        raise LavinConversionError(
            f"{str(path)!r} already exists and is not empty; pass --overwrite (overwrite=True in Python) to replace it."
        )


@contextmanager
def staged_outputs(targets: list[Path], overwrite: bool = False):
    """
    Yield one temporary directory per target (beside it, on the same file system). When the block ends without an
    error, each is moved onto its target; on any error, everything temporary is removed and nothing is written.
    """
    for target in targets:
        check_target(target, overwrite)
    temporaries = []
    try:
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            temporaries.append(Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent)))
        yield temporaries
        for temporary, target in zip(temporaries, targets, strict=True):
            replace(temporary, target)
    finally:
        for temporary in temporaries:
            if temporary.exists():
                shutil.rmtree(temporary, ignore_errors=True)


def current_umask() -> int:
    """The process umask (read by setting it, so it is set straight back)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def apply_umask(path: str | Path) -> None:
    """
    Give `path` (and everything under a directory) the modes that creating it anew would: `0o666` for files (`0o777`
    for directories and executables) minus the umask. Symbolic links are left alone.
    """
    mask = current_umask()
    path = Path(path)
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        if item.is_symlink():
            continue
        full = 0o777 if item.is_dir() or item.stat().st_mode & 0o100 else 0o666
        os.chmod(item, full & ~mask)


def replace(source: Path, target: Path) -> None:
    """
    Move `source` onto `target`, removing an old `target` only once the new one is in place; `source` first gets the
    modes of the umask ([`apply_umask`]).
    """
    apply_umask(source)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(source, target)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()
