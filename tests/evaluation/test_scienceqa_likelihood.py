"""ScienceQA scored by option likelihood: evaluation scores exactly as training does, on LaVIN and on LLaVA."""

import pytest
import torch
from test_hf_models import tiny_llava

from transformers_lavin.data import load_scienceqa, write_synthetic_scienceqa
from transformers_lavin.evaluation import HFModelAdapter, ScienceQATask, read_results, run_task
from transformers_lavin.evaluation.multiple_choice import score_choice_texts
from transformers_lavin.testing_utils import build_tiny_lavin


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sqa")
    return write_synthetic_scienceqa(root, num_train=0, num_val=0, num_test=8, seed=3)


def test_evaluation_scores_options_as_training_does(synthetic_dir, tmp_path):
    model, processor = build_tiny_lavin(seed=1)
    task = ScienceQATask(synthetic_dir, scoring="likelihood", option_form="text")
    summary = run_task((model, processor), task, tmp_path, batch_size=3, progress=False)
    records = read_results(tmp_path / "model" / "scienceqa" / "results.jsonl")

    # Training's scorer on the same problems, read by training's reader.
    trained = score_choice_texts(model, processor, load_scienceqa(synthetic_dir, "test"), batch_size=7)
    assert len(records) == len(trained.predictions) == 8
    for record, scores, prediction in zip(records, trained.choice_scores, trained.predictions, strict=True):
        torch.testing.assert_close(torch.tensor(record["option_scores"]), torch.tensor(scores), rtol=1e-5, atol=1e-5)
        assert record["output"] == f"The answer is {prediction}."
        assert record["parsed"]
    assert summary["Avg"] == pytest.approx(100 * sum(trained.correct) / len(trained.correct))
    assert summary["scoring"] == "likelihood" and summary["n_unparsed"] == 0


def test_letter_options_on_llava_equal_one_sequence_at_a_time(synthetic_dir, tmp_path):
    model, processor = tiny_llava()
    adapter = HFModelAdapter(model, processor)
    task = ScienceQATask(synthetic_dir, scoring="likelihood", option_form="letter")
    run_task(adapter, task, tmp_path, batch_size=4, progress=False)
    records = {r["id"]: r for r in read_results(tmp_path / "model" / "scienceqa" / "results.jsonl")}
    samples = task.load()
    assert {len(sample.images) for sample in samples} == {0, 1}  # image and text-only problems

    from transformers_lavin.evaluation.runner import _load_images

    tokenizer = processor.tokenizer
    for sample in samples:
        images = _load_images(sample)
        text = f"{'<image>' * len(images)}\n{sample.prompt}The answer is"
        inputs = processor(images=images or None, text=[text], return_tensors="pt")
        expected = []
        for letter in "ABCDE"[: len(sample.meta["choices"])]:
            option = tokenizer.encode(f" {letter}.", add_special_tokens=False)
            ids = torch.cat([inputs["input_ids"], torch.tensor([option])], dim=1)
            with torch.no_grad():
                logits = model(input_ids=ids, pixel_values=inputs.get("pixel_values")).logits[0].float()
            log_probs = torch.log_softmax(logits, dim=-1)
            start = inputs["input_ids"].shape[1]
            expected.append(sum(float(log_probs[start - 1 + i, token]) for i, token in enumerate(option)))
        record = records[sample.id]
        # Batched with right padding vs alone: fp32 sums of about -16 agree to about 1e-4 relative.
        torch.testing.assert_close(torch.tensor(record["option_scores"]), torch.tensor(expected), rtol=1e-3, atol=1e-3)
        best = max(range(len(expected)), key=record["option_scores"].__getitem__)
        assert record["prediction"] == best and record["correct"] == (best == sample.target)


def test_likelihood_needs_a_model_with_token_probabilities(synthetic_dir, tmp_path):
    task = ScienceQATask(synthetic_dir, scoring="likelihood")
    with pytest.raises(ValueError, match="needs the model's token probabilities"):
        run_task(lambda images, prompts: ["The answer is A."] * len(prompts), task, tmp_path, progress=False)
    assert not (tmp_path / "model").exists()  # refused before anything was written


def test_unknown_scoring_settings_are_clear_errors(synthetic_dir):
    with pytest.raises(ValueError, match="scoring 'loglik'.*generate, likelihood"):
        ScienceQATask(synthetic_dir, scoring="loglik")
    with pytest.raises(ValueError, match="option_form 'index'.*text, letter"):
        ScienceQATask(synthetic_dir, scoring="likelihood", option_form="index")


def test_default_settings_are_unchanged_for_resumed_runs(synthetic_dir):
    # Results written before the option existed carry no "scoring" key; the default must still match them.
    assert "scoring" not in ScienceQATask(synthetic_dir).config()
    assert ScienceQATask(synthetic_dir, scoring="likelihood").config()["option_form"] == "text"
