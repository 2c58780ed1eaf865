"""`lavin-train`'s options beyond TRL's: the data sources, the base model sources and the MMA adapter, with the checks
that run before anything is loaded or written (so that a bad option fails in a second, not after the base model and
the data were written).

Only TRL's argument classes are imported here (no trainer, no model), so `--help` and a bad option answer without
the cost of the training stack.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from trl import ModelConfig, ScriptArguments, SFTConfig, TrlParser

from ..cli_errors import UserInputError
from ..data.prompts import DEFAULT_PROMPT_FORMAT
from ..data.training_datasets import check_dataset_arguments, looks_local

PEFT_METHODS = ("mma", "lora")
# Options that make TRL's device check pass on a CPU, used only to check the other options first.
CPU_PROBE_OPTIONS = ("--use_cpu", "true", "--bf16", "false", "--fp16", "false")


@dataclass
class LavinScriptArguments(ScriptArguments):
    """
    TRL's `ScriptArguments` (`--dataset_name`, `--dataset_config`, `--dataset_train_split`, `--dataset_test_split`)
    plus LaVIN's ScienceQA sources. Exactly one data source: `--dataset_name`, `--dataset_dir` or `--synthetic`.
    """

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Hub id, or local .json/.jsonl/.parquet/.csv file or folder, of a dataset in TRL's formats "
            "(messages, prompt-completion, text; with an images column or none) or ScienceQA's Hub layout."
        },
    )
    dataset_train_split: str = field(
        default="train", metadata={"help": "Split to train on.", "aliases": ["--train_split", "--train-split"]}
    )
    dataset_test_split: str = field(
        default="test",
        metadata={
            "help": "Split to evaluate on (read when --eval_strategy is not 'no').",
            "aliases": ["--eval_split", "--eval-split"],
        },
    )
    dataset_dir: str | None = field(
        default=None,
        metadata={
            "help": "ScienceQA folder in the official layout (problems.json, pid_splits.json, images/). With "
            "--synthetic, where the synthetic set is written (default: <output_dir>/synthetic_scienceqa)."
        },
    )
    synthetic: bool = field(default=False, metadata={"help": "Write and train on the synthetic ScienceQA-style set."})
    synthetic_num_train: int = field(default=256, metadata={"help": "Training problems of the synthetic set."})
    synthetic_num_eval: int = field(
        default=64, metadata={"help": "Validation and test problems of the synthetic set."}
    )
    synthetic_image_size: int = field(default=32, metadata={"help": "Image side of the synthetic set, in pixels."})
    prompt_format: str = field(
        default=DEFAULT_PROMPT_FORMAT, metadata={"help": "ScienceQA prompt format (both ScienceQA layouts)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N rows only."})
    max_images_per_sample: int | None = field(
        default=None,
        metadata={
            "help": "Refuse (or drop, with --drop_unsupported_rows) rows with more images; no limit by default."
        },
    )
    allow_outside_images: bool = field(
        default=False,
        metadata={
            "help": "Let a local --dataset_name name images outside its folder (absolute paths, '..'); refused by "
            "default, so that a data file cannot make training read other files."
        },
    )
    drop_unsupported_rows: bool = field(
        default=False,
        metadata={"help": "Drop rows over --max_images_per_sample instead of refusing the dataset."},
    )
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "Reuse an output_dir that holds an earlier run: its base model, adapter and checkpoints are "
            "replaced. Also lets --synthetic write into a --dataset_dir that holds other data."
        },
    )


@dataclass
class LavinModelArguments(ModelConfig):
    """
    TRL's `ModelConfig` (`--model_name_or_path`, `--model_revision`, `--dtype`, `--attn_implementation`,
    `--load_in_4bit`, LoRA options) plus LaVIN's other base-model sources and the adapter choice. Exactly one base
    model: a saved LaVIN (`--model_name_or_path`), pretrained parts to assemble, or a tiny random model.
    """

    peft_method: str = field(
        default="mma",
        metadata={
            "help": "Adapters to train: 'mma' (LaVIN's, the --mma_* options) or 'lora' (TRL's --lora_* options)."
        },
    )
    vision_model: str | None = field(
        default=None, metadata={"help": "CLIP directory or Hub id, to assemble a fresh LaVIN (with --language_model)."}
    )
    language_model: str | None = field(
        default=None,
        metadata={"help": "Causal LM directory or Hub id, to assemble a fresh LaVIN (with --vision_model)."},
    )
    tiny: bool = field(default=False, metadata={"help": "A tiny random LaVIN built in code (no download)."})
    tiny_text_hidden_size: int = field(default=64, metadata={"help": "Width of the tiny LLM."})
    tiny_text_layers: int = field(default=2, metadata={"help": "Layers of the tiny LLM."})
    tiny_image_size: int = field(default=32, metadata={"help": "Image side of the tiny vision tower."})
    tiny_patch_size: int = field(default=8, metadata={"help": "Patch side of the tiny vision tower."})
    tiny_initializer_range: float = field(
        default=0.2,
        metadata={
            "help": "Weight scale of the tiny random LLM. Larger than transformers' 0.02 so that the frozen LM head "
            "can express confident predictions; at 0.02 its logits stay near uniform whatever the adapters do."
        },
    )


@dataclass
class MMAArguments:
    """MMA adapter options (see `transformers_lavin.MMAConfig`); defaults are the published LaVIN-7B recipe."""

    mma_adapter_hidden_size: int = field(default=8, metadata={"help": "Bottleneck width of every adapter."})
    mma_groups: int = field(default=2, metadata={"help": "Groups of the adapters' up-projections."})
    mma_scale: float = field(default=1.0, metadata={"help": "Scale of the adapter branch."})
    mma_temperature: float = field(default=10.0, metadata={"help": "Router softmax temperature."})
    mma_dropout: float = field(default=0.1, metadata={"help": "Dropout on the adapters' bottleneck."})
    mma_adapter_type: str = field(default="attn", metadata={"help": "'attn' or 'block' (also the LLM MLPs)."})
    mma_vision_adapter_type: str = field(
        default="router", metadata={"help": "'router', 'router_block', 'normal' or 'none'."}
    )

    def to_peft_config(self):
        """The `MMAConfig` of these options."""
        from .. import MMAConfig

        return MMAConfig(
            adapter_hidden_size=self.mma_adapter_hidden_size,
            groups=self.mma_groups,
            scale=self.mma_scale,
            temperature=self.mma_temperature,
            dropout=self.mma_dropout,
            adapter_type=self.mma_adapter_type,
            vision_adapter_type=self.mma_vision_adapter_type,
        )


ARGUMENT_CLASSES = (LavinScriptArguments, SFTConfig, LavinModelArguments, MMAArguments)


class LavinArgumentParser(TrlParser):
    """TRL's parser whose argparse errors (a bad value, a missing value) are one-line [`UserInputError`]s."""

    def __init__(self, prog: str = "lavin-train") -> None:
        super().__init__(ARGUMENT_CLASSES, prog=prog)

    def error(self, message: str):
        raise UserInputError(f"{message} ({self.prog} --help lists the options).")

    def option_names(self) -> list[str]:
        return [name for action in self._actions for name in action.option_strings if name.startswith("--")]


