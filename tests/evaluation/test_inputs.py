"""Hub-schema tables read through `datasets`, hostile input (paths, results files, settings, images, judge servers)
and the command line's errors."""

import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import datasets
import pytest
from conftest import ScriptedModel, pope_reply, write_jsonl
from PIL import Image

from transformers_lavin.evaluation import (
    CaptioningTask,
    HTTPJudge,
    JudgeError,
    LlavaBenchTask,
    PopeTask,
    ScienceQATask,
    VQATask,
    read_results,
    run_task,
)
from transformers_lavin.evaluation.cli import main
from transformers_lavin.evaluation.runner import SettingsMismatchError


def png(color=(200, 0, 0), size=(8, 8)) -> dict:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def write_parquet(path, rows, image_columns=("image",)):
    table = datasets.Dataset.from_list(rows)
    for column in image_columns:
        if column in table.column_names:
            table = table.cast_column(column, datasets.Image())
    table.to_parquet(str(path))
    return path


def test_pope_hub_schema(tmp_path):
    rows = [
        {"id": str(i), "question_id": str(i), "question": f"[random:{q}] Is there a cat?", "answer": label,
         "image_source": "COCO_val2014_1", "image": png(), "category": "random"}
        for i, (q, label, _) in enumerate([(1, "yes", ""), (2, "no", ""), (3, "yes", ""), (4, "no", "")])
    ]  # fmt: skip
    data = write_parquet(tmp_path / "pope.parquet", rows)
    summary = run_task(ScriptedModel(pope_reply), PopeTask(data), tmp_path / "out", progress=False)
    # Replies of POPE_ROWS["random"]: TP, TN, FN ("There is not one."), FP.
    assert summary["random/accuracy"] == 50.0 and summary["answer_rule"] == "official" and summary["n_errors"] == 0


def test_scienceqa_vqa_captions_bench_hub_schemas(tmp_path):
    scienceqa = write_parquet(
        tmp_path / "sqa.parquet",
        [
            {"image": png(), "question": "Which?", "choices": ["cat", "dog"], "answer": 1, "hint": "", "task": "t",
             "grade": "grade3", "subject": "natural science", "topic": "x", "category": "c", "skill": "s",
             "lecture": "L.", "solution": "S."},
            {"image": None, "question": "Other?", "choices": ["a", "b", "c"], "answer": 0, "hint": "Read.",
             "task": "t", "grade": "grade9", "subject": "language science", "topic": "x", "category": "c",
             "skill": "s", "lecture": "L.", "solution": "S."},
        ],
    )  # fmt: skip
    model = ScriptedModel(lambda p: "The answer is B." if "Which?" in p else "The answer is B.")
    summary = run_task(model, ScienceQATask(scienceqa), tmp_path / "sqa", progress=False)
    assert summary["NAT"] == 100.0 and summary["LAN"] == 0.0 and summary["IMG"] == 100.0 and summary["TXT"] == 0.0
    assert [counts for counts, _ in model.calls] == [[1, 0]]
    assert model.prompts[0] == "Question: Which?\nContext: N/A\nOptions: (A) cat (B) dog\nResponse:"

    answers = [{"answer": a, "answer_confidence": "yes", "answer_id": k} for k, a in enumerate(["2"] * 2 + ["3"] * 8)]
    vqa = write_parquet(
        tmp_path / "vqa.parquet",
        [{"question_id": 7, "question": "How many?", "answers": answers, "multiple_choice_answer": "3",
          "answer_type": "number", "image": png()}],
    )  # fmt: skip
    summary = run_task(ScriptedModel(lambda p: "two"), VQATask(vqa), tmp_path / "vqa", progress=False)
    assert summary["number"] == pytest.approx(100 * (2 * 1 / 3 + 8 * 2 / 3) / 10)

    (tmp_path / "coco" / "val2014").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "coco" / "val2014" / "x.jpg")
    karpathy = tmp_path / "karpathy.json"
    write_jsonl(karpathy, [{"filepath": "val2014", "filename": "x.jpg", "cocoid": 5,
                            "sentences": ["a cat sits on the mat"], "split": "test"}])  # fmt: skip
    task = CaptioningTask(karpathy, image_dir=tmp_path / "coco", layout="hub")
    summary = run_task(ScriptedModel(lambda p: "a cat sits on the mat"), task, tmp_path / "cap", progress=False)
    assert summary["n_errors"] == 0 and summary["ROUGE-L"] == pytest.approx(100.0)

    bench = write_parquet(
        tmp_path / "bench.parquet",
        [{"question_id": 0, "question": "What?", "image": png(), "caption": "An apple.", "gpt_answer": "Apple.",
          "category": "conv", "image_id": "001"}],
    )  # fmt: skip
    prompts = []
    task = LlavaBenchTask(bench, judge=lambda s, u: prompts.append(u) or "8 4\nok")
    summary = run_task(ScriptedModel(lambda p: "An apple"), task, tmp_path / "bench", progress=False)
    assert summary["conv"] == 50.0 and prompts[0].startswith("[Context]\nAn apple.\n\n[Question]\nWhat?")


