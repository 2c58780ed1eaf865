"""`lavin-eval`: evaluate one or more models on one or more tasks from the command line.

Example:
```
lavin-eval --model lavin=path/to/lavin --model llava=llava-hf/llava-1.5-7b-hf \\
    --task scienceqa=data/scienceqa --task pope=data/pope --task-option scienceqa.split=test \\
    --output-dir runs/ --batch-size 8
```
"""

import argparse
import inspect
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .judge import HTTPJudge, load_hf_judge
from .models import load_model
from .report import markdown_table
from .runner import run_evaluation
from .tasks import TASKS, Task

logger = logging.getLogger(__name__)


def _split_pair(text: str, what: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise SystemExit(f"error: {what} must look like KEY=VALUE; got {text!r}.")
    return key.strip(), value.strip()


def _parse_value(text: str, default: Any) -> Any:
    if isinstance(default, (list, tuple)):
        return [part.strip() for part in text.split(",") if part.strip()]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def build_tasks(task_specs: Sequence[str], option_specs: Sequence[str], judge: Any = None) -> list[Task]:
    """
    Tasks from `NAME=DATA_PATH` specs and `NAME.KEY=VALUE` options.

    Args:
        task_specs (`Sequence[str]`): E.g. `["scienceqa=data/scienceqa"]`.
        option_specs (`Sequence[str]`): E.g. `["scienceqa.split=val"]`; a value is read as JSON when it parses
            (numbers, `true`), as a comma-separated list for list options, else as text.
        judge (`Judge`, *optional*): Given to the `llava_bench` task.
    """
    options: dict[str, dict[str, str]] = {}
    for spec in option_specs:
        dotted, value = _split_pair(spec, "--task-option")
        name, _, key = dotted.partition(".")
        if not key:
            raise SystemExit(f"error: --task-option must look like TASK.KEY=VALUE; got {spec!r}.")
        options.setdefault(name, {})[key] = value
    unknown = set(options) - {_split_pair(spec, "--task")[0] for spec in task_specs}
    if unknown:
        raise SystemExit(f"error: --task-option given for task(s) not selected with --task: {sorted(unknown)}.")
    tasks = []
    for spec in task_specs:
        name, data = _split_pair(spec, "--task")
        if name not in TASKS:
            raise SystemExit(f"error: unknown task {name!r}; choose from {', '.join(TASKS)}.")
        cls = TASKS[name]
        parameters = inspect.signature(cls.__init__).parameters
        kwargs: dict[str, Any] = {}
        for key, value in options.get(name, {}).items():
            if key not in parameters or key in ("self", "judge"):
                allowed = [p for p in parameters if p not in ("self", "judge")][1:]
                raise SystemExit(f"error: task {name!r} has no option {key!r}; options: {', '.join(allowed)}.")
            kwargs[key] = _parse_value(value, parameters[key].default)
        if "judge" in parameters:
            kwargs["judge"] = judge
        tasks.append(cls(data, **kwargs))
    return tasks


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lavin-eval",
        description="Evaluate LaVIN and other vision-language models on ScienceQA, POPE, captioning, VQA and "
        "LLaVA-Bench-style open-ended tasks.",
    )
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="[NAME=]SPEC",
        help="A model directory or Hub id (loaded with AutoModelForImageTextToText), or 'module:function' / "
        "'file.py:function' for a callable (images, prompts) -> texts. Repeat to compare models.",
    )
    parser.add_argument(
        "--task",
        action="append",
        required=True,
        metavar="TASK=DATA",
        help=f"A task and its data path; tasks: {', '.join(TASKS)}. Repeatable.",
    )
    parser.add_argument(
        "--task-option",
        action="append",
        default=[],
        metavar="TASK.KEY=VALUE",
        help="A task setting, e.g. scienceqa.split=val or pope.instruction='Answer yes or no.'",
    )
    parser.add_argument("--output-dir", default="eval_runs", help="Where results, summaries and the chart go.")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--limit", type=int, default=None, help="Evaluate only the first N samples of each task.")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="Override each task's generation length.")
    parser.add_argument("--retry-errors", action="store_true", help="Generate again for samples that failed.")
    parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")
    hf = parser.add_argument_group("transformers models")
    hf.add_argument("--dtype", default="auto", help="e.g. bfloat16, float16, float32")
    hf.add_argument("--device", default=None, help="e.g. cuda, cuda:1, cpu (default: cuda when available)")
    hf.add_argument("--trust-remote-code", action="store_true")
    judge = parser.add_argument_group("judge (llava_bench only; nothing is called unless given)")
    judge.add_argument("--judge-url", help="An OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    judge.add_argument("--judge-model", help="The model name to send to --judge-url.")
    judge.add_argument("--judge-api-key-env", default="OPENAI_API_KEY", help="Environment variable with the key.")
    judge.add_argument("--judge-timeout", type=float, default=60.0)
    judge.add_argument("--judge-retries", type=int, default=2)
    judge.add_argument("--judge-hf", metavar="PATH", help="A local causal LM to use as the judge instead.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `lavin-eval`; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.judge_url and args.judge_hf:
        raise SystemExit("error: give either --judge-url or --judge-hf, not both.")
    judge = None
    if args.judge_url:
        if not args.judge_model:
            raise SystemExit("error: --judge-url needs --judge-model (the model name the endpoint serves).")
        judge = HTTPJudge(
            args.judge_url,
            args.judge_model,
            api_key_env=args.judge_api_key_env,
            timeout=args.judge_timeout,
            retries=args.judge_retries,
        )
    elif args.judge_hf:
        judge = load_hf_judge(args.judge_hf)
    tasks = build_tasks(args.task, args.task_option, judge)
    if judge is None and any(task.name == "llava_bench" for task in tasks):
        logger.warning("llava_bench without a judge: answers are generated and saved but not rated.")

    targets: dict[str, str] = {}
    for spec in args.model:
        name, sep, target = spec.partition("=")
        name, target = (name, target) if sep else (Path(spec.split(":")[0]).name, spec)
        if name in targets:
            raise SystemExit(f"error: two models are named {name!r}; name them with NAME=SPEC.")
        targets[name] = target
    hf_kwargs = {"dtype": args.dtype, "device": args.device, "trust_remote_code": args.trust_remote_code}
    # A generator, so that each model is loaded only when its turn comes and freed before the next one.
    models = ((name, load_model(target, **hf_kwargs)) for name, target in targets.items())
    summaries = run_evaluation(
        models,
        tasks,
        args.output_dir,
        batch_size=args.batch_size,
        limit=args.limit,
        max_new_tokens=args.max_new_tokens,
        retry_errors=args.retry_errors,
        progress=not args.no_progress,
    )
    sys.stdout.write(markdown_table(summaries, tasks))
    sys.stdout.write(f"\nResults in {Path(args.output_dir).resolve()}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
