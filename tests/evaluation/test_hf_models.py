"""The runner end to end on tiny random LaVIN, LLaVA and BLIP-2 models built from configs (no download)."""

import pytest
import torch
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

from transformers_lavin.evaluation import HFModelAdapter, PopeTask, ScienceQATask, read_results, run_evaluation
from transformers_lavin.testing_utils import build_byte_tokenizer, build_tiny_lavin

IMAGE = 30


def tiny_text_config(tokenizer) -> LlamaConfig:
    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)  # fmt: skip


def image_processor() -> CLIPImageProcessor:
    return CLIPImageProcessor(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE})


def tiny_llava(chat_template: str | None = None):
    tokenizer = build_byte_tokenizer()
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=IMAGE, patch_size=6)  # fmt: skip
    config = LlavaConfig(vision_config=vision, text_config=tiny_text_config(tokenizer),
                         image_token_id=tokenizer.convert_tokens_to_ids("<image>"))  # fmt: skip
    torch.manual_seed(0)
    processor = LlavaProcessor(image_processor=image_processor(), tokenizer=tokenizer, patch_size=6,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=chat_template)  # fmt: skip
    return LlavaForConditionalGeneration(config).eval(), processor


def tiny_blip2():
    tokenizer = build_byte_tokenizer()
    config = Blip2Config(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": IMAGE, "patch_size": 6},
        qformer_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
                        "encoder_hidden_size": 32, "vocab_size": 64},
        text_config=tiny_text_config(tokenizer).to_dict(),
        num_query_tokens=4,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )  # fmt: skip
    torch.manual_seed(0)
    processor = Blip2Processor(image_processor=image_processor(), tokenizer=tokenizer, num_query_tokens=4)
    return Blip2ForConditionalGeneration(config).eval(), processor


@pytest.fixture(scope="module")
def models():
    return {"lavin": build_tiny_lavin(seed=0), "llava": tiny_llava(), "blip2": tiny_blip2()}


def test_three_models_end_to_end(models, scienceqa_dir, pope_dir, tmp_path):
    tasks = [ScienceQATask(scienceqa_dir, max_new_tokens=3), PopeTask(pope_dir, max_new_tokens=3)]
    summaries = run_evaluation(models, tasks, tmp_path / "batched", batch_size=4, progress=False)
    for name in models:
        sqa, pope = summaries["scienceqa"][name], summaries["pope"][name]
        assert sqa["n"] == 6 and pope["n"] == 9
        assert sqa["n_errors"] == 0 and pope["n_errors"] == 0, (sqa["error_ids"], pope["error_ids"])
        assert 0 <= sqa["Avg"] <= 100 and 0 <= pope["all/accuracy"] <= 100
        records = read_results(tmp_path / "batched" / name / "scienceqa" / "results.jsonl")
        assert all(isinstance(r["output"], str) for r in records)
    assert (tmp_path / "batched" / "comparison.png").is_file()
    assert "| blip2 |" in (tmp_path / "batched" / "summary.md").read_text()

    # Left padding must not change greedy outputs: one sample at a time gives the same texts.
    single = run_evaluation(models, tasks[:1], tmp_path / "single", batch_size=1, progress=False)
    for name in models:
        batched = [r["output"] for r in read_results(tmp_path / "batched" / name / "scienceqa" / "results.jsonl")]
        alone = [r["output"] for r in read_results(tmp_path / "single" / name / "scienceqa" / "results.jsonl")]
        assert batched == alone, name
        assert single["scienceqa"][name]["Avg"] == summaries["scienceqa"][name]["Avg"]


def test_adapter_matches_a_direct_generate_call(models, scienceqa_dir):
    """The adapter's text for one sample is what generate gives on the processor's inputs, minus the prompt."""
    from PIL import Image

    image = Image.new("RGB", (40, 32), (200, 30, 30))
    for name, (model, processor) in models.items():
        adapter = HFModelAdapter(model, processor)
        text = adapter.build_prompt("Question: What is it?\nResponse:", 1)
        inputs = processor(images=[[image]] if name == "lavin" else [image], text=[text], return_tensors="pt")
        expected = model.generate(**inputs, max_new_tokens=5, do_sample=False)[0, inputs["input_ids"].shape[1] :]
        got = adapter.generate([[image]], ["Question: What is it?\nResponse:"], max_new_tokens=5)
        assert got == [processor.tokenizer.decode(expected, skip_special_tokens=True).strip()], name


def test_prompt_building_per_model(models):
    lavin, llava, blip2 = (HFModelAdapter(*models[name]) for name in ("lavin", "llava", "blip2"))
    # LaVIN and BLIP-2 place the image themselves; LLaVA without a chat template gets one <image> per image.
    assert lavin.build_prompt("Q?", 1) == "Q?" and blip2.build_prompt("Q?", 1) == "Q?"
    assert llava.build_prompt("Q?", 2) == "<image><image>\nQ?" and llava.build_prompt("Q?", 0) == "Q?"
    # With a chat template, the processor's template is used.
    template = "{% for m in messages %}USER: {% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %} ASSISTANT:{% endfor %}"
    chat = HFModelAdapter(*tiny_llava(chat_template=template))
    assert chat.build_prompt("Q?", 1) == "USER: <image>Q? ASSISTANT:"
    # An explicit template wins.
    custom = HFModelAdapter(*models["llava"], prompt_template="Look: {images} {prompt} Answer:")
    assert custom.build_prompt("Q?", 1) == "Look: <image> Q? Answer:"


def test_cli_loads_saved_models_from_disk(models, pope_dir, tmp_path, capsys):
    """`lavin-eval` with two saved models (AutoModelForImageTextToText + AutoProcessor), compared on POPE."""
    import json

    from transformers_lavin.evaluation.cli import main

    for name in ("lavin", "llava"):
        model, processor = models[name]
        model.save_pretrained(tmp_path / name)
        processor.save_pretrained(tmp_path / name)
    status = main(
        ["--model", f"lavin={tmp_path / 'lavin'}", "--model", f"llava={tmp_path / 'llava'}", "--task",
         f"pope={pope_dir}", "--task-option", "pope.splits=random", "--limit", "2", "--max-new-tokens", "2",
         "--device", "cpu", "--dtype", "float32", "--output-dir", str(tmp_path / "runs"), "--no-progress"]
    )  # fmt: skip
    assert status == 0
    summary = json.loads((tmp_path / "runs" / "summary.json").read_text())
    assert set(summary["pope"]) == {"lavin", "llava"}
    assert all(s["n"] == 2 and s["n_errors"] == 0 for s in summary["pope"].values())
    assert (tmp_path / "runs" / "comparison.png").is_file()
    # The saved models generate what the in-memory ones do.
    records = read_results(tmp_path / "runs" / "llava" / "pope" / "results.jsonl")
    adapter = HFModelAdapter(*models["llava"])
    from PIL import Image

    with Image.open(pope_dir / "images" / "img1.jpg") as image:
        assert adapter.generate([[image.convert("RGB")]], [records[0]["prompt"]], 2) == [records[0]["output"]]
    assert "| lavin |" in capsys.readouterr().out
