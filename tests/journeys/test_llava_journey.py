"""The same path on LLaVA + MMA, where the tools support it: lavin-train --model_name_or_path on a saved LLaVA, the
adapter loaded from another directory, lavin-eval --adapter, merge -> save -> reload. (lavin-chat and lavin-convert
are LaVIN's own: the chat app serves LaVIN, and the reference format only has LaVIN's tensors.)"""

from __future__ import annotations

import json

import pytest
from artifacts import console_script, run, run_python

LLAVA_ELSEWHERE = """
import json, torch
import transformers_lavin
from peft import PeftModel
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

processor = AutoProcessor.from_pretrained("../work/llava")
messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is it?"}]}]
text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
inputs = processor(images=[Image.open("../work/data/images/red.png")], text=[text], return_tensors="pt")
with torch.no_grad():
    base = AutoModelForImageTextToText.from_pretrained("../work/llava").eval()
    plain = base(**inputs).logits
    auto = AutoModelForImageTextToText.from_pretrained("../work/llava-out").eval()(**inputs).logits
    model = PeftModel.from_pretrained(base, "../work/llava-out").eval()
    unmerged = model(**inputs).logits
    merged = model.merge_and_unload(modality="image")
    in_memory = merged(**inputs).logits
    merged.save_pretrained("llava-merged")
    reloaded = AutoModelForImageTextToText.from_pretrained("llava-merged").eval()(**inputs).logits
print(json.dumps({"auto_vs_peft": (auto - unmerged).abs().max().item(),
                  "adapter_effect": (unmerged - plain).abs().max().item(),
                  "in_memory": (in_memory - unmerged).abs().max().item(),
                  "reloaded": (reloaded - unmerged).abs().max().item()}))
"""


@pytest.fixture(scope="module")
def llava_results(llava_adapter, elsewhere) -> dict:
    return run_python(LLAVA_ELSEWHERE, cwd=elsewhere)


def test_mma_adapter_on_a_saved_llava_loads_from_another_directory(llava_adapter, work, llava_results):
    config = json.loads((llava_adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "MMA" and config["base_model_name_or_path"] == str((work / "llava").resolve())
    assert llava_results["auto_vs_peft"] == 0.0 and llava_results["adapter_effect"] > 1e-4


def test_eval_the_llava_adapter(llava_adapter, work):
    command = [console_script("lavin-eval"), "--adapter", "llava-out", "--task", "scienceqa=sqa"]
    run([*command, "--output_dir", "runs", "--max_new_tokens", "4", "--no_progress"], cwd=work)
    summary = json.loads((work / "runs" / "llava-out" / "scienceqa" / "summary.json").read_text())
    assert summary["n"] == 4 and summary["n_errors"] == 0, summary


def test_llava_merge_matches_in_memory(llava_results):
    assert llava_results["in_memory"] < 1e-4


def test_merged_llava_saves_and_reloads_exactly(llava_results):
    assert llava_results["reloaded"] < 1e-4
