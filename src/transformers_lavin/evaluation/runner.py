"""The runner: batched generation over a task's samples, per-sample results appended to a JSONL file, resume, and
the summary recomputed from that file.

Output layout, for each model and task:
```
{output_dir}/{model_name}/{task}/results.jsonl   # one record per sample, appended batch by batch
{output_dir}/{model_name}/{task}/summary.json    # metrics computed from results.jsonl
{output_dir}/{model_name}/{task}/config.json     # the task's settings
```
Running again with the same output directory skips the samples already in `results.jsonl`, provided the task's
settings (`config.json`) are the same; different settings are refused unless `overwrite=True`, which starts afresh.
Files that are rewritten rather than appended to are written beside their target, synced, and renamed over it, so an
interruption or a full disk leaves either the old file or the new one, never a part.
"""

import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from ..image_loading import load_image
from .models import CallableAdapter, HFModelAdapter, ModelAdapter
from .report import write_atomic, write_report
from .tasks.base import Sample, Task

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.json"


class SettingsMismatchError(ValueError):
    """An output directory holds results made with other settings than the ones asked for."""


def as_adapter(model: Any) -> ModelAdapter:
    """
    Turns what the user passed into a [`~models.ModelAdapter`]: an adapter as is, a `(model, processor)` pair into
    [`~models.HFModelAdapter`], and a plain callable `(images, prompts) -> texts` into [`~models.CallableAdapter`].
    """
    if hasattr(model, "generate") and not hasattr(model, "config"):
        return model
    if isinstance(model, tuple) and len(model) == 2:
        return HFModelAdapter(*model)
    if callable(model) and not hasattr(model, "config"):
        return CallableAdapter(model)
    raise TypeError(
        "A model must be a (model, processor) pair, a ModelAdapter, or a callable (images, prompts) -> texts; got "
        f"{type(model).__name__}. For a transformers model alone, pass (model, processor)."
    )


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """
    Reads the records of a results file. A last line cut off by an interruption is dropped from the file, so that
    appending can go on from a clean end.

    Args:
        path (`str | Path`): The `results.jsonl` file (it need not exist).
    """
    path = Path(path)
    if not path.is_file():
        return []
    records, good_bytes = [], 0
    with path.open("rb") as handle:
        for line in handle:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if handle.read().strip():
                    raise ValueError(
                        f"{path} has a broken line inside it (not at the end); fix or delete it."
                    ) from None
                logger.warning("Dropping an incomplete last line of %s (an interrupted write).", path)
                with path.open("r+b") as truncate:
                    truncate.truncate(good_bytes)
                break
            if not line.endswith(b"\n"):
                # A complete record whose newline was never written: end the line, or the next append would join it.
                logger.warning("The last line of %s lacked its newline (an interrupted write); added it.", path)
                with path.open("ab") as append:
                    append.write(b"\n")
                break  # the line was the last one; do not read back the newline just written
            good_bytes += len(line)
    return records


def _load_images(sample: Sample) -> list[Image.Image]:
    images = []
    for item in sample.images:
        try:
            # Hub tables give lazy references (`TableImage`); official layouts give paths.
            images.append(load_image(item.load() if hasattr(item, "load") else item))
        except (ValueError, OSError, Image.DecompressionBombError) as error:
            raise OSError(f"cannot read image {item}: {error}") from error
    return images


def _check_settings(config_path: Path, config: Mapping[str, Any], overwrite: bool) -> bool:
    """Whether earlier results may be kept; raises when they were made with other settings and not `overwrite`."""
    if not config_path.is_file():
        return True
    try:
        old = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        old = {}
    new = json.loads(json.dumps(config, default=str))
    if old == new:
        return True
    if overwrite:
        return False
    changed = sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))
    details = "; ".join(f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in changed)
    raise SettingsMismatchError(
        f"{config_path.parent} holds results made with other settings ({details}). Use another output directory, "
        "or pass overwrite=True (--overwrite) to discard those results."
    )


