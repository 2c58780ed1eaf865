"""`lavin-train --help`: a short summary (what it does, examples, LaVIN's own options, the common training ones)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from trl import ModelConfig, ScriptArguments, SFTConfig

DESCRIPTION = (
    "Fine-tune LaVIN's MMA adapters (or LoRA) with TRL's SFTTrainer, on any dataset SFTTrainer takes "
    "(conversational messages + images, prompt-completion, plain text; a Hub id or local json/jsonl/parquet/csv), "
    "on ScienceQA (official layout or Hub parquet) or on the offline synthetic set."
)
EXAMPLES = """\
examples:
  lavin-train --model_name_or_path path/to/lavin-7b --dataset_name me/llava-style-chats --output_dir out
  lavin-train --model_name_or_path path/to/lavin-7b --dataset_name derek-thomas/ScienceQA --output_dir out
  lavin-train --model_name_or_path path/to/lavin-7b --dataset_dir data/scienceqa --output_dir out
  lavin-train --tiny --synthetic --output_dir /tmp/lavin-tiny --max_steps 20 --bf16 false"""
# The SFTConfig options most runs set; `--help_all` lists the rest.
COMMON_TRAINING_OPTIONS = (
    "output_dir",
    "max_steps",
    "num_train_epochs",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "weight_decay",
    "max_length",
    "assistant_only_loss",
    "bf16",
    "gradient_checkpointing",
    "logging_steps",
    "save_steps",
    "eval_strategy",
    "resume_from_checkpoint",
    "report_to",
    "seed",
)
# TRL's fields that lavin-train reads; the others of its classes (LoRA and bitsandbytes details) are in --help_all.
TRL_FIELDS_SHOWN = {
    "dataset_name",
    "dataset_config",
    "dataset_train_split",
    "dataset_test_split",
    "model_name_or_path",
    "model_revision",
    "dtype",
    "attn_implementation",
    "trust_remote_code",
    "load_in_4bit",
}


def _first_sentence(text: str) -> str:
    text = " ".join(str(text).split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def _line(field: dataclasses.Field) -> str:
    default = field.default if field.default is not dataclasses.MISSING else None
    help_text = _first_sentence(field.metadata.get("help", ""))
    suffix = f" (default: {default})" if default not in (None, False, "") else ""
    return f"  --{field.name:30s} {help_text}{suffix}"


def short_help(argument_classes: Sequence[type], prog: str = "lavin-train") -> str:
    """The short `--help` text of `lavin-train` for its argument dataclasses."""
    trl_classes = (ScriptArguments, ModelConfig, SFTConfig)
    lines = [f"usage: {prog} [options]   (every option also as --name-with-hyphens)", "", DESCRIPTION, ""]
    for cls in argument_classes:
        if cls is SFTConfig:
            continue
        lines.append(f"{cls.__name__}: {_first_sentence(cls.__doc__ or '')}")
        for field in dataclasses.fields(cls):
            inherited = any(field.name in {f.name for f in dataclasses.fields(base)} for base in trl_classes)
            if not inherited or field.name in TRL_FIELDS_SHOWN:
                lines.append(_line(field))
        lines.append("")
    lines.append("common training options (TRL's SFTConfig):")
    fields = {field.name: field for field in dataclasses.fields(SFTConfig)}
    lines += [_line(fields[name]) for name in COMMON_TRAINING_OPTIONS if name in fields]
    lines += ["", f"All {len(fields)} SFTConfig options and TRL's LoRA options: {prog} --help_all.", "", EXAMPLES]
    return "\n".join(lines)


__all__ = ["short_help"]