@pytest.mark.parametrize("image", ["/etc/hostname", "../outside.jpg", "sub/../../outside.jpg"])
def test_image_paths_must_stay_inside_the_data_root(pope_dir, image):
    write_jsonl(pope_dir / "coco_pope_random.json", [{"question_id": 1, "image": image, "text": "?", "label": "yes"}])
    with pytest.raises(ValueError, match="outside the data directory"):
        PopeTask(pope_dir, splits=["random"]).load()


def test_retry_errors_rewrites_results_atomically(pope_dir, tmp_path, monkeypatch):
    (pope_dir / "images" / "img1.jpg").write_bytes(b"broken")
    run_task(ScriptedModel(pope_reply), PopeTask(pope_dir), tmp_path, progress=False)
    results = tmp_path / "model" / "pope" / "results.jsonl"
    before = results.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        run_task(ScriptedModel(pope_reply), PopeTask(pope_dir), tmp_path, retry_errors=True, progress=False)
    assert results.read_bytes() == before and len(read_results(results)) == 9


def test_last_line_without_newline_is_repaired(pope_dir, tmp_path):
    task = PopeTask(pope_dir)
    first = run_task(ScriptedModel(pope_reply), task, tmp_path, limit=3, progress=False)
    results = tmp_path / "model" / "pope" / "results.jsonl"
    results.write_bytes(results.read_bytes().rstrip(b"\n"))  # the newline of the last record was never written
    run_task(ScriptedModel(pope_reply), task, tmp_path, limit=6, progress=False)
    assert [r["id"] for r in read_results(results)][:3] == ["random/1", "random/2", "random/3"]
    assert len(read_results(results)) == 6 and first["n"] == 3
    assert run_task(ScriptedModel(pope_reply), task, tmp_path, progress=False)["n"] == 9


def test_other_settings_are_refused_unless_overwrite(pope_dir, tmp_path):
    run_task(ScriptedModel(pope_reply), PopeTask(pope_dir), tmp_path, progress=False)
    with pytest.raises(SettingsMismatchError, match="instruction: '' -> 'Answer yes or no.'"):
        run_task(ScriptedModel(pope_reply), PopeTask(pope_dir, instruction="Answer yes or no."), tmp_path)
    model = ScriptedModel(pope_reply)
    run_task(model, PopeTask(pope_dir, instruction="Answer yes or no."), tmp_path, overwrite=True, progress=False)
    assert len(model.prompts) == 9  # started afresh
    config = json.loads((tmp_path / "model" / "pope" / "config.json").read_text())
    assert config["instruction"] == "Answer yes or no."


