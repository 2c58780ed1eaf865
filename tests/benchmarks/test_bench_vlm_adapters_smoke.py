"""Smoke test of `benchmarks.bench_vlm_adapters` at toy size: structure, parameter counts, finite measurements.

Speed and accuracy are not asserted: these are not timed tests, and two toy training steps learn nothing.
"""

from __future__ import annotations

import math

from torch import nn
from transformers import LlavaForConditionalGeneration

from benchmarks import bench_vlm_adapters
from benchmarks.models import LLM_LINEAR_NAMES


def expected_trainable(base: LlavaForConditionalGeneration) -> dict[str, int]:
    """Hand counts: LoRA r=128 on the LLM's linears, MMA's adapters (hidden 8, 2 groups) and modality token."""
    projector = sum(p.numel() for p in base.model.multi_modal_projector.parameters())
    lora = sum(
        128 * (module.in_features + module.out_features)
        for name, module in base.model.language_model.named_modules()
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in LLM_LINEAR_NAMES
    )
    adapter = lambda w: (w * 8 + 8) + 2 * (w * 4 + w) + (w * 2 + 2)  # noqa: E731  down, two grouped ups, router
    text, vision = base.config.text_config, base.config.vision_config
    mma = text.num_hidden_layers * adapter(text.hidden_size) + vision.num_hidden_layers * adapter(vision.hidden_size)
    return {"lora": lora + projector, "mma": mma + 2 * text.hidden_size + projector}


def test_mma_and_lora_run_side_by_side_on_one_llava(tmp_path):
    result = bench_vlm_adapters.run("toy", workdir=str(tmp_path))
    size = bench_vlm_adapters.SIZES["toy"]
    base = LlavaForConditionalGeneration.from_pretrained(tmp_path / "llava-base")
    expected = expected_trainable(base)
    for method in ("mma", "lora"):
        entry = result["methods"][method]
        assert entry["parameters"]["trainable"] == expected[method]
        assert len(entry["runs"]) == len(size.learning_rates[method])
        assert entry["chosen"] in entry["runs"]
        for run in entry["runs"]:
            assert 0 <= run["image_accuracy"] <= 1 and 0 <= run["text_accuracy"] <= 1
            assert math.isfinite(run["loss_first"]) and math.isfinite(run["loss_last_10"])
        assert result["memory"][method]["peak_mib"] > 0
        assert result["step_seconds"][method] > 0
    assert math.isfinite(result["step_ratio_mma_over_lora"]["median"])
    assert math.isfinite(result["step_cpu_ratio_mma_over_lora"]["median"])
    markdown = bench_vlm_adapters.to_markdown({"machine": {"cpu_model": "test"}, **result})
    assert "## Side by side" in markdown and "trainable parameters" in markdown