def _write(handle: Any, record: Mapping[str, Any]) -> None:
    handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def run_task(
    model: Any,
    task: Task,
    output_dir: str | Path,
    model_name: str = "model",
    batch_size: int = 8,
    limit: int | None = None,
    max_new_tokens: int | None = None,
    retry_errors: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """
    Evaluates one model on one task, resuming from earlier results in the same directory.

    Samples whose images cannot be read, or whose batch raised an exception in the model, are recorded with an
    `error` and an empty output, and scored as such (so they count as wrong); the summary lists how many.

    Args:
        model (`Any`): A `(model, processor)` pair, a [`~models.ModelAdapter`], or a callable
            `(images, prompts) -> texts`.
        task (`Task`): The task, e.g. [`~tasks.ScienceQATask`].
        output_dir (`str | Path`): The root output directory.
        model_name (`str`, *optional*, defaults to `"model"`): The model's name in paths and tables.
        batch_size (`int`, *optional*, defaults to 8)
        limit (`int`, *optional*): Evaluate only the first `limit` samples.
        max_new_tokens (`int`, *optional*): Overrides the task's generation length.
        retry_errors (`bool`, *optional*, defaults to `False`): Generate again for samples recorded with an error.
        overwrite (`bool`, *optional*, defaults to `False`): Discard earlier results made with other settings
            (otherwise a [`SettingsMismatchError`] says what differs).
        progress (`bool`, *optional*, defaults to `True`): Show a progress bar.
        on_batch (`Callable[[int], None]`, *optional*): Called with the number of finished samples after each batch.

    Returns:
        `dict[str, Any]`: the summary (also written to `summary.json`).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}.")
    adapter = as_adapter(model)
    if task.scoring == "likelihood" and not hasattr(adapter, "score_options"):
        raise ValueError(
            f"Task {task.name!r} scores options by likelihood, which needs the model's token probabilities: give a "
            f"transformers model (a (model, processor) pair), not a {type(adapter).__name__}, or score by generation."
        )
    run_dir = Path(output_dir) / model_name / task.name
    samples = task.load()[:limit] if limit else task.load()
    ids = [sample.id for sample in samples]
    if len(set(ids)) != len(ids):
        raise ValueError(f"Task {task.name!r} has duplicate sample ids; ids must be unique to resume runs.")
    config_path, results_path = run_dir / CONFIG_FILE, run_dir / RESULTS_FILE
    keep = _check_settings(config_path, task.config(), overwrite)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not keep:
        results_path.unlink(missing_ok=True)
    write_atomic(config_path, json.dumps(task.config(), indent=2, default=str))

    records = {r["id"]: r for r in read_results(results_path) if not (retry_errors and r.get("error"))}
    if retry_errors:
        write_atomic(results_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records.values()))
    todo = [sample for sample in samples if sample.id not in records]
    budget = max_new_tokens or task.max_new_tokens

    with (
        results_path.open("a", encoding="utf-8") as handle,
        tqdm(
            total=len(samples),
            initial=len(samples) - len(todo),
            desc=f"{model_name}/{task.name}",
            disable=not progress,
        ) as bar,
    ):
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            outputs: dict[str, str] = {}
            errors: dict[str, str] = {}
            loaded: list[tuple[Sample, list[Image.Image]]] = []
            for sample in batch:
                try:
                    loaded.append((sample, _load_images(sample)))
                except OSError as error:
                    errors[sample.id] = str(error)
            option_scores: dict[str, list[float]] = {}
            if loaded:
                images, prompts = [i for _, i in loaded], [s.prompt for s, _ in loaded]
                try:
                    if task.scoring == "likelihood":
                        options = [task.options(sample) for sample, _ in loaded]
                        scores = adapter.score_options(
                            images, prompts, options, task.answer_prefix, task.option_suffix
                        )
                        option_scores = {sample.id: row for (sample, _), row in zip(loaded, scores, strict=True)}
                        texts = [task.answer_from_scores(sample, option_scores[sample.id]) for sample, _ in loaded]
                    else:
                        texts = adapter.generate(images, prompts, budget)
                    outputs.update({sample.id: text for (sample, _), text in zip(loaded, texts, strict=True)})
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as error:  # noqa: BLE001 - one bad batch must not end a long run
                    logger.exception("Generation failed for a batch of %d samples", len(loaded))
                    errors.update({sample.id: f"generation failed: {error!r}" for sample, _ in loaded})
            for sample in batch:
                output = outputs.get(sample.id, "")
                record = {"id": sample.id, "prompt": sample.prompt, "output": output, "target": sample.target}
                record["meta"] = sample.meta
                if sample.id in option_scores:
                    record["option_scores"] = option_scores[sample.id]
                if sample.id in errors:
                    record.update(task.score_failed(sample))
                    record["error"] = errors[sample.id]
                else:
                    record.update(task.score(sample, output))
                records[sample.id] = record
                _write(handle, record)
            handle.flush()
            os.fsync(handle.fileno())
            bar.update(len(batch))
            if on_batch is not None:
                on_batch(len(samples) - len(todo) + start + len(batch))

    ordered = [records[sample_id] for sample_id in ids]
    summary = {
        "model": model_name,
        "task": task.name,
        **task.summarize(ordered),
        "n_errors": sum(bool(r.get("error")) for r in ordered),
        "error_ids": [r["id"] for r in ordered if r.get("error")][:20],
    }
    write_atomic(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2, default=str))
    return summary


def run_evaluation(
    models: Mapping[str, Any] | Iterable[tuple[str, Any]],
    tasks: Sequence[Task],
    output_dir: str | Path,
    **kwargs: Any,
) -> dict[str, dict[str, dict[str, Any]]]:
    """
    Evaluates several models on several tasks and writes the comparison: `summary.json`, `summary.md` and, with more
    than one model, `comparison.png` in `output_dir`.

    Args:
        models (`Mapping[str, Any] | Iterable[tuple[str, Any]]`): Name to model (anything [`run_task`] accepts), or
            `(name, model)` pairs; a generator of pairs loads each model only when its turn comes.
        tasks (`Sequence[Task]`): The tasks.
        output_dir (`str | Path`): The root output directory.
        kwargs: Passed to [`run_task`] (`batch_size`, `limit`, ...).

    Returns:
        `dict[str, dict[str, dict[str, Any]]]`: `{task: {model: summary}}`.
    """
    if not tasks:
        raise ValueError("run_evaluation needs at least one task.")
    summaries: dict[str, dict[str, dict[str, Any]]] = {task.name: {} for task in tasks}
    pairs = models.items() if isinstance(models, Mapping) else models
    for name, model in pairs:
        if name in summaries[tasks[0].name]:
            raise ValueError(f"Two models are named {name!r}; give each model its own name.")
        for task in tasks:
            summaries[task.name][name] = run_task(model, task, output_dir, model_name=name, **kwargs)
        del model  # drop our reference before a generator loads the next model
    write_report(summaries, tasks, output_dir)
    return summaries
