"""Reports comparing models: a combined JSON summary, a Markdown table per task, and a bar chart."""

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .tasks.base import Task

Summaries = Mapping[str, Mapping[str, Mapping[str, Any]]]


def write_atomic(path: str | Path, text: str) -> None:
    """
    Writes `text` to `path` atomically: to a temporary file beside it, synced to disk, then renamed over `path`.

    Args:
        path (`str | Path`): The target file.
        text (`str`): Its new content (UTF-8).
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with temporary.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def markdown_table(summaries: Summaries, tasks: Sequence[Task]) -> str:
    """
    One Markdown table per task: a row per model, a column per headline metric, plus the sample count and errors.

    Args:
        summaries (`Summaries`): `{task: {model: summary}}` as returned by [`~runner.run_evaluation`].
        tasks (`Sequence[Task]`): The tasks, for their headline metrics.
    """
    sections = []
    for task in tasks:
        columns = [*task.headline_metrics, "n", "n_errors"]
        lines = [f"## {task.name}", "", "| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for model, summary in summaries.get(task.name, {}).items():
            lines.append(f"| {model} | " + " | ".join(_cell(summary.get(c)) for c in columns) + " |")
        notes = {
            m: s.get("metrics_skipped") for m, s in summaries.get(task.name, {}).items() if s.get("metrics_skipped")
        }
        for model, skipped in notes.items():
            ran = ", ".join(summaries[task.name][model].get("metrics_ran", [])) or "none"
            lines.append("")
            lines.append(
                f"{model}: metrics ran: {ran}; skipped: " + "; ".join(f"{k} ({v})" for k, v in skipped.items())
            )
        sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n"


def _draw_bars(axis: Any, groups: Sequence[str], values: Mapping[str, Sequence[Any]], unit: str, title: str) -> None:
    """Grouped bars on a fixed 0-100 axis; each bar is labelled with its value, and a bar past 100 is clipped at the
    top with its label kept, so scales never change between charts."""
    import numpy as np

    models = list(values)
    width = 0.8 / max(len(models), 1)
    positions = np.arange(len(groups))
    for index, model in enumerate(models):
        numbers = [v if isinstance(v, (int, float)) else None for v in values[model]]
        x = positions + index * width - 0.4 + width / 2
        bars = axis.bar(x, [min(max(v or 0.0, 0.0), 100.0) for v in numbers], width, label=model)
        for bar, number in zip(bars, numbers, strict=True):
            label = "n/a" if number is None else f"{number:.1f}"
            top = bar.get_height()
            axis.text(bar.get_x() + bar.get_width() / 2, top + 1, label, ha="center", va="bottom", fontsize=7)
    axis.set_ylim(0, 110)
    axis.set_yticks(range(0, 101, 20))
    axis.set_ylabel(unit)
    axis.set_xticks(positions, groups, rotation=30, ha="right", fontsize=8)
    axis.set_title(title)
    axis.grid(axis="y", alpha=0.3)
    # Outside the axes, so that it never covers a bar.
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, title="model")


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def bar_chart(summaries: Summaries, tasks: Sequence[Task], path: str | Path) -> Path:
    """
    One chart of every task's overall metric (`task.overall_metric`), models side by side, on a fixed 0-100 axis.

    Args:
        summaries (`Summaries`): `{task: {model: summary}}`.
        tasks (`Sequence[Task]`): The tasks.
        path (`str | Path`): Where to write the PNG.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(model for task in tasks for model in summaries.get(task.name, {})))
    groups = [f"{task.name}\n{task.overall_metric}\n[{task.unit}]" for task in tasks]
    values = {m: [summaries.get(t.name, {}).get(m, {}).get(t.overall_metric) for t in tasks] for m in models}
    fig, axis = plt.subplots(figsize=(max(6.0, 1.6 * len(tasks) * max(1, len(models)) ** 0.5), 4.0))
    _draw_bars(axis, groups, values, "score (see each group's unit; axis 0-100)", "All tasks")
    axis.tick_params(axis="x", rotation=0)
    return _save(fig, Path(path))


def task_chart(summaries: Summaries, task: Task, path: str | Path) -> Path:
    """
    One task's headline metrics, models side by side, on a fixed 0-100 axis labelled with the task's unit.

    Args:
        summaries (`Summaries`): `{task: {model: summary}}`.
        task (`Task`): The task.
        path (`str | Path`): Where to write the PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(task.headline_metrics)
    per_model = summaries.get(task.name, {})
    values = {model: [summary.get(metric) for metric in metrics] for model, summary in per_model.items()}
    fig, axis = plt.subplots(figsize=(max(6.0, 0.9 * len(metrics) * max(1, len(values)) ** 0.5), 3.6))
    _draw_bars(axis, metrics, values, task.unit, task.name)
    return _save(fig, Path(path))


def write_report(summaries: Summaries, tasks: Sequence[Task], output_dir: str | Path) -> dict[str, Path]:
    """
    Writes `summary.json` and `summary.md` (the Markdown tables), `comparison.png` (every task's overall metric) and
    `comparison_{task}.png` (each task's headline metrics). The Markdown file links the charts.

    Args:
        summaries (`Summaries`): `{task: {model: summary}}`.
        tasks (`Sequence[Task]`): The tasks.
        output_dir (`str | Path`): The root output directory.

    Returns:
        `dict[str, Path]`: the files written, by kind (`"json"`, `"markdown"`, `"chart"`, `"chart/{task}"`).
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": output_dir / "summary.json", "markdown": output_dir / "summary.md"}
    write_atomic(files["json"], json.dumps(summaries, indent=2, default=str))
    files["chart"] = bar_chart(summaries, tasks, output_dir / "comparison.png")
    for task in tasks:
        files[f"chart/{task.name}"] = task_chart(summaries, task, output_dir / f"comparison_{task.name}.png")
    charts = "\n".join(f"![{kind}]({path.name})" for kind, path in files.items() if kind.startswith("chart"))
    write_atomic(files["markdown"], markdown_table(summaries, tasks) + "\n" + charts + "\n")
    return files
