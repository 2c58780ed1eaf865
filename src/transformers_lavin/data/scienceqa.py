"""Reader for ScienceQA in its official on-disk layout, producing TRL-ready conversational datasets.

Layout (as released by the ScienceQA authors and read by LaVIN):
```
data_root/
  problems.json       {qid: {"question", "choices", "answer", "hint", "image", "lecture", "solution", "subject",
                             "grade", "split", ...}}
  pid_splits.json     {"train": [qid, ...], "val": [...], "test": [...], ...}
  captions.json       optional, {"captions": {qid: text}}
  images/{split}/{qid}/image.png
```
"""

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import datasets
from PIL import Image, UnidentifiedImageError

from .prompts import DEFAULT_PROMPT_FORMAT, OPTION_LETTERS, answer_letter, build_prompt, split_prompt_format

# Fields `build_prompt` and the metadata columns read from every problem.
REQUIRED_PROBLEM_FIELDS = ("question", "choices", "answer", "hint", "image", "lecture", "solution", "subject", "grade")
# Text fields and whether they may be null (ScienceQA writes "" or null for an absent hint, lecture or solution).
TEXT_FIELDS = {
    "question": False,
    "subject": False,
    "grade": False,
    "hint": True,
    "lecture": True,
    "solution": True,
}

# The largest JSON file (`problems.json`, `pid_splits.json`, `captions.json`) the reader loads; it is read whole into
# memory, and parsed into Python objects several times its size. The real `problems.json` is about 40 MB. Raise it
# with `load_scienceqa(..., max_json_bytes=N)` or by setting this attribute.
MAX_JSON_BYTES = 512 * 2**20

_TEXT = {"type": datasets.Value("string"), "text": datasets.Value("string")}
_MESSAGES = datasets.List({"role": datasets.Value("string"), "content": datasets.List(_TEXT)})
_METADATA_FEATURES = {
    "id": datasets.Value("string"),
    "answer": datasets.Value("string"),
    "choices": datasets.List(datasets.Value("string")),
    "subject": datasets.Value("string"),
    "grade": datasets.Value("string"),
    "has_text": datasets.Value("bool"),
    "has_image": datasets.Value("bool"),
    "no_context": datasets.Value("bool"),
    "context_categories": datasets.List(datasets.Value("string")),
}


def _read_json(path: Path, what: str, max_bytes: int) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"ScienceQA {what} not found: {path}. Point `data_root` at the ScienceQA data folder.")
    with path.open("rb") as f:
        data = f.read(max_bytes + 1)  # never more than the bound, even if the file grows while it is read
    if len(data) > max_bytes:
        raise ValueError(
            f"ScienceQA {what} {path} is larger than {max_bytes:,} bytes, the bound on JSON files read whole into "
            "memory (the real problems.json is about 40 MB). If you trust it, raise the bound: "
            "load_scienceqa(..., max_json_bytes=N), or `--task_option scienceqa.max_json_bytes=N` for lavin-eval, or "
            "transformers_lavin.data.scienceqa.MAX_JSON_BYTES = N."
        )
    try:
        return json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"ScienceQA {what} {path} is not valid JSON ({e}); re-download or regenerate it.") from e
    except RecursionError:
        raise ValueError(
            f"ScienceQA {what} {path} is nested too deeply to read (more levels than Python's recursion limit); "
            "ScienceQA files are a few levels deep, so this one is damaged or not a ScienceQA file."
        ) from None


def _qid(value: Any, position: int, path: Path, split: str) -> str:
    # A qid names a folder under images/, so it must be a plain name: no separators, no "..".
    text = str(value)
    if (
        isinstance(value, bool)
        or not isinstance(value, (str, int))
        or text in ("", ".", "..")
        or "/" in text
        or "\\" in text
    ):
        raise ValueError(
            f"{path}: entry {position} of split {split!r} is {value!r}; every entry must be a problem id (a "
            "non-empty string such as '42', without path separators)."
        )
    return text


def _inside(data_root: Path, parts: list[str], qid: str) -> Path:
    """`data_root / parts...`, refused when a part is absolute or climbs out of `data_root` with `..`."""
    path = data_root.joinpath(*parts)
    relative = os.path.normpath(os.path.join(*parts))
    if any(os.path.isabs(part) for part in parts) or relative == ".." or relative.startswith(".." + os.sep):
        raise ValueError(
            f"ScienceQA problem {qid!r} points outside the data folder {str(data_root)!r}: its image path "
            f"{os.path.join(*parts)!r} is absolute or climbs out with '..'. Image paths must stay inside the "
            "data folder (images/<split>/<qid>/<file>); fix the record."
        )
    return path


