"""`lavin-eval`: evaluate one or more models on one or more tasks from the command line.

Example:
```
lavin-eval --model lavin=path/to/lavin --model llava=llava-hf/llava-1.5-7b-hf \\
    --task scienceqa=data/scienceqa --task pope=data/pope --task_option scienceqa.split=test \\
    --output_dir runs/ --batch_size 8
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

from ..adapter_files import check_adapter_directory
from ..cli_errors import EXIT_USER_ERROR, UserInputError, add_debug_argument, user_errors
from ..cli_flags import UnderscoreArgumentParser
from .judge import HTTPJudge, load_hf_judge
from .models import adapter_base, check_merge_mode, load_model, resolve_device
from .output_lock import output_folder_lock
from .report import markdown_table
from .runner import CONFIG_FILE, _check_settings, run_evaluation
from .tasks import TASKS, Task

logger = logging.getLogger(__name__)


def _split_pair(text: str, what: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise UserInputError(f"{what} must look like KEY=VALUE; got {text!r}.")
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
        dotted, value = _split_pair(spec, "--task_option")
        name, _, key = dotted.partition(".")
        if not key:
            raise UserInputError(f"--task_option must look like TASK.KEY=VALUE; got {spec!r}.")
        options.setdefault(name, {})[key] = value
    unknown = set(options) - {_split_pair(spec, "--task")[0] for spec in task_specs}
    if unknown:
        raise UserInputError(f"--task_option given for task(s) not selected with --task: {sorted(unknown)}.")
    tasks = []
    for spec in task_specs:
        name, data = _split_pair(spec, "--task")
        if name not in TASKS:
            raise UserInputError(f"unknown task {name!r}; choose from {', '.join(TASKS)}.")
        cls = TASKS[name]
        parameters = inspect.signature(cls.__init__).parameters
        kwargs: dict[str, Any] = {}
        for key, value in options.get(name, {}).items():
            if key not in parameters or key in ("self", "judge"):
                allowed = [p for p in parameters if p not in ("self", "judge")][1:]
                raise UserInputError(f"task {name!r} has no option {key!r}; options: {', '.join(allowed)}.")
            kwargs[key] = _parse_value(value, parameters[key].default)
        if "judge" in parameters:
            kwargs["judge"] = judge
        tasks.append(cls(data, **kwargs))
    return tasks


def build_parser() -> argparse.ArgumentParser:
    parser = UnderscoreArgumentParser(
        prog="lavin-eval",
        description="Evaluate LaVIN and other vision-language models on ScienceQA, POPE, captioning, VQA and "
        "LLaVA-Bench-style open-ended tasks.",
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="[NAME=]SPEC",
        help="A model directory or Hub id (loaded with AutoModelForImageTextToText), or 'module:function' / "
        "'file.py:function' for a callable (images, prompts) -> texts. Repeat to compare models. With --adapter: "
        "the base model (default: the adapter's base_model_name_or_path).",
    )
    parser.add_argument(
        "--adapter",
        metavar="[NAME=]DIR",
        help="A PEFT adapter directory (MMA, LoRA, ...) to evaluate on its base model.",
    )
    parser.add_argument(
        "--merge_adapter",
        nargs="?",
        const="yes",
        metavar="MODALITY",
        help="Merge the adapter into the base weights first; an MMA adapter merges for one modality: image or text.",
    )
    parser.add_argument(
        "--task",
        action="append",
        required=True,
        metavar="TASK=DATA",
        help=f"A task and its data path; tasks: {', '.join(TASKS)}. Repeatable.",
    )
    parser.add_argument(
        "--task_option",
        action="append",
        default=[],
        metavar="TASK.KEY=VALUE",
        help="A task setting, e.g. scienceqa.split=val or pope.instruction='Answer yes or no.'",
    )
    parser.add_argument("--output_dir", default="eval_runs", help="Where results, summaries and the chart go.")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--limit", type=int, default=None, help="Evaluate only the first N samples of each task.")
    parser.add_argument("--max_new_tokens", type=int, default=None, help="Override each task's generation length.")
    parser.add_argument("--retry_errors", action="store_true", help="Generate again for samples that failed.")
    parser.add_argument(
        "--overwrite", action="store_true", help="Discard earlier results in --output_dir made with other settings."
    )
    add_debug_argument(parser)
    parser.add_argument("--no_progress", action="store_true", help="Hide the progress bar.")
    hf = parser.add_argument_group("transformers models")
    hf.add_argument("--dtype", default="auto", help="e.g. bfloat16, float16, float32")
    hf.add_argument("--device", default=None, help="e.g. cuda, cuda:1, cpu (default: cuda when available)")
    hf.add_argument("--trust_remote_code", action="store_true")
    judge = parser.add_argument_group("judge (llava_bench only; nothing is called unless given)")
    judge.add_argument("--judge_url", help="An OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    judge.add_argument("--judge_model", help="The model name to send to --judge_url.")
    judge.add_argument("--judge_api_key_env", default="OPENAI_API_KEY", help="Environment variable with the key.")
    judge.add_argument("--judge_timeout", type=float, default=60.0, help="Seconds for one whole request.")
    judge.add_argument("--judge_retries", type=int, default=2)
    judge.add_argument("--judge_temperature", type=float, default=0.2, help="LLaVA's value by default.")
    judge.add_argument("--judge_max_tokens", type=int, default=1024, help="LLaVA's value by default.")
    judge.add_argument(
        "--judge_max_reply_bytes", type=int, default=1 << 20, help="Refuse judge replies larger than this."
    )
    judge.add_argument("--judge_hf", metavar="PATH", help="A local causal LM to use as the judge instead.")
    return parser


def _name_and_value(spec: str) -> tuple[str | None, str]:
    name, sep, value = spec.partition("=")
    return (name, value) if sep else (None, spec)


def _model_targets(args: argparse.Namespace) -> dict[str, tuple[str | None, str | None]]:
    """Model name -> (model spec, adapter directory)."""
    if args.adapter:
        if len(args.model) > 1:
            raise ValueError("--adapter takes at most one --model (its base model).")
        adapter_name, directory = _name_and_value(args.adapter)
        model_name, base = _name_and_value(args.model[0]) if args.model else (None, None)
        if adapter_name and model_name and adapter_name != model_name:
            raise ValueError(
                f"--model names the run {model_name!r} and --adapter names it {adapter_name!r}; give the name once."
            )
        if Path(directory).is_dir():
            # before any data or model loads
            check_merge_mode(check_adapter_directory(directory).get("peft_type"), args.merge_adapter, directory)
        if base is None and adapter_base(directory) is None:
            raise ValueError(f"The adapter at {directory} names no base model; give it with --model.")
        return {adapter_name or model_name or Path(directory).name: (base, directory)}
    if not args.model:
        raise ValueError("give at least one --model (or an --adapter).")
    if args.merge_adapter is not None:
        raise ValueError("--merge_adapter needs --adapter.")
    targets: dict[str, tuple[str | None, str | None]] = {}
    for spec in args.model:
        name, target = _name_and_value(spec)
        name = name or Path(spec.split(":")[0]).name
        if name in targets:
            raise ValueError(f"two models are named {name!r}; name them with NAME=SPEC.")
        targets[name] = (target, None)
    return targets


def failed_runs(summaries: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """`task/model` of every run in which each sample failed (unreadable images, a model that raised)."""
    return [
        f"{task}/{model} ({summary['n_errors']} of {summary['n']} failed; first error in its results.jsonl)"
        for task, by_model in summaries.items()
        for model, summary in by_model.items()
        if summary.get("n") and summary.get("n_errors", 0) >= summary["n"]
    ]


def _run(args: argparse.Namespace) -> int:
    if args.judge_url and args.judge_hf:
        raise ValueError("give either --judge_url or --judge_hf, not both.")
    judge = None
    if args.judge_url:
        if not args.judge_model:
            raise ValueError("--judge_url needs --judge_model (the model name the endpoint serves).")
        judge = HTTPJudge(
            args.judge_url,
            args.judge_model,
            api_key_env=args.judge_api_key_env,
            timeout=args.judge_timeout,
            retries=args.judge_retries,
            temperature=args.judge_temperature,
            max_tokens=args.judge_max_tokens,
            max_reply_bytes=args.judge_max_reply_bytes,
        )
    tasks = build_tasks(args.task, args.task_option, judge)
    targets = _model_targets(args)
    if args.device is not None:
        resolve_device(args.device)
    # Every input is checked before anything is loaded or written: the data of each task, and earlier results.
    for task in tasks:
        task.load()
        for name in targets:
            _check_settings(Path(args.output_dir) / name / task.name / CONFIG_FILE, task.config(), args.overwrite)
    if args.judge_hf:
        judge = load_hf_judge(args.judge_hf)
        for task in tasks:
            if hasattr(task, "judge"):
                task.judge = judge
    if judge is None and any(task.name == "llava_bench" for task in tasks):
        logger.warning("llava_bench without a judge: answers are generated and saved but not rated.")

    hf_kwargs = {"dtype": args.dtype, "device": args.device, "trust_remote_code": args.trust_remote_code}
    if args.adapter:
        hf_kwargs["merge_adapter"] = args.merge_adapter
    # A generator, so that each model is loaded only when its turn comes and freed before the next one.
    models = ((name, load_model(spec, adapter=adapter, **hf_kwargs)) for name, (spec, adapter) in targets.items())
    with output_folder_lock(args.output_dir):
        summaries = run_evaluation(
            models,
            tasks,
            args.output_dir,
            batch_size=args.batch_size,
            limit=args.limit,
            max_new_tokens=args.max_new_tokens,
            retry_errors=args.retry_errors,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    failed = failed_runs(summaries)
    if failed:
        # A table of zeros would read as a score; every sample erred, so there is none.
        print(
            f"lavin-eval: error: every sample failed in {'; '.join(failed)}, so there is no score. The records in "
            f"{Path(args.output_dir).resolve()} say why; fix the cause and run again with --retry_errors.",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    sys.stdout.write(markdown_table(summaries, tasks))
    sys.stdout.write(f"\nResults in {Path(args.output_dir).resolve()}\n")
    return 0


@user_errors("lavin-eval")
def main(argv: list[str]) -> int:
    """Entry point of `lavin-eval`; returns the exit status. A bad input, or a run in which every sample failed, is
    one line on stderr and status 1."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return _run(args)


if __name__ == "__main__":
    raise SystemExit(main())
