"""The runner on every task with a scripted callable model: hand-checked summaries, resume, bad input, reports, CLI."""

import json

import pytest
from conftest import (
    SCIENCEQA_PROBLEMS,
    ScriptedModel,
    pope_reply,
    scienceqa_reply,
    vqa_reply,
)
from PIL import Image

from transformers_lavin.evaluation import (
    CaptioningTask,
    LlavaBenchTask,
    PopeTask,
    ScienceQATask,
    VQATask,
    read_results,
    run_evaluation,
    run_task,
)
from transformers_lavin.evaluation.cli import main

# Hand-worked from SCIENCEQA_PROBLEMS: p1, p4 (read by the "(B)" fallback) and p5 are right, p2 and p6 wrong, p3
# cannot be read (counted wrong).
SCIENCEQA_EXPECTED = {
    "NAT": 100.0,  # p1, p4
    "SOC": 50.0,  # p2 wrong, p5 right
    "LAN": 0.0,  # p3, p6
    "TXT": 100 / 3,  # p2, p4, p6
    "IMG": 100.0,  # p1, p4, p5
    "NO": 0.0,  # p3
    "G1-6": 200 / 3,  # p1, p3, p5
    "G7-12": 100 / 3,  # p2, p4, p6
    "Avg": 50.0,
}


def test_scienceqa_end_to_end(scienceqa_dir, tmp_path):
    model = ScriptedModel(scienceqa_reply)
    task = ScienceQATask(scienceqa_dir, answer_rule="lenient")
    summary = run_task(model, task, tmp_path, "scripted", batch_size=4, progress=False)
    for column, value in SCIENCEQA_EXPECTED.items():
        assert summary[column] == pytest.approx(value), column
    assert summary["n"] == 6 and summary["n_unparsed"] == 1 and summary["unparsed_ids"] == ["p3"]
    # Two batches (4 + 2); problems with an image get one, the others none; train problems are left out.
    assert [counts for counts, _ in model.calls] == [[1, 0, 0, 1], [1, 0]]
    # LaVIN's QCM prompt, built by transformers_lavin.data.prompts.
    assert (
        model.prompts[1] == "Question: Question p2?\nContext: A map.\nOptions: (A) north (B) south (C) east\nResponse:"
    )
    records = read_results(tmp_path / "scripted" / "scienceqa" / "results.jsonl")
    assert [r["id"] for r in records] == [p[0] for p in SCIENCEQA_PROBLEMS]
    assert records[2] == records[2] | {"output": "I am not sure what to say.", "prediction": None, "correct": False}
    assert json.loads((tmp_path / "scripted" / "scienceqa" / "summary.json").read_text())["Avg"] == 50.0


def test_interrupted_run_resumes_without_recomputing(scienceqa_dir, tmp_path):
    task = ScienceQATask(scienceqa_dir, answer_rule="lenient")
    full = run_task(ScriptedModel(scienceqa_reply), task, tmp_path / "full", batch_size=2, progress=False)

    interrupted = ScriptedModel(scienceqa_reply, fail_after_calls=2)  # dies in the third batch
    with pytest.raises(KeyboardInterrupt):
        run_task(interrupted, task, tmp_path / "resumed", batch_size=2, progress=False)
    results = tmp_path / "resumed" / "model" / "scienceqa" / "results.jsonl"
    assert [r["id"] for r in read_results(results)] == ["p1", "p2", "p3", "p4"]
    # A write cut off mid-line by the interruption is dropped on resume.
    with results.open("a") as handle:
        handle.write('{"id": "p5", "outp')

    resumed_model = ScriptedModel(scienceqa_reply)
    resumed = run_task(resumed_model, task, tmp_path / "resumed", batch_size=2, progress=False)
    assert [p.split("?")[0] for p in resumed_model.prompts] == ["Question: Question p5", "Question: Question p6"]
    assert resumed == full
    assert [r["id"] for r in read_results(results)] == [p[0] for p in SCIENCEQA_PROBLEMS]

    # A third run has nothing left to do and still gives the same summary.
    idle = ScriptedModel(scienceqa_reply)
    assert run_task(idle, task, tmp_path / "resumed", batch_size=2, progress=False) == full
    assert idle.calls == []


def test_pope_per_split(pope_dir, tmp_path):
    summary = run_task(ScriptedModel(pope_reply), PopeTask(pope_dir, answer_rule="lenient"), tmp_path, progress=False)
    # random: yes->yes (TP), no->no (TN), yes->"not" (FN), no->yes (FP).
    assert summary["random/accuracy"] == 50.0 and summary["random/precision"] == 50.0
    assert summary["random/recall"] == 50.0 and summary["random/f1"] == 50.0 and summary["random/yes_ratio"] == 50.0
    # adversarial: TP, FP, TN, empty answer to a "no" (counted wrong: FP), TP -> P 2/4, R 2/2.
    assert summary["adversarial/accuracy"] == pytest.approx(60.0)
    assert summary["adversarial/precision"] == pytest.approx(50.0)
    assert summary["adversarial/recall"] == pytest.approx(100.0)
    assert summary["adversarial/f1"] == pytest.approx(2 * 50 * 100 / 150)
    assert summary["adversarial/yes_ratio"] == pytest.approx(80.0)
    assert "popular/accuracy" not in summary  # no file for it: left out, not zero
    assert summary["all/accuracy"] == pytest.approx(100 * 5 / 9)
    assert summary["n_unparsed"] == 1