def check_problem_fields(problem: Mapping[str, Any], where: str) -> None:
    """
    Checks the types of the fields a ScienceQA prompt and its metadata are built from.

    Args:
        problem (`Mapping[str, Any]`): A problem (a `problems.json` entry or a row of the Hub table).
        where (`str`): The problem, for messages (e.g. `"problems.json: problem '42'"`).

    Raises:
        `ValueError`: naming the problem and the field: a `question`, `subject` or `grade` that is not a string, a
        `hint`, `lecture` or `solution` that is neither a string nor null, `choices` that are not a list of 1 to 5
        strings, or an `answer` that is not an index into them.
    """
    for field, nullable in TEXT_FIELDS.items():
        value = problem.get(field)
        if not isinstance(value, str) and not (nullable and value is None):
            expected = "a string or null" if nullable else "a string"
            raise ValueError(f"{where} has {field!r} {value!r:.60}; expected {expected}. Fix the record.")
    choices = problem.get("choices")
    if not isinstance(choices, (list, tuple)) or not 0 < len(choices) <= len(OPTION_LETTERS):
        raise ValueError(
            f"{where} has 'choices' {choices!r:.80}; expected a list of 1 to {len(OPTION_LETTERS)} strings."
        )
    for index, choice in enumerate(choices):
        if not isinstance(choice, str):
            raise ValueError(f"{where} has 'choices' entry {index} {choice!r:.40}; every choice must be a string.")
    try:
        answer_letter(problem)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def _check_problem(qid: str, problem: Any, path: Path) -> None:
    if not isinstance(problem, Mapping):
        raise ValueError(f"{path}: problem {qid!r} must be a JSON object, got {type(problem).__name__}.")
    missing = [field for field in REQUIRED_PROBLEM_FIELDS if field not in problem]
    if missing:
        raise ValueError(f"{path}: problem {qid!r} lacks the field(s) {missing}; every problem needs these fields.")
    where = f"{path}: problem {qid!r}"
    check_problem_fields(problem, where)
    for field in ("image", "split"):  # they name files under images/
        value = problem.get(field)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{where} has {field!r} {value!r:.60}; expected a file or folder name, or null.")


def context_categories(problem: Mapping[str, Any]) -> list[str]:
    """
    The context categories a problem counts in for ScienceQA's accuracy table.

    Following ScienceQA's scorer (also LaVIN's `eval.py`): `TXT` if the problem has a non-empty hint, `IMG` if it has an
    image (both when it has both), `NO` if it has neither.
    """
    categories = [name for name, present in (("TXT", problem["hint"]), ("IMG", problem["image"])) if present]
    return categories or ["NO"]


def _image_path(data_root: Path, split: str, qid: str, problem: Mapping[str, Any]) -> Path:
    # Images live under the problem's own split ("train", "val", "test"); a derived split such as "trainval" or
    # "minival" has no image folder of its own.
    image_split = problem.get("split") or split
    return _inside(data_root, ["images", image_split, qid, problem["image"]], qid)


def _check_image(path: Path, qid: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(
            f"Image of ScienceQA problem {qid!r} not found: {path}. Download the ScienceQA images into "
            f"images/<split>/<qid>/ under `data_root`."
        )
    try:
        # Reads the header only; the pixels are decoded lazily by `datasets` when a row is accessed.
        with Image.open(path) as image:
            image.size  # noqa: B018
    except Image.DecompressionBombError as e:
        raise ValueError(
            f"Image of ScienceQA problem {qid!r} at {path} is refused by PIL's decompression-bomb guard ({e}). Shrink "
            "or remove it, or, if you trust it, raise PIL.Image.MAX_IMAGE_PIXELS."
        ) from e
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"Image of ScienceQA problem {qid!r} at {path} cannot be read as an image ({e}).") from e