def test_decompression_bomb_is_one_sample_error(pope_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # every 40x32 test image is now a "bomb"
    summary = run_task(ScriptedModel(pope_reply), PopeTask(pope_dir), tmp_path, progress=False)
    assert summary["n_errors"] == 9 and summary["all/accuracy"] == 0.0


class HostileServer:
    def __init__(self, handler_body):
        server = self
        self.hits: list[tuple[str, str, str | None]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                server.hits.append(("POST", self.path, self.headers.get("Authorization")))
                handler_body(self)

            def do_GET(self):  # noqa: N802
                server.hits.append(("GET", self.path, self.headers.get("Authorization")))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_judge_never_follows_redirects_with_the_key():
    def redirect(handler):
        handler.send_response(307)
        handler.send_header("Location", "http://localhost:1/steal")
        handler.end_headers()

    server = HostileServer(redirect)
    try:
        with pytest.raises(JudgeError, match="redirected .* not followed"):
            HTTPJudge(server.url, "j", api_key="secret", timeout=5, retries=0)("s", "u")
        assert server.hits == [("POST", "/v1/chat/completions", "Bearer secret")]
    finally:
        server.close()


def test_judge_reply_size_is_bounded_and_a_trickle_hits_the_deadline():
    def huge(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", str(1 << 20))
        handler.end_headers()
        handler.wfile.write(b"x" * (1 << 20))

    def trickle(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        for _ in range(1000):
            handler.wfile.write(b" ")
            handler.wfile.flush()
            time.sleep(0.05)

    server = HostileServer(huge)
    try:
        with pytest.raises(JudgeError, match="larger than 1000 bytes"):
            HTTPJudge(server.url, "j", timeout=5, retries=0, max_reply_bytes=1000)("s", "u")
    finally:
        server.close()
    server = HostileServer(trickle)
    try:
        start = time.monotonic()
        with pytest.raises(JudgeError, match="no complete reply within 0.5 s"):
            HTTPJudge(server.url, "j", timeout=0.5, retries=0)("s", "u")
        assert time.monotonic() - start < 3
    finally:
        server.close()


def test_cli_errors_are_one_line_before_anything_is_written(tmp_path, capsys, pope_dir):
    out = tmp_path / "runs"
    status = main(["--model", "x.py:f", "--task", f"pope={tmp_path / 'missing'}", "--output-dir", str(out)])
    error = capsys.readouterr().err
    assert status == 1 and error.count("\n") == 1 and "No POPE split file" in error and "Traceback" not in error
    assert not out.exists()
    status = main(["--model", "x.py:f", "--task", f"pope={pope_dir}", "--device", "cuda:0", "--output-dir", str(out)])
    assert status == 1 and "no CUDA GPU" in capsys.readouterr().err and not out.exists()
    assert main(["--model", "x.py:f", "--task", f"pope={tmp_path / 'missing'}", "--debug"]) == 1
    assert "Traceback" in (debug_error := capsys.readouterr().err) and "FileNotFoundError" in debug_error
    status = main(["--adapter", str(tmp_path), "--task", f"pope={pope_dir}", "--output-dir", str(out)])
    assert status == 1 and "No adapter_config.json" in capsys.readouterr().err and not out.exists()


def test_cli_refuses_other_settings_in_the_same_output_dir(tmp_path, pope_dir, capsys):
    module = tmp_path / "m.py"
    module.write_text("def generate(images, prompts):\n    return ['yes' for _ in prompts]\n")
    args = ["--model", f"m={module}:generate", "--task", f"pope={pope_dir}", "--output-dir", str(tmp_path / "o"),
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert main([*args, "--task-option", "pope.answer_rule=lenient"]) == 1
    assert "answer_rule: 'official' -> 'lenient'" in capsys.readouterr().err
    assert main([*args, "--task-option", "pope.answer_rule=lenient", "--overwrite"]) == 0
    for name in ("comparison.png", "comparison_pope.png", "summary.md"):
        assert (tmp_path / "o" / name).is_file()
    with Image.open(tmp_path / "o" / "comparison_pope.png") as chart:
        assert chart.format == "PNG"


SCIENCEQA_HUB_ROW = {"image": None, "question": "Other?", "choices": ["a", "b", "c"], "answer": 0, "hint": "Read.",
                     "grade": "grade9", "subject": "language science", "lecture": "L.", "solution": "S."}  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("question", None, r"row 1 has 'question' None; expected a string"),
        ("subject", None, r"row 1 has 'subject' None; expected a string"),
        ("choices", ["a", "b", None], r"row 1 has 'choices' entry 2 None; every choice must be a string"),
        ("answer", 3, r"row 1: .*integer index into the 3 choices; got 3"),
    ],
)
def test_a_malformed_scienceqa_hub_row_names_the_row_and_field(tmp_path, field, value, message):
    rows = [SCIENCEQA_HUB_ROW, {**SCIENCEQA_HUB_ROW, field: value}]
    write_jsonl(tmp_path / "sqa.jsonl", rows)
    with pytest.raises(ValueError, match=r"ScienceQA table .*sqa.jsonl: " + message):
        ScienceQATask(tmp_path / "sqa.jsonl", layout="hub").load()


def test_scienceqa_json_bound_is_a_task_option(scienceqa_dir, tmp_path, capsys):
    size = (scienceqa_dir / "problems.json").stat().st_size
    with pytest.raises(ValueError, match=r"problems.json is larger than .*scienceqa.max_json_bytes=N"):
        ScienceQATask(scienceqa_dir, max_json_bytes=size - 1).load()
    assert len(ScienceQATask(scienceqa_dir, max_json_bytes=size).load()) > 0
    # lavin-eval passes it as a task option.
    module = tmp_path / "m.py"
    module.write_text("def generate(images, prompts):\n    return ['The answer is A.' for _ in prompts]\n")
    args = ["--model", f"m={module}:generate", "--task", f"scienceqa={scienceqa_dir}", "--output-dir",
            str(tmp_path / "out"), "--no-progress", "--task-option"]  # fmt: skip
    assert main([*args, f"scienceqa.max_json_bytes={size - 1}"]) == 1
    error = capsys.readouterr().err
    assert "problems.json is larger than" in error.splitlines()[-1] and "Traceback" not in error
    assert main([*args, f"scienceqa.max_json_bytes={size}"]) == 0
