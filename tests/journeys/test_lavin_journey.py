"""A user's path through LaVIN, each step on what the step before wrote, through the console scripts, with relative
paths, from a working directory other than the one holding the files:

build from parts -> save -> lavin-train -> load the adapter elsewhere -> lavin-eval --adapter -> merge -> save ->
reload -> lavin-chat (loopback) -> lavin-convert export -> import back.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request

import pytest
from artifacts import command_environment, console_script, run, run_python

from transformers_lavin.conversion.staging import current_umask

# What the later steps check from `elsewhere/`, through relative paths, in one interpreter (one start instead of
# four): each check is a function of its own, and the run prints one JSON object of their results.
FROM_ELSEWHERE = """
import json, torch
import transformers_lavin
from peft import PeftModel
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor


def load_from_elsewhere():
    # Logits of the trained adapter, loaded three ways.
    processor = AutoProcessor.from_pretrained("../work/out")
    image = Image.open("../work/data/images/red.png")
    inputs = processor(images=[image], text=["What color is it?"], return_tensors="pt")
    with torch.no_grad():
        base = AutoModelForImageTextToText.from_pretrained("../work/base").eval()
        plain = base(**inputs).logits
        peft = PeftModel.from_pretrained(base, "../work/out").eval()(**inputs).logits
        auto = AutoModelForImageTextToText.from_pretrained("../work/out").eval()
        loaded = auto(**inputs).logits
    return {"auto_is_peft": hasattr(auto, "peft_config"), "auto_vs_peft": (loaded - peft).abs().max().item(),
            "adapter_effect": (peft - plain).abs().max().item()}


def generate_like_eval():
    # What lavin-eval should have generated, computed here with plain `generate` (greedy, one sample at a time).
    records = [json.loads(line) for line in open("../work/runs/lavin/scienceqa/results.jsonl")]
    problems = json.load(open("../work/sqa/problems.json"))
    processor = AutoProcessor.from_pretrained("../work/out")
    model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained("../work/base"), "../work/out")
    model.eval()
    same = []
    for record in records:
        problem = problems[record["id"]]
        images = [Image.open(f"../work/sqa/images/test/{record['id']}/image.png")] if problem["image"] else None
        text = [processor.escape_special_tokens(record["prompt"])]
        inputs = processor(images=images, text=text, return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        text = processor.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        same.append(text == record["output"])
    return {"same": same, "with_image": sum(bool(problems[r["id"]]["image"]) for r in records)}


def merge_save_reload():
    processor = AutoProcessor.from_pretrained("../work/out")
    image = Image.open("../work/data/images/blue.png")
    inputs = processor(images=[image], text=["What color is it?"], return_tensors="pt")
    model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained("../work/base"), "../work/out")
    model.eval()
    with torch.no_grad():
        unmerged = model(**inputs).logits
        merged = model.merge_and_unload(modality="image")
        in_memory = merged(**inputs).logits
        merged.save_pretrained("lavin-merged")
        reloaded = AutoModelForImageTextToText.from_pretrained("lavin-merged").eval()(**inputs).logits
    return {"in_memory": (in_memory - unmerged).abs().max().item(),
            "reloaded": (reloaded - unmerged).abs().max().item()}


def converted_against_original():
    processor = AutoProcessor.from_pretrained("../work/out")
    rows = [([Image.open("../work/data/images/green.png")], "What color is it?"), (None, "Say hi.")]
    result = {}
    for images, text in rows:
        inputs = processor(images=images, text=[text], return_tensors="pt")
        logits = []
        for base, adapter in (("../work/base", "../work/out"), ("../work/base2", "../work/out2")):
            model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base), adapter).eval()
            with torch.no_grad():
                logits.append(model(**inputs).logits)
        result[text] = (logits[0] - logits[1]).abs().max().item()
    return result


print(json.dumps({"loaded": load_from_elsewhere(), "generated": generate_like_eval(),
                  "merged": merge_save_reload(), "converted": converted_against_original()}))