def load_scienceqa(
    data_root: str | Path,
    split: str = "train",
    prompt_format: str = DEFAULT_PROMPT_FORMAT,
    use_caption: bool = False,
    captions_file: str | Path | None = None,
    format: Literal["prompt_completion", "messages"] = "prompt_completion",
    max_json_bytes: int | None = None,
) -> datasets.Dataset:
    """
    Loads one split of ScienceQA as a conversational vision-language dataset for TRL's `SFTTrainer`.

    Each row has:
    - `prompt` and `completion` (with `format="prompt_completion"`): a user turn whose content is an image placeholder
      (image questions only) and the prompt text, and an assistant turn with the answer text, so TRL computes the loss
      on the answer only, as LaVIN does. With `format="messages"`, one `messages` column holds both turns instead.
    - `images`: a list with the problem's image (decoded lazily to an RGB PIL image), empty for text-only problems.
    - metadata for evaluation: `id` (the qid), `answer` (the letter), `choices`, `subject`, `grade`, and the context
      flags of ScienceQA's scorer, `has_text` (non-empty hint), `has_image`, `no_context` (neither), also given as
      `context_categories` (a subset of `["TXT", "IMG"]`, or `["NO"]`).

    The prompt and answer texts are those of [`build_prompt`].

    Args:
        data_root (`str` or `Path`):
            Folder with `problems.json`, `pid_splits.json` and `images/`.
        split (`str`, *optional*, defaults to `"train"`):
            A key of `pid_splits.json` (officially `train`, `val`, `test`, `trainval`, `minitrain`, `minival`,
            `minitest`).
        prompt_format (`str`, *optional*, defaults to `"QCM-ALE"`):
            One of [`PROMPT_FORMATS`].
        use_caption (`bool`, *optional*, defaults to `False`):
            Whether to add each image's caption to the context.
        captions_file (`str` or `Path`, *optional*):
            The captions JSON (`{"captions": {qid: text}}`); defaults to `data_root/captions.json`. Read only with
            `use_caption`; problems without a caption get none.
        format (`str`, *optional*, defaults to `"prompt_completion"`):
            `"prompt_completion"` or `"messages"`.
        max_json_bytes (`int`, *optional*):
            The largest JSON file read (they are read whole into memory); defaults to [`MAX_JSON_BYTES`] (512 MiB).

    Raises:
        `ValueError`: naming the problem and the field for a malformed problem (see [`check_problem_fields`]), and
        naming the id for an id listed twice in the split.

    Returns:
        `datasets.Dataset`: one row per problem of the split, in the order of `pid_splits.json`.
    """
    split_prompt_format(prompt_format)  # fail early on an unknown format
    if format not in ("prompt_completion", "messages"):
        raise ValueError(f"Unknown output format {format!r}; use 'prompt_completion' or 'messages'.")
    max_bytes = MAX_JSON_BYTES if max_json_bytes is None else max_json_bytes
    data_root = Path(data_root)
    problems_path, splits_path = data_root / "problems.json", data_root / "pid_splits.json"
    problems = _read_json(problems_path, "problems file", max_bytes)
    if not isinstance(problems, Mapping):
        raise ValueError(f"{problems_path} must hold a JSON object mapping qid to problem.")
    pid_splits = _read_json(splits_path, "split file", max_bytes)
    if not isinstance(pid_splits, Mapping) or not all(isinstance(v, list) for v in pid_splits.values()):
        raise ValueError(f"{splits_path} must hold a JSON object mapping split name to a list of qids.")
    if split not in pid_splits:
        raise ValueError(f"Split {split!r} not found in {splits_path}; available splits: {', '.join(pid_splits)}.")

    captions: Mapping[str, str] = {}
    if use_caption:
        captions_path = Path(captions_file) if captions_file is not None else data_root / "captions.json"
        caption_data = _read_json(captions_path, "captions file", max_bytes)
        if not isinstance(caption_data, Mapping) or not isinstance(caption_data.get("captions"), Mapping):
            raise ValueError(f"{captions_path} must hold a JSON object {{'captions': {{qid: text}}}}.")
        captions = caption_data["captions"]

    columns: dict[str, list[Any]] = {name: [] for name in ("prompt", "completion", "messages", "images")}
    columns.update({name: [] for name in _METADATA_FEATURES})
    seen: dict[str, int] = {}
    for position, value in enumerate(pid_splits[split]):
        qid = _qid(value, position, splits_path, split)
        if qid in seen:
            raise ValueError(
                f"{splits_path}: split {split!r} lists the id {qid!r} twice (entries {seen[qid]} and {position}); "
                "each problem may appear once in a split. Remove the duplicate."
            )
        seen[qid] = position
        if qid not in problems:
            raise ValueError(
                f"{splits_path} lists qid {qid!r} in split {split!r}, but {problems_path} has no such problem."
            )
        problem = problems[qid]
        _check_problem(qid, problem, problems_path)
        if use_caption:
            caption = captions.get(qid) or ""
            if not isinstance(caption, str):
                raise ValueError(f"{captions_path}: the caption of problem {qid!r} is {caption!r:.40}, not a string.")
            problem = {**problem, "caption": caption}
        prompt_text, answer_text = build_prompt(problem, prompt_format, use_caption)

        images = []
        if problem["image"]:
            path = _image_path(data_root, split, qid, problem)
            _check_image(path, qid)
            images.append({"path": str(path), "bytes": None})
        image_part = [{"type": "image", "text": None}] if images else []
        user = {"role": "user", "content": [*image_part, {"type": "text", "text": prompt_text}]}
        assistant = {"role": "assistant", "content": [{"type": "text", "text": answer_text}]}
        columns["prompt"].append([user])
        columns["completion"].append([assistant])
        columns["messages"].append([user, assistant])
        columns["images"].append(images)

        categories = context_categories(problem)
        columns["id"].append(qid)
        columns["answer"].append(answer_letter(problem))
        columns["choices"].append([str(choice) for choice in problem["choices"]])
        columns["subject"].append(problem["subject"])
        columns["grade"].append(problem["grade"])
        columns["has_text"].append("TXT" in categories)
        columns["has_image"].append("IMG" in categories)
        columns["no_context"].append(categories == ["NO"])
        columns["context_categories"].append(categories)

    text_columns = ["prompt", "completion"] if format == "prompt_completion" else ["messages"]
    features = datasets.Features(
        {
            **{name: _MESSAGES for name in text_columns},
            "images": datasets.List(datasets.Image(mode="RGB")),
            **_METADATA_FEATURES,
        }
    )
    return datasets.Dataset.from_dict({name: columns[name] for name in features}, features=features)
