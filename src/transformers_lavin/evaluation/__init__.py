"""Evaluation of LaVIN and other vision-language models: ScienceQA, POPE, captioning, VQA and LLaVA-Bench-style
open-ended tasks, with one runner for transformers models and plain callables. The command line is `lavin-eval`
([`cli.main`]); see `docs/evaluation.md`."""

from .judge import HFJudge, HTTPJudge, Judge, JudgeError, load_hf_judge, parse_judge_scores
from .models import CallableAdapter, HFModelAdapter, ModelAdapter, load_callable, load_hf_model, load_model
from .report import bar_chart, markdown_table, write_report
from .runner import read_results, run_evaluation, run_task
from .tasks import TASKS, CaptioningTask, LlavaBenchTask, PopeTask, Sample, ScienceQATask, Task, VQATask

__all__ = [
    "TASKS",
    "CallableAdapter",
    "CaptioningTask",
    "HFJudge",
    "HFModelAdapter",
    "HTTPJudge",
    "Judge",
    "JudgeError",
    "LlavaBenchTask",
    "ModelAdapter",
    "PopeTask",
    "Sample",
    "ScienceQATask",
    "Task",
    "VQATask",
    "bar_chart",
    "load_callable",
    "load_hf_judge",
    "load_hf_model",
    "load_model",
    "markdown_table",
    "parse_judge_scores",
    "read_results",
    "run_evaluation",
    "run_task",
    "write_report",
]
