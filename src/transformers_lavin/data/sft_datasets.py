"""Training data for `lavin-train` from anywhere `datasets` reads: TRL's dataset formats and ScienceQA's Hub layout.

TRL's `SFTTrainer` takes, with an `images` column (a list per row, empty for a text-only row) or none:
- conversational language modeling: `messages` (roles and contents);
- conversational prompt-completion: `prompt` and `completion` as message lists;
- plain text: `text`, or `prompt` and `completion` as strings.
ScienceQA as it is on the Hub (the `derek-thomas/ScienceQA` schema: `image`, `question`, `choices`, `answer` as an
index, `hint`, `lecture`, `solution`, ...) is turned into LaVIN's reference prompt and answer strings.

Rows are read as `datasets` decodes them (its `Image` and `Json` features), whatever the file stored: a column whose
rows mix types (`images` as a list in one row and a string in another, or message parts of several shapes) comes as
`Json` and is checked row by row, so that a bad row is refused by its index before training starts.

A row may have several images: the chat template puts a conversation's images where their image parts stand (one
image goes to LaVIN's slot after BOS), and plain text marks each with `<image>`. [`check_images_per_row`] finds the
rows over an optional limit before training starts, and either refuses them (with a count) or drops them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets

from ..cli_errors import UserInputError
from .prompts import DEFAULT_PROMPT_FORMAT, build_prompt, split_prompt_format

logger = logging.getLogger(__name__)

# Files `datasets` reads by extension, with the builder that reads them.
DATA_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}
# The columns that mark ScienceQA's Hub layout.
SCIENCEQA_HUB_COLUMNS = frozenset({"image", "question", "choices", "answer", "hint", "lecture", "solution"})
DATASET_FORMATS = ("messages", "prompt_completion", "text", "scienceqa")
IMAGE_PART_TYPES = ("image", "text")


def load_sft_dataset(
    name: str, config: str | None = None, split: str = "train", allow_outside_images: bool = False
) -> datasets.Dataset:
    """
    One split of a dataset given by Hub id, local file (`.json`, `.jsonl`, `.parquet`, `.csv`, `.arrow`), local
    folder of such files, or folder written by `Dataset.save_to_disk`, with its images as `datasets.Image` features.

    Image columns that hold file paths (as LLaVA's JSON does; one path as a string is a list of one) are read as
    images; relative paths are resolved from the folder of the local data (the data file's folder, or the dataset
    folder), must name a file there, and paths that leave it (`..`, absolute paths, symbolic links out) are refused
    unless `allow_outside_images`: a data file from elsewhere must not make training read (and an adapter memorise)
    any file the user can read.

    Args:
        name (`str`): Hub id or local path.
        config (`str`, *optional*): the dataset configuration (Hub datasets with several).
        split (`str`, *optional*, defaults to `"train"`): the split to load.
        allow_outside_images (`bool`, *optional*, defaults to `False`): accept image paths outside the data folder.

    Returns:
        `datasets.Dataset`

    Raises:
        `UserInputError`: for a file `datasets` cannot parse, a split without rows, or an image entry that is no
            usable path (naming the row).
    """
    path = Path(name).expanduser()
    try:
        if path.is_file():
            builder = DATA_FILE_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise UserInputError(
                    f"--dataset_name {name!r}: cannot read {path.suffix!r} files; use one of "
                    f"{sorted(DATA_FILE_BUILDERS)}."
                )
            dataset = datasets.load_dataset(builder, data_files={split: str(path)}, split=split)
            base = path.parent
        elif path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
            try:
                loaded = datasets.load_from_disk(str(path))
            except IndexError:  # datasets cannot concatenate the no arrow files of an empty saved set
                raise UserInputError(f"--dataset_name {name!r}: the saved dataset has no rows.") from None
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise UserInputError(f"--dataset_name {name!r} has the splits {list(loaded)}, not {split!r}.")
                loaded = loaded[split]
            dataset, base = loaded, path
        else:
            # A Hub id, or a local folder of data files (datasets finds the splits from the file names).
            dataset = datasets.load_dataset(str(path) if path.is_dir() else name, config, split=split)
            base = path if path.is_dir() else None
    except (datasets.exceptions.DatasetGenerationError, StopIteration) as error:
        # `datasets` wraps the parser's error (pyarrow's names the row); an empty JSON file stops its schema probe.
        raise _unreadable(name, path, _root_cause(error)) from error
    except UserInputError:
        raise
    except ValueError as error:
        # Releases before 5 parse JSON lines while probing the schema, with a ValueError that names no row.
        cause = _bad_json_line(path) if path.is_file() and path.suffix.lower() == ".jsonl" else None
        if cause is None:
            raise
        raise _unreadable(name, path, cause) from error
    if len(dataset) == 0:
        raise UserInputError(f"--dataset_name {name!r}: the {split!r} split has no rows; give data to train on.")
    return _images_from_paths(dataset, base, allow_outside_images)


def _unreadable(name: str, path: Path, cause: str) -> UserInputError:
    return UserInputError(
        f"--dataset_name {name!r}: cannot read it ({cause}). Check that it is a {path.suffix or 'data'} file with one "
        "row per record (one JSON object per line for .jsonl)."
    )


def _bad_json_line(path: Path) -> str | None:
    """The first row of a JSON-lines file that does not parse, as pyarrow names it (rows count from 0)."""
    with path.open(encoding="utf-8", errors="replace") as lines:
        rows = (line for line in lines if line.strip())
        for row, line in enumerate(rows):
            try:
                json.loads(line)
            except json.JSONDecodeError as error:
                return f"JSON parse error: {error.msg} at column {error.colno} in row {row}"
    return None


def _root_cause(error: BaseException) -> str:
    messages = []
    while error is not None:
        messages.append(" ".join(str(error).split()))
        error = error.__cause__ or error.__context__
    informative = [message for message in messages if message and "An error occurred while generating" not in message]
    return informative[0].rstrip(".") if informative else "no rows"


def _image_entry(value: Any, base: Path | None, allow_outside: bool, row: int) -> Any:
    """One image entry as `datasets.Image` encodes it: a path (resolved from `base`), or `{"bytes", "path"}`."""
    if isinstance(value, Mapping) and (isinstance(value.get("bytes"), bytes) or isinstance(value.get("path"), str)):
        return (
            value if isinstance(value.get("bytes"), bytes) else _image_entry(value["path"], base, allow_outside, row)
        )
    if not isinstance(value, str):
        raise UserInputError(
            f"--dataset_name: row {row} has the image entry {value!r} ({type(value).__name__}); give each image as "
            "a file path relative to the data file."
        )
    if base is None:
        return value
    resolved = base / value  # an absolute `value` stays itself
    if not allow_outside and not resolved.resolve().is_relative_to(base.resolve()):
        raise UserInputError(
            f"--dataset_name: row {row} names the image {value!r}, which is outside the dataset folder "
            f"{base.resolve()}. Image paths must be relative to the data file's folder and stay inside it: move the "
            "images there, or pass --allow_outside_images if you trust the data."
        )
    if not resolved.is_file():
        raise UserInputError(
            f"--dataset_name: row {row} names the image {value!r}, but {resolved} is no file. Image paths are "
            "relative to the data file's folder."
        )
    return str(resolved)


def _is_image_feature(feature: Any) -> bool:
    return isinstance(feature, datasets.Image) or isinstance(getattr(feature, "feature", None), datasets.Image)


def _images_from_paths(dataset: datasets.Dataset, base: Path | None, allow_outside: bool) -> datasets.Dataset:
    column = next((name for name in ("images", "image") if name in dataset.column_names), None)
    if column is None or _is_image_feature(dataset.features[column]):
        return dataset

    def to_images(row: dict, index: int) -> dict:
        value = row[column]
        if column == "image":  # one image or none per row, as in ScienceQA's Hub layout
            return {column: None if value is None else _image_entry(value, base, allow_outside, index)}
        values = [] if value is None else value if isinstance(value, list) else [value]
        return {column: [_image_entry(item, base, allow_outside, index) for item in values]}

    feature = datasets.Image() if column == "image" else datasets.List(datasets.Image())
    features = datasets.Features({**dataset.features, column: feature})
    return dataset.map(to_images, with_indices=True, features=features, desc="reading image paths")


def dataset_format(dataset: datasets.Dataset) -> str:
    """
    Which of [`DATASET_FORMATS`] `dataset` is in: `"messages"`, `"prompt_completion"` (conversational or plain),
    `"text"` or `"scienceqa"` (the Hub layout).

    Raises:
        `ValueError`: for columns that fit no format, naming the columns each format needs.
    """
    columns = set(dataset.column_names)
    if "messages" in columns:
        return "messages"
    if {"prompt", "completion"} <= columns:
        return "prompt_completion"
    if "text" in columns:
        return "text"
    if SCIENCEQA_HUB_COLUMNS <= columns:
        return "scienceqa"
    raise ValueError(
        f"The dataset's columns {sorted(columns)} fit none of the formats lavin-train reads: `messages` "
        "(conversational), `prompt` + `completion` (conversational or strings), `text`, or ScienceQA's Hub layout "
        f"({', '.join(sorted(SCIENCEQA_HUB_COLUMNS))}); each may come with an `images` column."
    )


def _message_problem(message: Any) -> str | None:
    if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
        return f"the message {message!r} is not a {{'role': ..., 'content': ...}} mapping"
    content = message.get("content")
    if content is None or isinstance(content, str):
        return None
    if not isinstance(content, list):
        return f"a message's content is {type(content).__name__}, not a string or a list of parts"
    for part in content:
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind not in IMAGE_PART_TYPES or (kind == "text" and not isinstance(part.get("text"), str)):
            return f"the content part {part!r} is neither {{'type': 'text', 'text': str}} nor {{'type': 'image'}}"
    return None


def _conversation_problem(value: Any, column: str) -> str | None:
    if not isinstance(value, list) or not value:
        return f"`{column}` is {value!r}, not a list of {{'role', 'content'}} messages"
    return next(filter(None, map(_message_problem, value)), None)


def _row_problem(kind: str, row: Mapping[str, Any]) -> str | None:
    if kind == "messages":
        return _conversation_problem(row["messages"], "messages")
    if kind == "text":
        return None if isinstance(row["text"], str) else f"`text` is {row['text']!r}, not a string"
    prompt, completion = row["prompt"], row["completion"]
    if isinstance(prompt, str) and isinstance(completion, str):
        return None
    if isinstance(prompt, str) or isinstance(completion, str):
        return "`prompt` and `completion` must both be strings or both be message lists"
    return _conversation_problem(prompt, "prompt") or _conversation_problem(completion, "completion")


def check_rows(dataset: datasets.Dataset, what: str = "training") -> str:
    """
    The [`dataset_format`] of `dataset`, after checking that every row's columns of that format hold what TRL reads:
    strings, or lists of `{"role", "content"}` messages whose content is a string or a list of text and image parts.

    Raises:
        `UserInputError`: naming the first bad row and what is wrong with it.
    """
    kind = dataset_format(dataset)
    columns = {"messages": ["messages"], "text": ["text"], "prompt_completion": ["prompt", "completion"]}
    if kind not in columns:
        return kind
    first_shape = None
    for index, row in enumerate(dataset.select_columns(columns[kind])):  # decoded rows, no image read
        problem = _row_problem(kind, row)
        shape = "plain strings" if isinstance(row[columns[kind][0]], str) else "messages"
        first_shape = first_shape or shape
        if problem is None and shape != first_shape:
            problem = f"it holds {shape}, but row 0 holds {first_shape}; use one shape for every row"
        if problem is not None:
            raise UserInputError(f"{what} row {index}: {problem}. See docs/training.md for the dataset formats.")
    return kind


def scienceqa_hub_to_text(
    dataset: datasets.Dataset, bos_token: str, eos_token: str, prompt_format: str = DEFAULT_PROMPT_FORMAT
) -> datasets.Dataset:
    """
    ScienceQA's Hub layout as plain prompt-completion rows with LaVIN's reference strings ([`build_prompt`]): `prompt`
    (BOS + the prompt, ending in `Response:`), `completion` (the answer + EOS) and `images` (the image, or none).
    """
    split_prompt_format(prompt_format)

    def convert(row: Mapping[str, Any]) -> dict[str, Any]:
        problem = {**row, "choices": [str(choice) for choice in row["choices"]], "hint": row["hint"] or ""}
        problem["lecture"], problem["solution"] = row["lecture"] or "", row["solution"] or ""
        prompt, answer = build_prompt(problem, prompt_format)
        image = row["image"]
        return {"prompt": bos_token + prompt, "completion": answer + eos_token, "images": [image] if image else []}

    features = datasets.Features(
        {
            "prompt": datasets.Value("string"),
            "completion": datasets.Value("string"),
            "images": datasets.List(datasets.Image()),
        }
    )
    return dataset.map(convert, remove_columns=dataset.column_names, features=features, desc="ScienceQA prompts")


def conversation_text(messages: Any) -> str:
    """The text of a conversational column entry (its text parts joined), or the entry itself if it is a string."""
    if isinstance(messages, str):
        return messages
    parts = []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            parts.append(content)
        else:
            parts.extend(part["text"] for part in content if part.get("type") == "text" and part.get("text"))
    return "".join(parts)


def raw_prompt_completion(dataset: datasets.Dataset, bos_token: str, eos_token: str) -> datasets.Dataset:
    """
    Conversational prompt-completion rows as plain strings with no chat template: `bos + prompt` and
    `completion + eos`. ScienceQA is trained this way, as the reference concatenates its prompt and answer.
    """

    def convert(row: Mapping[str, Any]) -> dict[str, str]:
        return {
            "prompt": bos_token + conversation_text(row["prompt"]),
            "completion": conversation_text(row["completion"]) + eos_token,
        }

    return dataset.map(convert, desc="plain prompts")


def add_special_tokens_to_text(dataset: datasets.Dataset, bos_token: str, eos_token: str) -> datasets.Dataset:
    """
    Plain-text rows (`text`, or string `prompt`/`completion`) start with BOS (where the processor writes LaVIN's
    image prefix: TRL tokenizes without special tokens) and end with EOS (TRL adds none for vision data). Rows that
    already have them are left as they are.
    """
    columns = ("prompt", "completion") if "completion" in dataset.column_names else ("text", "text")
    if not isinstance(dataset[0][columns[0]], str):
        return dataset  # conversational: the chat template writes both

    def convert(row: Mapping[str, Any]) -> dict[str, str]:
        first, last = row[columns[0]], row[columns[1]] if columns[0] != columns[1] else None
        first = first if first.startswith(bos_token) else bos_token + first
        if last is None:
            return {columns[0]: first if first.endswith(eos_token) else first + eos_token}
        return {columns[0]: first, columns[1]: last if last.endswith(eos_token) else last + eos_token}

    return dataset.map(convert, desc="BOS and EOS")


def _image_counts(dataset: datasets.Dataset) -> list[int]:
    column = next((name for name in ("images", "image") if name in dataset.column_names), None)
    if column is None:
        return [0] * len(dataset)
    values = dataset.select_columns([column])
    if _is_image_feature(values.features[column]):
        # The same feature without decoding: counting reads no image.
        undecoded = datasets.Image(decode=False)
        values = values.cast_column(column, undecoded if column == "image" else datasets.List(undecoded))
    if column == "image":
        return [0 if value is None else 1 for value in values[column]]
    return [0 if value is None else len(value) for value in values[column]]


def _later_turn_single_images(dataset: datasets.Dataset) -> int:
    """Rows whose one image part sits in a message after the first user message."""
    if "messages" not in dataset.column_names:
        return 0
    count = 0
    # Decoded rows, not the arrow column: `datasets` stores message parts of mixed shapes (an image part beside text
    # parts, as in TRL's JSONL) as JSON strings that only its features decode.
    for messages in dataset.select_columns(["messages"])["messages"]:
        first_user = next((i for i, m in enumerate(messages) if m["role"] == "user"), None)
        turns = [
            index
            for index, message in enumerate(messages)
            if isinstance(message["content"], list)
            for part in message["content"]
            if part.get("type") == "image"
        ]
        count += len(turns) == 1 and turns[0] != first_user
    return count


def check_images_per_row(
    dataset: datasets.Dataset, max_images: int | None = None, drop: bool = False, what: str = "training"
) -> datasets.Dataset:
    """
    Finds the rows with more than `max_images` images before training starts: refuses them with a count, or drops
    them (with a warning saying how many) when `drop`. Warns about rows whose one image is attached to a later turn:
    LaVIN puts a row's one image in its slot after BOS (several images stay in their turns).

    Args:
        dataset (`datasets.Dataset`): the rows.
        max_images (`int`, *optional*): the most images a row may have; `None` sets no limit.
        drop (`bool`, *optional*, defaults to `False`): drop such rows instead of refusing the dataset.
        what (`str`): which split, for the messages.

    Returns:
        `datasets.Dataset`: `dataset`, without the rows over the limit when `drop`.

    Raises:
        `ValueError`: when rows have too many images and `drop` is false.
    """
    counts = _image_counts(dataset) if max_images is not None else []
    over = [index for index, count in enumerate(counts) if count > max_images]
    if over:
        shown = ", ".join(str(i) for i in over[:5]) + (", ..." if len(over) > 5 else "")
        message = (
            f"{len(over)} of {len(dataset)} {what} rows have more than {max_images} image"
            f"{'s' * (max_images != 1)} (rows {shown}), over --max_images_per_sample {max_images}."
        )
        if not drop:
            raise ValueError(
                f"{message} Pass --drop_unsupported_rows to train without them, raise the limit, or split them first."
            )
        logger.warning("%s Dropping them (--drop_unsupported_rows).", message)
        keep = set(range(len(dataset))) - set(over)
        dataset = dataset.select(sorted(keep))
        if len(dataset) == 0:
            raise ValueError(f"No {what} rows left after dropping the rows with too many images.")
    later = _later_turn_single_images(dataset)
    if later:
        logger.warning(
            "%d %s rows attach their one image to a later turn. A row's one image goes to LaVIN's image slot, right "
            "after BOS, and the turn's text stays where it is (as in the reference's chatbot demo).",
            later,
            what,
        )
    return dataset


def image_row_count(dataset: datasets.Dataset) -> int:
    """How many rows have an image."""
    return sum(count > 0 for count in _image_counts(dataset))


__all__ = [
    "DATASET_FORMATS",
    "add_special_tokens_to_text",
    "check_images_per_row",
    "check_rows",
    "conversation_text",
    "dataset_format",
    "image_row_count",
    "load_sft_dataset",
    "raw_prompt_completion",
    "scienceqa_hub_to_text",
]
