"""Reports comparing models: a combined JSON summary, a Markdown table per task, and a bar chart."""

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .tasks.base import Task

Summaries = Mapping[str, Mapping[str, Mapping[str, Any]]]


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


def bar_chart(summaries: Summaries, tasks: Sequence[Task], path: str | Path) -> Path:
    """
    A grouped bar chart comparing the models on each task's headline metrics (one panel per task).

    Args:
        summaries (`Summaries`): `{task: {model: summary}}`.
        tasks (`Sequence[Task]`): The tasks.
        path (`str | Path`): Where to write the PNG.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(
        len(tasks),
        1,
        figsize=(max(6.0, 1.2 * max(len(t.headline_metrics) for t in tasks)), 3.2 * len(tasks)),
        squeeze=False,
    )
    for axis, task in zip(axes[:, 0], tasks, strict=True):
        metrics = list(task.headline_metrics)
        models = list(summaries.get(task.name, {}))
        width = 0.8 / max(len(models), 1)
        positions = np.arange(len(metrics))
        for index, model in enumerate(models):
            values = [summaries[task.name][model].get(metric) for metric in metrics]
            heights = [value if isinstance(value, (int, float)) else 0.0 for value in values]
            axis.bar(positions + index * width - 0.4 + width / 2, heights, width, label=model)
        axis.set_xticks(positions, metrics, rotation=30, ha="right", fontsize=8)
        axis.set_title(task.name)
        axis.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(summaries: Summaries, tasks: Sequence[Task], output_dir: str | Path) -> dict[str, Path]:
    """
    Writes `summary.json` and `summary.md`, and `comparison.png` when more than one model was evaluated.

    Args:
        summaries (`Summaries`): `{task: {model: summary}}`.
        tasks (`Sequence[Task]`): The tasks.
        output_dir (`str | Path`): The root output directory.

    Returns:
        `dict[str, Path]`: the files written, by kind (`"json"`, `"markdown"`, `"chart"`).
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": output_dir / "summary.json", "markdown": output_dir / "summary.md"}
    files["json"].write_text(json.dumps(summaries, indent=2, default=str))
    files["markdown"].write_text(markdown_table(summaries, tasks))
    if len({model for per_task in summaries.values() for model in per_task}) > 1:
        files["chart"] = bar_chart(summaries, tasks, output_dir / "comparison.png")
    return files