def test_vqa_end_to_end(vqa_dir, tmp_path):
    model = ScriptedModel(vqa_reply)
    summary = run_task(model, VQATask(vqa_dir), tmp_path, progress=False)
    # "A cat." vs 10 x "cat": the humans agree, so the raw reply must match: 0 (the official rule).
    # "two" vs 2 x "2": (2 * 1/3 + 8 * 2/3) / 10 = 0.6. "No" vs 1 x "no": 0.3.
    assert summary["other"] == pytest.approx(0.0)
    assert summary["number"] == pytest.approx(60.0)
    assert summary["yes/no"] == pytest.approx(30.0)
    assert summary["accuracy"] == pytest.approx((0 + 60 + 30) / 3)
    assert model.prompts[0] == "What animal?\nAnswer the question using a single word or phrase."


def test_unreadable_image_is_recorded_and_counted_wrong(pope_dir, tmp_path):
    (pope_dir / "images" / "img1.jpg").write_bytes(b"not a jpeg")  # question 1 of both splits, both answered right
    model = ScriptedModel(pope_reply)
    summary = run_task(model, PopeTask(pope_dir), tmp_path, batch_size=4, progress=False)
    assert summary["n_errors"] == 2 and summary["error_ids"] == ["random/1", "adversarial/1"]
    assert summary["all/accuracy"] == pytest.approx(100 * 3 / 9)  # 5 of 9 right before, minus the two
    record = read_results(tmp_path / "model" / "pope" / "results.jsonl")[0]
    assert "cannot read image" in record["error"] and record["output"] == "" and record["correct"] is False
    assert len(model.prompts) == 7  # the other samples of the batches still ran

    # Fixed image + retry_errors: only the two failed samples run again, and the score recovers.
    Image.new("RGB", (8, 8)).save(pope_dir / "images" / "img1.jpg")
    retry = ScriptedModel(pope_reply)
    summary = run_task(retry, PopeTask(pope_dir), tmp_path, retry_errors=True, progress=False)
    assert len(retry.prompts) == 2 and summary["n_errors"] == 0
    assert summary["all/accuracy"] == pytest.approx(100 * 5 / 9)


