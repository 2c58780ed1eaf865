"""Where a task's data comes from: the benchmark's official files, or the Hub copy users download with `datasets`.

Every task takes a `layout` option: `"official"` (the benchmark's own files), `"hub"` (a table in the schema of the
task's Hub copy, see docs/evaluation.md) or `"auto"` (the default): a Hub id that is not a local path, a `.parquet`
file, or a directory holding `.parquet` files is read as a Hub table, anything else as the official layout. A Hub
table is read with `datasets`: a Hub id with `load_dataset(id, split=split)` (from the local cache when the user has
downloaded it; set `HF_DATASETS_OFFLINE=1` to forbid downloads), a local `.parquet`, `.json` or `.jsonl` file, or a
directory of parquet files, as is.

Every image path read from a data file must resolve inside its root directory; an absolute path or a `../` that
leaves it is refused with an error naming the record.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import datasets
from PIL import Image

LAYOUTS = ("auto", "official", "hub")
_FILE_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json"}


def resolve_inside(root: str | Path, relative: str | Path, where: str) -> Path:
    """
    `root / relative`, refused unless it lies inside `root` after resolving `..` and symbolic links (an absolute
    `relative` is taken as is, and must lie inside too).

    Args:
        root (`str | Path`): The directory the data's paths are relative to.
        relative (`str | Path`): A path read from a data file.
        where (`str`): The record it was read from, for the message.

    Raises:
        `ValueError`: naming the record, the path and the root.
    """
    root = Path(root)
    path = root / relative
    base = root.resolve()
    if not path.resolve().is_relative_to(base):
        raise ValueError(
            f"{where} names the image {str(relative)!r}, which is outside the data directory {base}. Image paths in "
            "data files must be relative and stay inside that directory; fix the record or move the images there."
        )
    return path


def use_hub_layout(data: str | Path, layout: str) -> bool:
    """Whether `data` is read as a Hub table under the `layout` option (see the module docstring)."""
    if layout not in LAYOUTS:
        raise ValueError(f"Unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}.")
    if layout != "auto":
        return layout == "hub"
    path = Path(data)
    if path.exists():
        return path.suffix == ".parquet" or (path.is_dir() and any(path.rglob("*.parquet")))
    return str(data).count("/") == 1 and not str(data).startswith((".", "/"))


def load_hub_table(data: str | Path, split: str, columns: Sequence[str], what: str) -> datasets.Dataset:
    """
    Reads a table in a Hub schema with `datasets`, checking that it has `columns`.

    Args:
        data (`str | Path`): A Hub id, a `.parquet`/`.json`/`.jsonl` file, or a directory of parquet files.
        split (`str`): The split to read from a Hub id (a local file is read whole).
        columns (`Sequence[str]`): The columns the task needs.
        what (`str`): The dataset, for messages (e.g. `"POPE (lmms-lab/POPE schema)"`).
    """
    path = Path(data)
    if path.is_file():
        builder = _FILE_BUILDERS.get(path.suffix)
        if builder is None:
            raise ValueError(f"{what}: cannot read {path}; give a .parquet, .json or .jsonl file.")
        table = datasets.load_dataset(builder, data_files=str(path), split="train")
    elif path.is_dir():
        files = sorted(str(p) for p in path.rglob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"{what}: no .parquet files under {path}.")
        table = datasets.load_dataset("parquet", data_files=files, split="train")
    else:
        table = datasets.load_dataset(str(data), split=split)
    missing = [name for name in columns if name not in table.column_names]
    if missing:
        raise ValueError(
            f"{what} at {data} lacks the column(s) {missing} (it has {table.column_names}). Check that it is in the "
            "schema this task reads (see docs/evaluation.md)."
        )
    # Images stay encoded until the runner needs them, batch by batch.
    for name, feature in table.features.items():
        if isinstance(feature, datasets.Image):
            table = table.cast_column(name, datasets.Image(decode=False))
    return table


def table_root(data: str | Path) -> Path:
    """The directory relative image paths of a local table are read from."""
    path = Path(data)
    return path.parent if path.is_file() else path


@dataclass(frozen=True)
class TableImage:
    """
    An image stored in a row of a `datasets` table, decoded only when the runner asks for it.

    Args:
        table (`datasets.Dataset`): The table (memory-mapped; nothing is copied).
        row (`int`): The row.
        column (`str`): The image column (`datasets.Image(decode=False)`: `{"bytes", "path"}`).
        root (`Path`): Where a path-only image is looked up; it must stay inside.
    """

    table: datasets.Dataset
    row: int
    column: str
    root: Path

    def load(self) -> Any:
        value = self.table[self.row][self.column]
        if value is None:
            raise ValueError(f"row {self.row} has no image in column {self.column!r}")
        if isinstance(value, dict) and value.get("bytes"):
            return Image.open(BytesIO(value["bytes"]))
        path = value.get("path") if isinstance(value, dict) else value
        return str(resolve_inside(self.root, path, f"Row {self.row} of the table"))

    def __str__(self) -> str:
        return f"row {self.row}, column {self.column!r}"
