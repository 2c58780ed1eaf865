"""What a user sees on a CPU machine before any training: a mistake is reported as itself, in one line, before TRL's
"bf16 needs a GPU" check; `--help` and errors come without loading the training, plotting or web stacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from artifacts import console_script, run

from transformers_lavin.scripts.sft import main

TRAIN = ["--model_name_or_path", "base", "--dataset_name", "data/train.jsonl", "--output_dir", "never"]


def _error(capsys, argv) -> str:
    assert main(argv) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("lavin-train: error: "), lines
    return lines[-1]


def test_a_typo_is_reported_before_the_device_check_by_the_console_script(lavin_base, work):
    # No --bf16 false / --use_cpu: on this CPU machine TRL's check would fail first without the ordering.
    result = run([console_script("lavin-train"), *TRAIN, "--lerning_rate", "1e-3"], cwd=work, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "unknown option(s): --lerning_rate (did you mean --learning_rate?)" in last, result.stderr
    assert not (work / "never").exists()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"--model_name_or_path": "./no-such-base"}, "--model_name_or_path './no-such-base': no such directory"),
        ({"--model_name_or_path": "out"}, "is an adapter directory (adapter_config.json), not a model"),
        ({"--model_name_or_path": "data"}, "holds no config.json"),
        ({"--dataset_name": "data/tain.jsonl"}, "--dataset_name 'data/tain.jsonl': no such file or folder"),
        ({"--max_steps": "ten"}, "argument --max_steps/--max-steps: invalid int value: 'ten'"),
        ({"--mma_adapter_type": "mlp"}, "adapter_type"),
        ({"--peft_method": "ia3"}, "--peft_method 'ia3'"),
    ],
)
def test_each_mistake_is_named_before_the_device_check(lavin_adapter, work, monkeypatch, capsys, change, expected):
    monkeypatch.chdir(work)
    argv = list(TRAIN)
    for option, value in change.items():
        if option in argv:
            argv[argv.index(option) + 1] = value
        else:
            argv += [option, value]
    assert expected in _error(capsys, argv)
    assert not (work / "never").exists()


def test_the_device_check_comes_last_with_the_flags_that_fix_it(lavin_base, work, monkeypatch, capsys):
    monkeypatch.chdir(work)
    line = _error(capsys, TRAIN)
    assert "--bf16 is on (TRL's default)" in line and "pass --bf16 false --use_cpu true" in line


# Each console script's module and what its --help must not load. conversion.cli first: it alone must also leave
# out datasets, which the others may load. One interpreter runs them all in this order and reports, after each,
# which of its heavy modules are loaded so far: a module that loads one fails its own check (and any after it).
HELP_MODULES = {
    "transformers_lavin.conversion.cli": ("gradio", "matplotlib", "datasets"),
    "transformers_lavin.scripts.sft": ("matplotlib", "gradio"),
    "transformers_lavin.chat.app": ("gradio", "matplotlib"),
    "transformers_lavin.evaluation.cli": ("gradio", "matplotlib"),
}
HELP_RUN = f"""
import importlib, json, sys
loaded = {{}}
for module, heavy in {list(HELP_MODULES.items())!r}:
    try:
        importlib.import_module(module).main(["--help"])
    except SystemExit:
        pass
    loaded[module] = sorted(name for name in heavy if name in sys.modules)
print(json.dumps(loaded))
"""


@pytest.fixture(scope="module")
def loaded_by_help() -> dict[str, list[str]]:
    result = subprocess.run([sys.executable, "-c", HELP_RUN], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-500:] + result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", HELP_MODULES)
def test_help_loads_no_training_plotting_or_web_stack(module, loaded_by_help):
    assert loaded_by_help[module] == [], loaded_by_help


def test_the_processor_pads_a_truncated_batch_without_a_warning():
    import warnings

    from transformers_lavin.testing_utils import build_tiny_lavin

    _, processor = build_tiny_lavin()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        processor(text=["a short one", "a longer prompt"], padding=True, truncation=True, max_length=64)


def test_a_base_built_into_a_relative_output_dir_is_recorded_by_its_absolute_path(work, monkeypatch, capsys):
    monkeypatch.chdir(work)
    quick = [
        "--max_steps",
        "1",
        "--bf16",
        "false",
        "--use_cpu",
        "true",
        "--report_to",
        "none",
        "--save_strategy",
        "no",
    ]
    synthetic = ["--synthetic", "--synthetic_num_train", "8", "--synthetic_num_eval", "2"]
    assert main(["--tiny", *synthetic, "--output_dir", "tiny-run", *quick]) == 0
    recorded = json.loads((work / "tiny-run" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert recorded == str((work / "tiny-run" / "base_model").resolve())  # not "tiny-run/base_model"