def _unknown_options(parser: LavinArgumentParser, remaining: Sequence[str]) -> None:
    if not remaining:
        return
    known = parser.option_names()
    options = [token for token in remaining if token.startswith("-")]
    described = []
    for token in options:
        close = difflib.get_close_matches(token.split("=")[0], known, n=1)
        described.append(f"{token} (did you mean {close[0]}?)" if close else token)
    # Without an unknown option, what is left over are values no option takes.
    described = described or [repr(token) for token in remaining]
    raise UserInputError(
        f"unknown option(s): {', '.join(described)}. {parser.prog} --help lists the options (--help_all every one)."
    )


def parse_args(
    argv: Sequence[str] | None = None,
) -> tuple[LavinScriptArguments, SFTConfig, LavinModelArguments, MMAArguments]:
    """
    Parse command-line arguments (and a YAML file given with `--config`) into the script's dataclasses.

    TRL's `SFTConfig` checks the device while it is built (bf16, on by default, needs a GPU). When that check fails,
    the arguments are parsed once more as for a CPU, only to check the other options and the files they name first:
    a typo or a missing file is the error the user sees, and the device error only when everything else is right.

    Raises:
        `UserInputError`: for an unknown option, a bad value, or (after every other check passed) the device error
            with the flags that train on a CPU.
    """
    argv = list(argv) if argv is not None else None
    parser = LavinArgumentParser()
    try:
        *parsed, remaining = parser.parse_args_and_config(args=argv, return_remaining_strings=True)
    except ValueError as device_error:
        probe_argv = [*(argv if argv is not None else sys.argv[1:]), *CPU_PROBE_OPTIONS]
        try:
            *probe, remaining = parser.parse_args_and_config(args=probe_argv, return_remaining_strings=True)
        except ValueError:
            raise device_error from None  # not the device: TRL's own message is the one to show
        _unknown_options(parser, remaining)
        validate_arguments(*probe)
        raise UserInputError(_device_message(device_error)) from device_error
    _unknown_options(parser, remaining)
    return tuple(parsed)


def _device_message(error: ValueError) -> str:
    text = str(error)
    if "bf16" in text:
        return (
            "--bf16 is on (TRL's default), but this machine has no GPU with bf16 support. To train on the CPU, pass "
            "--bf16 false --use_cpu true."
        )
    return text


