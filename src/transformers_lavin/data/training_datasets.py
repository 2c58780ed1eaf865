"""The training and evaluation splits `lavin-train` trains on, from its options, in one call ([`load_training_datasets`]).

The same call serves the Python API: give it the script's argument dataclasses (or any object with their fields) and
it checks the options, reads the data (a `--dataset_name`, ScienceQA in its official layout, or the synthetic set it
writes), checks every row and image, and, given the processor, returns the rows as LaVIN trains on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets

from ..cli_errors import UserInputError
from .prompts import split_prompt_format
from .scienceqa import load_scienceqa
from .sft_datasets import (
    add_special_tokens_to_text,
    check_images_per_row,
    check_rows,
    load_sft_dataset,
    raw_prompt_completion,
    scienceqa_hub_to_text,
)
from .synthetic import write_synthetic_scienceqa

if TYPE_CHECKING:
    from trl import SFTConfig

# Suffixes of the data files `--dataset_name` reads; a name ending in one is a local file, never a Hub id.
DATA_FILE_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv", ".arrow")
SYNTHETIC_DATASET_NAME = "synthetic ScienceQA-style set (lavin-train --synthetic)"


def looks_local(name: str, suffixes: tuple[str, ...] = ()) -> bool:
    """
    Whether `name` can only be a local path, not a Hub id (`namespace/name`): it exists, starts with `.`, `/` or `~`,
    has more than one `/`, or ends in one of `suffixes`.
    """
    return (
        Path(name).expanduser().exists()
        or name.startswith((".", "/", "~"))
        or name.count("/") > 1
        or name.lower().endswith(tuple(suffixes))
    )


def check_dataset_arguments(script_args: Any) -> None:
    """Exactly one data source (`dataset_name`, `dataset_dir` or `synthetic`); a local one must exist."""
    synthetic, dataset_dir, name = script_args.synthetic, script_args.dataset_dir, script_args.dataset_name
    if sum([name is not None, dataset_dir is not None and not synthetic, synthetic]) != 1:
        raise UserInputError(
            "Give exactly one dataset: --dataset_name (a Hub id or local json/jsonl/parquet/csv file or folder, in "
            "TRL's formats or ScienceQA's Hub layout), --dataset_dir (ScienceQA in the official layout), or "
            "--synthetic (the synthetic ScienceQA-style set)."
        )
    split_prompt_format(script_args.prompt_format)
    if script_args.max_train_samples is not None and script_args.max_train_samples < 1:
        raise UserInputError(f"--max_train_samples must be positive; got {script_args.max_train_samples}.")
    if dataset_dir is not None and not synthetic and not (Path(dataset_dir) / "problems.json").is_file():
        raise UserInputError(
            f"--dataset_dir {dataset_dir!r} holds no problems.json: point it at ScienceQA in the official layout, or "
            "use --dataset_name for other data."
        )
    if name is not None and looks_local(name, DATA_FILE_SUFFIXES) and not Path(name).expanduser().exists():
        raise UserInputError(f"--dataset_name {name!r}: no such file or folder.")


def training_dataset_names(script_args: Any) -> list[str]:
    """What the model card names as the training data."""
    if script_args.dataset_name is not None:
        return [script_args.dataset_name]
    return [SYNTHETIC_DATASET_NAME] if script_args.synthetic else ["ScienceQA"]


def write_synthetic_set(script_args: Any, root: Path, seed: int) -> None:
    """Write the synthetic ScienceQA-style set that `--synthetic` and its size options ask for into `root`."""
    write_synthetic_scienceqa(
        root,
        overwrite=script_args.overwrite,
        num_train=script_args.synthetic_num_train,
        num_val=script_args.synthetic_num_eval,
        num_test=script_args.synthetic_num_eval,
        image_size=script_args.synthetic_image_size,
        seed=seed,
    )


def _scienceqa_root(script_args: Any, training_args: SFTConfig) -> Path:
    if not script_args.synthetic:
        return Path(script_args.dataset_dir)
    root = Path(script_args.dataset_dir or Path(training_args.output_dir) / "synthetic_scienceqa")
    # Rank 0 writes while the other ranks wait, so no process reads a half-written file.
    with training_args.main_process_first(local=False, desc="writing the synthetic set"):
        if training_args.process_index == 0:
            seed = training_args.data_seed if training_args.data_seed is not None else training_args.seed
            write_synthetic_set(script_args, root, seed)
    return root


def _for_lavin(dataset: datasets.Dataset, kind: str, tokenizer, prompt_format: str, reference_text: bool):
    """
    The rows as LaVIN trains on them: ScienceQA (either layout, `reference_text`) as the reference's plain prompt and
    answer strings, without a chat template; plain-text rows with BOS and EOS; conversational rows as they are (the
    chat template renders them).
    """
    bos, eos = tokenizer.bos_token, tokenizer.eos_token
    if kind == "scienceqa":
        return scienceqa_hub_to_text(dataset, bos, eos, prompt_format)
    if reference_text:
        return raw_prompt_completion(dataset, bos, eos)
    if kind in ("text", "prompt_completion"):
        return add_special_tokens_to_text(dataset, bos, eos)
    return dataset


def load_training_datasets(
    script_args: Any, training_args: SFTConfig, processing_class: Any = None
) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """
    The training split and (when `training_args.eval_strategy` is not `"no"`) the evaluation split of the data that
    `script_args` names, checked row by row before anything trains: the formats TRL reads, image paths (inside the
    data folder, present), and `--max_images_per_sample` (rows over it are refused, or dropped with
    `--drop_unsupported_rows`).

    Args:
        script_args ([`LavinScriptArguments`]): the data options (`dataset_name`, `dataset_dir` or `synthetic`, the
            splits, `prompt_format`, `max_train_samples`, ...).
        training_args (`SFTConfig`): for `eval_strategy`, and for `--synthetic` where and with which seed to write.
        processing_class (`ProcessorMixin` or `PreTrainedTokenizerBase`, *optional*): the model's processor or
            tokenizer. Given, the rows come as LaVIN trains on them: ScienceQA as its reference prompt and answer
            strings, plain text between BOS and EOS; without it, as read.

    Returns:
        `(train_dataset, eval_dataset)`, `eval_dataset` being `None` when no evaluation is asked for.

    Raises:
        `UserInputError`: naming the option, the file or the row that cannot be used.
    """
    check_dataset_arguments(script_args)
    if script_args.dataset_name is not None:

        def load(split: str) -> datasets.Dataset:
            return load_sft_dataset(
                script_args.dataset_name,
                script_args.dataset_config,
                split=split,
                allow_outside_images=script_args.allow_outside_images,
            )
    else:
        root = _scienceqa_root(script_args, training_args)

        def load(split: str) -> datasets.Dataset:
            return load_scienceqa(root, split, prompt_format=script_args.prompt_format)

    splits = {"training": script_args.dataset_train_split}
    if training_args.eval_strategy != "no":
        splits["evaluation"] = script_args.dataset_test_split
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    loaded = []
    for what, split in splits.items():
        dataset = load(split)
        kind = check_rows(dataset, what)
        if what == "training" and script_args.max_train_samples is not None:
            dataset = dataset.select(range(min(script_args.max_train_samples, len(dataset))))
        dataset = check_images_per_row(
            dataset, script_args.max_images_per_sample, drop=script_args.drop_unsupported_rows, what=what
        )
        if tokenizer is not None:
            reference_text = script_args.dataset_name is None  # ScienceQA's official layout or the synthetic set
            dataset = _for_lavin(dataset, kind, tokenizer, script_args.prompt_format, reference_text)
        loaded.append(dataset)
    return loaded[0], loaded[1] if len(loaded) > 1 else None


__all__ = [
    "DATA_FILE_SUFFIXES",
    "check_dataset_arguments",
    "load_training_datasets",
    "looks_local",
    "training_dataset_names",
    "write_synthetic_set",
]
