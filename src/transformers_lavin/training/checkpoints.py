"""Where a `lavin-train` run writes: the output folder's checks, the checkpoint to resume from, and saves that a crash
cannot leave half-written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..cli_errors import UserInputError
from ..conversion.staging import apply_umask, replace

logger = logging.getLogger(__name__)

BASE_MODEL_DIR = "base_model"
ADAPTER_CONFIG_NAME = "adapter_config.json"
# What the Trainer writes last into a checkpoint (transformers.trainer.TRAINER_STATE_NAME, without the Trainer import).
TRAINER_STATE_NAME = "trainer_state.json"


def earlier_run_outputs(output_dir: Path) -> list[str]:
    """What an earlier `lavin-train` run left in `output_dir`: its base model, adapter and checkpoints."""
    if not output_dir.is_dir():
        return []
    found = [name for name in (BASE_MODEL_DIR, ADAPTER_CONFIG_NAME) if (output_dir / name).exists()]
    return found + sorted(path.name for path in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if path.is_dir())


def check_output_dir(output_dir: Path, overwrite: bool, resuming: bool) -> None:
    """
    Refuse to train into an `output_dir` that holds an earlier run (unless `overwrite` or resuming it): the new base
    model and adapter would replace the old ones while the old checkpoints stayed, paired with the wrong base.
    """
    found = earlier_run_outputs(output_dir)
    if found and not (overwrite or resuming):
        raise UserInputError(
            f"--output_dir {str(output_dir)!r} holds an earlier run ({', '.join(found[:4])}"
            f"{', ...' if len(found) > 4 else ''}). Choose a new --output_dir, resume it with "
            "--resume_from_checkpoint true, or pass --overwrite to replace it."
        )


def remove_earlier_run(output_dir: Path) -> None:
    """With `--overwrite`: remove the checkpoints of an earlier run."""
    # Checkpoints of an earlier run belong to its base model; with --overwrite they go, so none is paired wrongly.
    for name in earlier_run_outputs(output_dir):
        if name.startswith(PREFIX_CHECKPOINT_DIR):
            logger.warning("--overwrite: removing %s of the earlier run.", output_dir / name)
            shutil.rmtree(output_dir / name)


def save_aside(output_dir: Path, save: Callable[[str], None], replace_directory: bool) -> None:
    """
    Write with `save(directory)` into a hidden sibling, then move it into place: onto `output_dir` itself when
    `replace_directory`, else file by file into `output_dir` (which also holds checkpoints). A crash mid-write leaves
    the old files or the new ones, never a mix of half-written files. What is moved gets the modes a plain write
    would have given under the process umask.
    """
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=output_dir.parent))
    try:
        save(str(staged))
        if replace_directory:
            replace(staged, output_dir)
            return
        apply_umask(staged)
        output_dir.mkdir(parents=True, exist_ok=True)
        for path in sorted(staged.rglob("*")):
            target = output_dir / path.relative_to(staged)
            if path.is_dir():
                target.mkdir(exist_ok=True)
            else:
                os.replace(path, target)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def reloadable_name(name_or_path: str) -> str:
    """
    What an adapter should record as its base model: the absolute path of a local directory (a relative one would
    resolve from the working directory of whoever loads the adapter, or be taken for a Hub id), else the Hub id.
    """
    path = Path(name_or_path).expanduser()
    return str(path.resolve()) if path.is_dir() else name_or_path


def resume_target(value: str | bool | None) -> str | bool | None:
    """`--resume_from_checkpoint true` (or `last`) means the newest checkpoint in output_dir, as Trainer's True does."""
    if isinstance(value, str) and value.lower() in ("true", "last"):
        return True
    return value


def is_complete_checkpoint(checkpoint: Path, step: int) -> bool:
    """
    Whether a save finished: the Trainer writes `trainer_state.json` after the weights, so a complete checkpoint has
    weights and a state that parses and records its own step (a kill while the state was written leaves a part).
    """
    weights = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")
    if not any((checkpoint / name).is_file() for name in weights):
        return False
    try:
        state = json.loads((checkpoint / TRAINER_STATE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and state.get("global_step") == step


def resume_checkpoint(output_dir: str | Path, value: str | bool | None) -> str | None:
    """
    The checkpoint `--resume_from_checkpoint` names: for `true`/`last`, the newest complete one in `output_dir`
    (a save cut short, e.g. by `kill -9`, leaves a checkpoint without a complete `trainer_state.json`: it is skipped, with
    an info line); a path is taken as given.

    Raises:
        `ValueError`: when `output_dir` holds no complete checkpoint.
    """
    value = resume_target(value)
    if value is not True:
        return value or None
    output_dir = Path(output_dir)
    steps = {}
    for child in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if output_dir.is_dir() else []:
        step = child.name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-")
        if child.is_dir() and step.isdigit():
            steps[int(step)] = child
    for step in sorted(steps, reverse=True):
        if is_complete_checkpoint(steps[step], step):
            return str(steps[step])
        logger.info(
            "Skipping %s: its save did not finish (no weights, or no complete %s).", steps[step], TRAINER_STATE_NAME
        )
    incomplete = f" (only incomplete ones: {sorted(p.name for p in steps.values())})" if steps else ""
    raise ValueError(
        f"--resume_from_checkpoint true: {output_dir} holds no complete checkpoint{incomplete}. Start the run again "
        "without --resume_from_checkpoint (with --overwrite), or name a checkpoint folder."
    )


def finished_step(checkpoint: str | Path, max_steps: int) -> int | None:
    """The step a checkpoint's run already reached, if that is the end of the run (`max_steps`, or the state's own
    when training by epochs); `None` when there is training left."""
    state_file = Path(checkpoint) / TRAINER_STATE_NAME
    if not state_file.is_file():
        return None
    state = json.loads(state_file.read_text(encoding="utf-8"))
    target = max_steps if max_steps > 0 else state.get("max_steps", 0)
    step = state.get("global_step", 0)
    return step if target and step >= target else None


def resume_point(output_dir: str | Path, resume_from_checkpoint: str | bool | None, overwrite: bool) -> str | None:
    """
    The checkpoint a run resumes from (`None` for a fresh run), after checking that `output_dir` may take the run
    ([`check_output_dir`]; a run is resumed when `resume_from_checkpoint` is set).
    """
    check_output_dir(Path(output_dir), overwrite, resuming=bool(resume_target(resume_from_checkpoint)))
    return resume_checkpoint(output_dir, resume_from_checkpoint)


def run_is_finished(checkpoint: str | Path, max_steps: int) -> bool:
    """Whether `checkpoint` already reached the end of the run (training again would add a step and replace the
    finished adapter); says so in a warning."""
    step = finished_step(checkpoint, max_steps)
    if step is not None:
        logger.warning(
            "%s is at step %d, the end of this run (--max_steps %d): nothing to train, the adapter is left as it "
            "is. Raise --max_steps to train further.",
            checkpoint,
            step,
            max_steps,
        )
    return step is not None


__all__ = [
    "BASE_MODEL_DIR",
    "check_output_dir",
    "finished_step",
    "is_complete_checkpoint",
    "reloadable_name",
    "remove_earlier_run",
    "resume_checkpoint",
    "resume_point",
    "resume_target",
    "run_is_finished",
    "save_aside",
]