def torch_dtype(name: str | None):
    """`--dtype` as a `torch.dtype` (or `"auto"` / `None` as given)."""
    if name is None or name == "auto":
        return name
    import torch

    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"--dtype {name!r}: use 'bfloat16', 'float16', 'float32' or 'auto'.")
    return dtype


def check_model_directory(option: str, name: str) -> None:
    """
    A local model given by `option` must be a directory that `save_pretrained` wrote; a Hub id is left to the Hub.
    An adapter directory is refused with the base model it names.
    """
    if not looks_local(name):
        return
    path = Path(name).expanduser()
    if not path.is_dir():
        problem = "it is a file, not a directory" if path.exists() else "no such directory"
        raise UserInputError(
            f"{option} {name!r}: {problem}. Give a directory written by save_pretrained, or a Hub id."
        )
    if not (path / "config.json").is_file():
        if (path / "adapter_config.json").is_file():
            raise UserInputError(
                f"{option} {name!r} is an adapter directory (adapter_config.json), not a model. Give its base model "
                "(the adapter config's base_model_name_or_path) and train a new adapter on it, or resume this run "
                "with --resume_from_checkpoint."
            )
        raise UserInputError(f"{option} {name!r} holds no config.json: give the directory save_pretrained wrote.")


def check_model_arguments(model_args: LavinModelArguments) -> None:
    """Exactly one base model source, and options that fit it."""
    from_parts = model_args.vision_model is not None or model_args.language_model is not None
    sources = [model_args.model_name_or_path is not None, from_parts, model_args.tiny]
    if sum(sources) != 1:
        raise ValueError(
            "Give exactly one base model: --model_name_or_path (a LaVIN directory or Hub id), --vision_model with "
            "--language_model (to assemble one from pretrained parts), or --tiny (a tiny random model)."
        )
    if model_args.load_in_4bit and model_args.model_name_or_path is None:
        raise ValueError(
            "--load_in_4bit loads a saved LaVIN with --model_name_or_path. To quantise an assembled model, build it "
            "with build_lavin_from_parts, save_pretrained it, then train from that directory."
        )
    if from_parts and (model_args.vision_model is None or model_args.language_model is None):
        raise ValueError("Assembling a LaVIN needs both --vision_model and --language_model.")
    if model_args.peft_method not in PEFT_METHODS:
        raise ValueError(f"--peft_method {model_args.peft_method!r}: use one of {PEFT_METHODS}.")
    for option in ("model_name_or_path", "vision_model", "language_model"):
        if getattr(model_args, option) is not None:
            check_model_directory(f"--{option}", getattr(model_args, option))
    torch_dtype(model_args.dtype)


def check_gradient_checkpointing(training_args: SFTConfig) -> None:
    """MMA's routing table must keep its gradient: use non-reentrant checkpointing (the only kind MMA supports)."""
    if not training_args.activation_checkpointing:
        return
    kwargs = dict(training_args.activation_checkpointing_kwargs or {})
    if kwargs.get("use_reentrant"):
        raise ValueError(
            "MMA needs non-reentrant gradient checkpointing (reentrant checkpointing drops the routers' gradient). "
            "Set gradient_checkpointing_kwargs={'use_reentrant': false} or --gradient_checkpointing false."
        )
    kwargs["use_reentrant"] = False
    # The Trainer reads the current name, TRL 1.16 the deprecated one: both get the dict, as TrainingArguments does.
    training_args.activation_checkpointing_kwargs = training_args.gradient_checkpointing_kwargs = kwargs


def validate_arguments(
    script_args: LavinScriptArguments,
    training_args: SFTConfig,
    model_args: LavinModelArguments,
    mma_args: MMAArguments,
) -> None:
    """
    Check every option before anything is loaded or written, so that a bad one fails in a second, not after the base
    model and data were written.

    Raises:
        `ValueError`: naming the option and how to fix it.
    """
    check_model_arguments(model_args)
    check_dataset_arguments(script_args)
    if Path(training_args.output_dir).is_file():
        raise ValueError(f"--output_dir {training_args.output_dir!r} is a file; give a folder.")
    if training_args.per_device_train_batch_size < 1:
        raise ValueError(
            f"--per_device_train_batch_size must be at least 1; got {training_args.per_device_train_batch_size}."
        )
    if model_args.peft_method == "mma":
        mma_args.to_peft_config()  # MMAConfig checks its own values
    check_gradient_checkpointing(training_args)


__all__ = [
    "ARGUMENT_CLASSES",
    "LavinArgumentParser",
    "LavinModelArguments",
    "LavinScriptArguments",
    "MMAArguments",
    "check_gradient_checkpointing",
    "check_model_arguments",
    "parse_args",
    "torch_dtype",
    "validate_arguments",
]
