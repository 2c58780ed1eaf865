"""SFTTrainer with `peft_config=MMAConfig()` on mixed image / text-only batches of a tiny LaVIN."""

import math

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForImageTextToText
from trl import SFTConfig

import transformers_lavin  # noqa: F401  (registers LaVIN and MMA)
from transformers_lavin.data import load_scienceqa, write_synthetic_scienceqa
from transformers_lavin.training import (
    LavinModelArguments,
    MMAArguments,
    build_trainer,
    check_gradient_checkpointing,
    load_model_and_processor,
)


@pytest.fixture(scope="module")
def synthetic_train(tmp_path_factory):
    root = write_synthetic_scienceqa(tmp_path_factory.mktemp("sqa"), num_train=16, num_val=0, num_test=0, seed=1)
    return load_scienceqa(root, "train", prompt_format="QCM-A")


def _config(output_dir, **overrides) -> SFTConfig:
    settings = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=8,
        max_steps=8,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        bf16=False,
        activation_checkpointing=False,
        max_length=None,
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    settings.update(overrides)
    return SFTConfig(**settings)


def test_sft_trains_only_adapters_on_mixed_batches_and_the_adapter_reloads(synthetic_train, tmp_path):
    model, processor = load_model_and_processor(LavinModelArguments(tiny=True), seed=0)
    base_dir = tmp_path / "base"
    model.save_pretrained(base_dir)
    frozen_before = {name: p.detach().clone() for name, p in model.named_parameters()}

    # The batch really mixes modalities: rows with an image and text-only rows, as the collator builds them.
    trainer = build_trainer(
        model, processor, synthetic_train, _config(tmp_path / "out"), MMAArguments(mma_dropout=0.0)
    )
    batch = trainer.data_collator([synthetic_train[i] for i in range(8)])
    modality_ids = trainer.model.get_base_model().model.get_modality_ids(batch["input_ids"])
    assert set(modality_ids.tolist()) == {0, 1}
    assert batch["pixel_values"].shape[0] == int(modality_ids.sum())

    trainable = [name for name, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable, "nothing to train"
    # Only MMA adapters and LaVIN's own small modules (trained in full as modules_to_save) are trainable.
    assert all(".mma_" in name or ".modules_to_save." in name for name in trainable), trainable
    assert any("language_model" in name and "mma_router" in name for name in trainable)
    assert any("vision_tower" in name and "mma_down" in name for name in trainable)
    assert any("multi_modal_projector" in name for name in trainable)

    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 8 and all(math.isfinite(loss) for loss in losses)
    assert sum(losses[-2:]) / 2 < 0.85 * sum(losses[:2]) / 2, losses

    # The frozen base is bit-for-bit unchanged; the projector's trained copy moved away from the original.
    peft_model = trainer.model
    base_state = {
        name.replace("base_model.model.", "").replace(".base_layer", "").replace(".original_module", ""): p
        for name, p in peft_model.named_parameters()
        if ".mma_" not in name and ".modules_to_save." not in name
    }
    for name, before in frozen_before.items():
        assert torch.equal(base_state[name], before), name
    trained_projector = peft_model.get_base_model().model.multi_modal_projector.modules_to_save["default"]
    assert not torch.equal(
        trained_projector.linear_2.weight, frozen_before["model.multi_modal_projector.linear_2.weight"]
    )

    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)
    reloaded = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base_dir), adapter_dir).eval()
    peft_model.eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        expected = peft_model(**inputs).logits
        actual = reloaded(**inputs).logits
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    # ... and differs from the untrained base, so the comparison above is not vacuous.
    with torch.no_grad():
        untrained = AutoModelForImageTextToText.from_pretrained(base_dir).eval()(**inputs).logits
    assert not torch.allclose(untrained, expected, atol=1e-3)


def test_gradient_checkpointing_is_made_non_reentrant_and_trains(synthetic_train, tmp_path):
    config = _config(tmp_path / "out", activation_checkpointing=True, max_steps=2)
    check_gradient_checkpointing(config)
    assert config.activation_checkpointing_kwargs == config.gradient_checkpointing_kwargs == {"use_reentrant": False}

    model, processor = load_model_and_processor(LavinModelArguments(tiny=True), seed=0)
    trainer = build_trainer(model, processor, synthetic_train, config, MMAArguments())
    router = next(p for n, p in trainer.model.named_parameters() if "language_model" in n and "mma_router" in n)
    router_before = router.detach().clone()
    trainer.train()
    assert trainer.model.get_base_model().model.language_model.is_activation_checkpointing
    # The routers get their gradient through the checkpointed layers (reentrant checkpointing would lose it).
    assert not torch.equal(router, router_before)
    assert all(math.isfinite(entry["loss"]) for entry in trainer.state.log_history if "loss" in entry)


def test_reentrant_gradient_checkpointing_is_refused(tmp_path):
    config = _config(tmp_path, activation_checkpointing=True, activation_checkpointing_kwargs={"use_reentrant": True})
    with pytest.raises(ValueError, match="non-reentrant"):
        check_gradient_checkpointing(config)


def test_exactly_one_model_source_is_required():
    with pytest.raises(ValueError, match="exactly one base model"):
        load_model_and_processor(LavinModelArguments(tiny=True, model_name_or_path="some/model"))
    with pytest.raises(ValueError, match="exactly one base model"):
        load_model_and_processor(LavinModelArguments())
    with pytest.raises(ValueError, match="--load_in_4bit"):
        load_model_and_processor(LavinModelArguments(tiny=True, load_in_4bit=True))