def test_unreadable_scienceqa_image_is_a_clear_load_error(scienceqa_dir):
    (scienceqa_dir / "images" / "test" / "p4" / "image.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="problem 'p4' .* cannot be read as an image"):
        ScienceQATask(scienceqa_dir).load()


def test_model_errors_are_recorded_not_fatal(scienceqa_dir, tmp_path):
    def broken(images, prompts):
        return ["The answer is A."]  # one text for a batch of several prompts

    summary = run_task(broken, ScienceQATask(scienceqa_dir), tmp_path, batch_size=3, progress=False)
    assert summary["n_errors"] == 6 and summary["Avg"] == 0.0
    record = read_results(tmp_path / "model" / "scienceqa" / "results.jsonl")[0]
    assert "one string per prompt" in record["error"]


def test_missing_fields_give_clear_errors(scienceqa_dir, pope_dir, vqa_dir, caption_file, bench_dir, tmp_path):
    problems = json.loads((scienceqa_dir / "problems.json").read_text())
    del problems["p2"]["choices"]
    (scienceqa_dir / "problems.json").write_text(json.dumps(problems))
    with pytest.raises(ValueError, match=r"problem 'p2' lacks the field\(s\) \['choices'\]"):
        ScienceQATask(scienceqa_dir).load()
    with pytest.raises(ValueError, match="Split 'val' not found"):
        ScienceQATask(scienceqa_dir, split="val").load()

    (pope_dir / "coco_pope_random.json").write_text('{"question_id": 1, "image": "a.jpg", "text": "Cat?"}\n')
    with pytest.raises(ValueError, match=r"Record 1 of .*coco_pope_random.json lacks the field\(s\) \['label'\]"):
        PopeTask(pope_dir).load()
    with pytest.raises(FileNotFoundError, match="No POPE split file"):
        PopeTask(tmp_path).load()

    (vqa_dir / "v2_mscoco_val2014_annotations.json").write_text('{"annotations": [{"question_id": 1}]}')
    with pytest.raises(ValueError, match=r"lacks the field\(s\) \['answers'\]"):
        VQATask(vqa_dir).load()
    with pytest.raises(FileNotFoundError, match="ScienceQA problems file not found"):
        ScienceQATask(tmp_path / "nowhere").load()

    (caption_file.parent / "bad.json").write_text('{"images": [{"id": 1}], "annotations": []}')
    with pytest.raises(ValueError, match=r"images\[0\] of .*bad.json lacks the field\(s\) \['file_name'\]"):
        CaptioningTask(caption_file.parent / "bad.json").load()
    (bench_dir / "questions.jsonl").write_text('{"question_id": 0, "image": "001.jpg", "text": "Q?"}\n')
    with pytest.raises(ValueError, match=r"Record 1 of questions.jsonl lacks the field\(s\) \['category'\]"):
        LlavaBenchTask(bench_dir).load()
    (bench_dir / "questions.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match="line 1, is not valid JSON"):
        LlavaBenchTask(bench_dir).load()


def test_comparison_report(scienceqa_dir, pope_dir, tmp_path):
    always_a = ScriptedModel(lambda prompt: "The answer is A. Yes.")
    models = {
        "scripted": ScriptedModel(lambda p: scienceqa_reply(p) if "Question" in p else pope_reply(p)),
        "always_a": always_a,
    }
    tasks = [ScienceQATask(scienceqa_dir, answer_rule="lenient"), PopeTask(pope_dir)]
    summaries = run_evaluation(models, tasks, tmp_path, progress=False)
    assert summaries["scienceqa"]["scripted"]["Avg"] == 50.0
    assert summaries["scienceqa"]["always_a"]["Avg"] == pytest.approx(100 * 3 / 6)  # p1, p3, p6 have answer A
    assert json.loads((tmp_path / "summary.json").read_text())["pope"]["always_a"]["random/yes_ratio"] == 100.0
    table = (tmp_path / "summary.md").read_text()
    assert "| model | NAT | SOC | LAN | TXT | IMG | NO | G1-6 | G7-12 | Avg | n | n_errors |" in table
    assert "| scripted | 100.00 | 50.00 | 0.00 | 33.33 | 100.00 | 0.00 | 66.67 | 33.33 | 50.00 | 6 | 0 |" in table
    assert "random/accuracy" in table and "adversarial/f1" in table
    with Image.open(tmp_path / "comparison.png") as chart:
        assert chart.format == "PNG" and chart.width > 300


def test_cli_with_a_callable_from_a_file(scienceqa_dir, vqa_dir, tmp_path, capsys):
    module = tmp_path / "my_model.py"
    module.write_text("def generate(images, prompts):\n    return ['The answer is A.' for _ in prompts]\n")
    out = tmp_path / "runs"
    status = main(
        ["--model", f"mine={module}:generate", "--task", f"scienceqa={scienceqa_dir}", "--task", f"vqa={vqa_dir}",
         "--task-option", "vqa.normalize=always", "--task-option", "vqa.instruction=Short answer.",
         "--output-dir", str(out), "--batch-size", "4", "--no-progress"]
    )  # fmt: skip
    assert status == 0
    printed = capsys.readouterr().out
    # Always "A": right for p1, p3 and p6 (worked out by hand per column).
    assert "| mine | 50.00 | 0.00 | 100.00 | 33.33 | 33.33 | 100.00 | 66.67 | 33.33 | 50.00 | 6 | 0 |" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scienceqa"]["mine"]["Avg"] == pytest.approx(50.0)
    assert json.loads((out / "mine" / "vqa" / "config.json").read_text())["normalize"] == "always"
    assert read_results(out / "mine" / "vqa" / "results.jsonl")[0]["prompt"].endswith("\nShort answer.")


def test_cli_rejects_bad_arguments_with_one_line_naming_the_program(tmp_path, capsys):
    for argv, message in [
        (["--model", "x.py:f", "--task", f"nope={tmp_path}"], "unknown task 'nope'"),
        (["--model", "x.py:f", "--task", f"vqa={tmp_path}", "--task-option", "vqa.colour=red"], "no option 'colour'"),
        (["--model", "x.py:f", "--task", f"vqa={tmp_path}", "--judge-url", "http://127.0.0.1:9/v1"], "--judge_model"),
        (["--model", "x.py:f", "--task", "vqa"], "--task must look like KEY=VALUE"),
        (["--model", "x.py:f"], "the following arguments are required: --task"),
        (["--model", "x.py:f", "--task", f"vqa={tmp_path}", "--batch_size", "many"], "invalid int value"),
    ]:
        assert main(argv) == 1, argv
        error = capsys.readouterr().err
        assert error.startswith("lavin-eval: error: ") and error.count("\n") == 1 and message in error, error


def test_cli_exits_1_without_a_table_when_every_sample_failed(pope_dir, tmp_path, capsys):
    model_file = tmp_path / "broken.py"
    model_file.write_text("def generate(images, prompts):\n    raise RuntimeError('out of memory')\n")
    out = tmp_path / "runs"
    argv = ["--model", f"broken={model_file}:generate", "--task", f"pope={pope_dir}", "--output_dir", str(out)]
    assert main([*argv, "--no_progress"]) == 1
    captured = capsys.readouterr()
    assert "|" not in captured.out and "lavin-eval: error: every sample failed in pope/broken (9 of 9" in captured.err
    # The records say why, and a fixed model can retry them.
    assert "out of memory" in read_results(out / "broken" / "pope" / "results.jsonl")[0]["error"]