"""


def _modes_follow_the_umask(directory) -> list[str]:
    """Files and folders under `directory` whose mode is not what a plain write gives under the umask."""
    mask = current_umask()
    wrong = []
    for path in [directory, *directory.rglob("*")] if directory.is_dir() else [directory]:
        expected = (0o777 if path.is_dir() else 0o666) & ~mask
        if path.stat().st_mode & 0o777 != expected:
            wrong.append(f"{path.name}: {oct(path.stat().st_mode & 0o777)}")
    return wrong


def test_train_from_a_saved_base_on_trl_jsonl_with_relative_paths(lavin_training, work):
    out = work / "out"
    assert (out / "adapter_model.safetensors").is_file() and (out / "processor_config.json").is_file()
    config = json.loads((out / "adapter_config.json").read_text())
    # Not "base": that is a Hub id, or a folder only from work/; the absolute path loads from anywhere.
    assert config["base_model_name_or_path"] == str((work / "base").resolve())
    metadata = (out / "README.md").read_text().split("---")[1]
    assert "base_model" not in metadata and "data/train.jsonl" not in metadata  # local paths are no Hub ids
    assert "Trainable parameters" in lavin_training.stdout
    assert "max_length` is ignored" not in lavin_training.stderr
    assert _modes_follow_the_umask(out) == []


@pytest.fixture(scope="module")
def lavin_eval(lavin_adapter, work):
    """Step 3: `lavin-eval --model lavin=base --adapter out --task scienceqa=sqa` from work/."""
    command = [console_script("lavin-eval"), "--model", "lavin=base", "--adapter", "out", "--task", "scienceqa=sqa"]
    return run([*command, "--output_dir", "runs", "--max_new_tokens", "4", "--no_progress"], cwd=work)


@pytest.fixture(scope="module")
def lavin_converted(lavin_adapter, work) -> None:
    """Step 5: `lavin-convert export` of the adapter, and `lavin-convert import` of the export into base2/, out2/."""
    convert = console_script("lavin-convert")
    run([convert, "export", "--adapter_dir", "out", "--output", "out.pth"], cwd=work)
    flags = ["--llama", "parts/llama", "--clip", "parts/clip", "--base_dir", "base2", "--adapter_dir", "out2"]
    run([convert, "import", "--checkpoint", "out.pth", *flags, "--temperature", "10"], cwd=work)


@pytest.fixture(scope="module")
def from_elsewhere(lavin_eval, lavin_converted, elsewhere) -> dict:
    """The checks of what the steps wrote, run from `elsewhere/` in one interpreter (FROM_ELSEWHERE)."""
    return run_python(FROM_ELSEWHERE, cwd=elsewhere)


def test_the_adapter_loads_with_auto_classes_from_another_directory(from_elsewhere):
    result = from_elsewhere["loaded"]
    assert result["auto_is_peft"] and result["auto_vs_peft"] == 0.0
    assert result["adapter_effect"] > 1e-4  # the trained adapter is there, not a fresh one


def test_eval_the_adapter_on_scienceqa_given_by_a_relative_path(lavin_eval, work, from_elsewhere):
    summary = json.loads((work / "runs" / "lavin" / "scienceqa" / "summary.json").read_text())  # NAME= is used
    assert summary["n"] == 4 and summary["n_errors"] == 0, summary
    assert "| lavin |" in lavin_eval.stdout
    generated = from_elsewhere["generated"]
    assert generated["with_image"] > 0 and all(generated["same"]), generated


def test_merge_matches_the_unmerged_adapter_in_memory(from_elsewhere):
    assert from_elsewhere["merged"]["in_memory"] < 1e-4


def test_merged_model_saves_and_reloads_exactly(from_elsewhere):
    assert from_elsewhere["merged"]["reloaded"] < 1e-4


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_chat_serves_the_trained_adapter_on_loopback(lavin_adapter, work):
    from gradio_client import Client, handle_file

    port = _free_port()
    command = [console_script("lavin-chat"), "--model", "base", "--adapter", "out", "--port", str(port)]
    server = subprocess.Popen(
        command, cwd=work, env=command_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                info = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/gradio_api/info", timeout=5))
                break
            except OSError:
                assert time.monotonic() < deadline, "lavin-chat did not start serving"
                time.sleep(1)
        assert set(info["named_endpoints"]) == {"/chat", "/new_conversation"}
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        image = handle_file(str(work / "data" / "images" / "red.png"))
        outputs = client.predict({"text": "What color is it?", "files": [image]}, 8, 0, 0.9, api_name="/chat")
        messages = next(output for output in outputs if isinstance(output, list))
        assert messages[-1]["role"] == "assistant" and "red.png" in str(messages[0]["content"])
        assert any(isinstance(output, str) and output.startswith("Answered in") for output in outputs)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_convert_export_and_import_back_gives_the_same_model(lavin_converted, work, from_elsewhere):
    assert json.loads((work / "out2" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        (work / "base2").resolve()
    )
    assert [_modes_follow_the_umask(work / name) for name in ("out.pth", "base2", "out2")] == [[], [], []]
    differences = from_elsewhere["converted"]
    assert max(differences.values()) < 1e-5, differences


def test_convert_refuses_to_replace_an_output_naming_its_own_flag(lavin_adapter, work, monkeypatch, capsys):
    from transformers_lavin.conversion.cli import main as convert_main

    monkeypatch.chdir(work)
    (work / "taken.pth").write_bytes(b"an earlier export")
    assert convert_main(["export", "--adapter_dir", "out", "--output", "taken.pth"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("lavin-convert: error: 'taken.pth' already exists") and "pass --overwrite" in error
    assert (work / "taken.pth").read_bytes() == b"an earlier export"
