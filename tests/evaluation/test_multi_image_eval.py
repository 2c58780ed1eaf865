"""Evaluation samples with several images: LaVIN gets one placeholder per image, batched or alone alike."""

import numpy as np
from PIL import Image

from transformers_lavin.evaluation import HFModelAdapter, read_results, run_task
from transformers_lavin.evaluation.tasks.base import Sample, Task
from transformers_lavin.testing_utils import build_tiny_lavin

PROMPT = "Question: Are they the same?\nResponse:"


class _SameOrNot(Task):
    """A task whose samples have two images, one or none; every output is kept, nothing is judged."""

    name = "same_or_not"
    max_new_tokens = 4
    headline_metrics = ("n",)
    overall_metric = "n"

    def __init__(self, paths: list[str]):
        self.paths = paths

    def load(self) -> list[Sample]:
        return [
            Sample(id="two", prompt=PROMPT, images=self.paths[:2]),
            Sample(id="one", prompt="Question: What is it?\nResponse:", images=self.paths[2:]),
            Sample(id="none", prompt="Question: Is a text-only question fine here?\nResponse:"),
        ]

    def score(self, sample: Sample, output: str) -> dict:
        return {}

    def summarize(self, records) -> dict:
        return {"n": len(records)}


def test_lavin_samples_with_two_images_batched_and_alone(tmp_path):
    model, processor = build_tiny_lavin(seed=0)
    paths = []
    for seed in range(3):
        path = tmp_path / f"{seed}.png"
        Image.fromarray(np.random.default_rng(seed).integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    adapter = HFModelAdapter(model, processor)
    assert adapter.build_prompt(PROMPT, 2) == "<image><image>" + PROMPT
    assert adapter.build_prompt(PROMPT, 1) == PROMPT
    assert adapter.build_prompt("a <image> b", 0) == "a \ue000<image> b"  # task text stays text

    task = _SameOrNot(paths)
    run_task((model, processor), task, tmp_path / "batched", "lavin", batch_size=3, progress=False)
    run_task((model, processor), task, tmp_path / "alone", "lavin", batch_size=1, progress=False)
    batched = read_results(tmp_path / "batched" / "lavin" / "same_or_not" / "results.jsonl")
    alone = read_results(tmp_path / "alone" / "lavin" / "same_or_not" / "results.jsonl")
    assert all(record.get("error") is None for record in batched + alone)
    assert [r["output"] for r in batched] == [r["output"] for r in alone]

    # The two-image sample's output is what generate gives on the prompt written by hand with two placeholders.
    images = [Image.open(path).convert("RGB") for path in paths[:2]]
    inputs = processor(images=[images], text=["<image><image>" + PROMPT], return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)[0, inputs["input_ids"].shape[1] :]
    assert batched[0]["output"] == processor.tokenizer.decode(generated, skip_special_tokens=True).strip()
