"""MMA on Hugging Face vision-language models other than LaVIN: LLaVA and Gemma 3 (tiny, built from configs)."""

import logging

import pytest
import torch
from helpers import (
    DecoderSpy,
    assert_same_gradients,
    llm_layers,
    logits,
    loss_and_gradients,
    mma_model,
    train_on_one_batch,
)
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText

from transformers_lavin.mma import MMALayer, compute_routing_table
from transformers_lavin.testing_utils import TINY_VLM_TYPES, build_tiny_vlm, tiny_vlm_image_tokens

IMAGE_ROW, TEXT_ROW = 0, 1
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/model/conftest.py


@pytest.fixture(params=TINY_VLM_TYPES)
def model_type(request):
    return request.param


def mixed_batch(config, seed: int = 0) -> dict[str, torch.Tensor]:
    """An image row and a longer text-only row, left-padded; one image."""
    generator = torch.Generator().manual_seed(seed)
    words = lambda n: torch.randint(3, 90, (n,), generator=generator).tolist()  # noqa: E731
    image_row = [1, *words(3), *[config.image_token_id] * tiny_vlm_image_tokens(config), *words(4)]
    text_row = [1, *words(len(image_row) + 2)]
    length = max(len(image_row), len(text_row))
    input_ids = torch.zeros(2, length, dtype=torch.long)
    attention_mask = torch.zeros(2, length, dtype=torch.long)
    for row, ids in enumerate((image_row, text_row)):
        input_ids[row, length - len(ids) :] = torch.tensor(ids)
        attention_mask[row, length - len(ids) :] = 1
    size = config.vision_config.image_size
    pixel_values = torch.randn(1, 3, size, size, generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}


def only_row(batch: dict[str, torch.Tensor], row: int) -> dict[str, torch.Tensor]:
    single = {key: batch[key][row : row + 1] for key in ("input_ids", "attention_mask")}
    return {**single, "pixel_values": batch["pixel_values"]} if row == IMAGE_ROW else single


def image_rows(model, input_ids) -> torch.Tensor:
    """Each row's modality computed here, independently of MMA's routing code."""
    return (input_ids == model.config.image_token_id).any(dim=-1).long()


def test_mma_at_initialisation_equals_the_base_and_adapts_llm_and_vision_tower(model_type):
    base = build_tiny_vlm(model_type)
    batch = mixed_batch(base.config)
    expected = logits(base, batch)
    model = mma_model(base, randomize=False)
    assert torch.equal(logits(model, batch), expected)  # zero-initialised up-projections: exactly the base
    config = base.config
    wrapped = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, MMALayer)}
    assert wrapped == {"self_attn"}
    assert len(llm_layers(model)) == config.text_config.num_hidden_layers
    vision = [m for m in model.modules() if isinstance(m, MMALayer) and m.routing_key is None]
    assert len(vision) == config.vision_config.num_hidden_layers
    assert model.peft_config["default"].modules_to_save == ["multi_modal_projector"]


def test_trains_only_adapters_modality_embedding_and_projector_and_loss_falls(model_type):
    model = mma_model(build_tiny_vlm(model_type), randomize=False).train()
    batch = mixed_batch(model.config)
    ids = batch["input_ids"]
    labels = ids.masked_fill((ids == model.config.image_token_id) | (batch["attention_mask"] == 0), -100)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert all(".mma_" in name or "multi_modal_projector.modules_to_save." in name for name in trainable)
    assert any("mma_modality_embedding" in name for name in trainable)  # the tuner owns the modality token
    assert any("multi_modal_projector" in name for name in trainable)
    losses, changed = train_on_one_batch(model, batch, labels)
    assert losses[-1] < losses[0]
    assert any(".mma_router." in name for name in changed)  # routers get gradients through the routing pass
    assert any("mma_modality_embedding" in name for name in changed)
    assert any("multi_modal_projector" in name for name in changed)


def test_gradient_checkpointing_gives_equal_loss_and_adapter_gradients(model_type):
    results = []
    for checkpointing in (False, True):
        model = mma_model(build_tiny_vlm(model_type))
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            assert any(
                getattr(m, "gradient_checkpointing", False) for m in model.get_base_model().get_decoder().layers
            )
        batch = mixed_batch(model.config)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        results.append(loss_and_gradients(model, batch, labels))
    (loss, grads), (checkpointed_loss, checkpointed_grads) = results
    torch.testing.assert_close(checkpointed_loss, loss, rtol=0, atol=1e-6)
    assert_same_gradients(grads, checkpointed_grads)


def test_save_and_reload_on_a_fresh_base_is_bit_exact(model_type, tmp_path):
    model = mma_model(build_tiny_vlm(model_type))
    batch = mixed_batch(model.config)
    expected = logits(model, batch)
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "adapter_model.safetensors")
    assert saved and all(".mma_" in key or "multi_modal_projector" in key for key in saved)
    assert sum(t.numel() for t in saved.values()) < sum(p.numel() for p in build_tiny_vlm(model_type).parameters())
    reloaded = PeftModel.from_pretrained(build_tiny_vlm(model_type), tmp_path).eval()
    assert torch.equal(logits(reloaded, batch), expected)


def test_image_and_text_rows_route_differently_and_explicit_modality_ids_win(model_type):
    model = mma_model(build_tiny_vlm(model_type))
    batch = mixed_batch(model.config)
    table = compute_routing_table(model)
    assert not torch.allclose(table[:, 0], table[:, 1])  # text and image routing weights differ
    spy = DecoderSpy(model)
    auto = logits(model, batch)
    # The image token in input_ids reached the decoder as modality_ids, through the VLM's forward.
    assert len(spy.calls) == 1 and torch.equal(spy.calls[0], image_rows(model, batch["input_ids"]))
    as_read = logits(model, batch, modality_ids=torch.tensor([1, 0]))
    swapped = logits(model, batch, modality_ids=torch.tensor([0, 1]))
    assert torch.equal(spy.calls[-1], torch.tensor([0, 1]))  # an explicit modality_ids wins
    assert torch.equal(auto, as_read)
    for row in (IMAGE_ROW, TEXT_ROW):  # each row's output depends on its modality
        assert not torch.allclose(auto[row], swapped[row])
    for row in (IMAGE_ROW, TEXT_ROW):  # and only on its own row
        torch.testing.assert_close(logits(model, only_row(batch, row))[0], auto[row], rtol=0, atol=1e-5)
    with model.disable_adapter():
        assert not torch.allclose(logits(model, batch)[TEXT_ROW], auto[TEXT_ROW])


@pytest.mark.parametrize("adapter_type", ["attn", "block"])
def test_merges_per_modality(model_type, adapter_type):
    for modality, row in (("image", IMAGE_ROW), ("text", TEXT_ROW)):
        model = mma_model(build_tiny_vlm(model_type), adapter_type=adapter_type)
        batch = mixed_batch(model.config)
        rows, other = only_row(batch, row), only_row(batch, TEXT_ROW if row == IMAGE_ROW else IMAGE_ROW)
        unmerged = logits(model, rows)
        model.merge_adapter(modality=modality)
        torch.testing.assert_close(logits(model, rows), unmerged, rtol=0, atol=1e-5)
        with pytest.raises(ValueError, match="merged for"):  # rows of the other modality are refused
            logits(model, other)
        model.unmerge_adapter()
        torch.testing.assert_close(logits(model, rows), unmerged, rtol=0, atol=1e-5)

        # Plain vision adapters fold too, so merge_and_unload leaves the base architecture with no adapter.
        model = mma_model(build_tiny_vlm(model_type), adapter_type=adapter_type, vision_adapter_type="normal")
        unmerged = logits(model, rows)
        merged = model.merge_and_unload(modality=modality)
        assert type(merged) is type(build_tiny_vlm(model_type))
        assert not any(isinstance(m, MMALayer) for m in merged.modules())
        assert not merged._forward_pre_hooks and "_expand_inputs_for_generation" not in merged.__dict__
        torch.testing.assert_close(logits(merged, rows), unmerged, rtol=0, atol=1e-5)


def test_a_merged_model_saves_and_reloads_or_says_why_not(model_type, tmp_path, caplog):
    for adapter_type in ("attn", "block"):
        model = mma_model(build_tiny_vlm(model_type), adapter_type=adapter_type, vision_adapter_type="normal")
        rows = only_row(mixed_batch(model.config), IMAGE_ROW)
        unmerged = logits(model, rows)
        caplog.clear()
        merged = model.merge_and_unload(modality="image")
        torch.testing.assert_close(logits(merged, rows), unmerged, rtol=0, atol=1e-5)
        # Gemma 3's MLPs have no bias flag in its config, so a merged `block` adapter cannot be declared: the save
        # refuses, rather than write a model that reloads without the merged biases.
        if model_type == "gemma3" and adapter_type == "block":
            assert "would lose them" in caplog.text
            with pytest.raises(ValueError, match="would lose them"):
                merged.save_pretrained(tmp_path / adapter_type)
            assert not (tmp_path / adapter_type).exists()
        else:
            assert "would lose them" not in caplog.text
            merged.save_pretrained(tmp_path / adapter_type)
            reloaded = type(merged).from_pretrained(tmp_path / adapter_type).eval()
            torch.testing.assert_close(logits(reloaded, rows), unmerged, rtol=0, atol=1e-5)


def test_the_default_config_merged_for_images_saves_and_reloads_exactly(model_type, tmp_path):
    # The default routed vision adapters cannot fold: they are saved beside the model and reloaded with it.
    model = mma_model(build_tiny_vlm(model_type), seed=6)
    rows = only_row(mixed_batch(model.config), IMAGE_ROW)
    unmerged = logits(model, rows)
    merged = model.merge_and_unload(modality="image")
    merged.save_pretrained(tmp_path)
    assert not [key for key in load_file(tmp_path / "model.safetensors") if "base_layer" in key or "mma_" in key]
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(build_tiny_vlm(model_type))
    torch.testing.assert_close(logits(reloaded, rows), unmerged, rtol=0, atol=1e-4)


def greedy_without_cache(model, batch, steps: int, modality_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding by full forwards of the growing sequence (no cache); returns tokens and per-step logits."""
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    scores = []
    for _ in range(steps):
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        step = {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": batch["pixel_values"]}
        last = logits(model, step, position_ids=position_ids, modality_ids=modality_ids, use_cache=False)[:, -1]
        scores.append(last)
        input_ids = torch.cat([input_ids, last.argmax(-1, keepdim=True)], dim=1)
        attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
    return input_ids[:, batch["input_ids"].shape[1] :], torch.stack(scores, dim=1)


def test_generate_with_cache_equals_a_no_cache_loop_and_rows_keep_their_prompt_s_modality(model_type):
    model = mma_model(build_tiny_vlm(model_type))
    batch = mixed_batch(model.config)
    steps = 5
    spy = DecoderSpy(model)
    model.generation_config.eos_token_id = None  # the loop below runs a fixed number of steps
    out = model.generate(
        **batch, max_new_tokens=steps, do_sample=False, output_scores=True, return_dict_in_generate=True
    )
    prompt_modality = image_rows(model, batch["input_ids"])
    assert len(spy.calls) == steps and all(torch.equal(call, prompt_modality) for call in spy.calls)
    tokens, scores = greedy_without_cache(model, batch, steps, prompt_modality)
    assert torch.equal(out.sequences[:, batch["input_ids"].shape[1] :], tokens)
    torch.testing.assert_close(torch.stack(out.scores, dim=1), scores, rtol=0, atol=1e-4)
    # The text row's path matters: on the image path it would have scored differently.
    _, image_path_scores = greedy_without_cache(model, batch, steps, torch.tensor([1, 1]))
    assert not torch.allclose(scores[TEXT_ROW], image_path_scores[TEXT_ROW], atol=1e-4)


@pytest.mark.parametrize("task_type", [None, "CAUSAL_LM"])  # PeftModel and PeftModelForCausalLM generate alike
def test_beam_search_and_returned_sequences_keep_their_prompt_s_modality(model_type, task_type):
    model = mma_model(build_tiny_vlm(model_type), task_type=task_type)
    batch = mixed_batch(model.config)
    spy = DecoderSpy(model)
    model.generate(**batch, max_new_tokens=3, do_sample=False, num_beams=2, num_return_sequences=2)
    expected = image_rows(model, batch["input_ids"]).repeat_interleave(2)
    assert len(spy.calls) == 3 and all(torch.equal(call, expected) for call in spy.calls)
    spy.calls.clear()
    model.generate(**batch, max_new_tokens=2, do_sample=False, modality_ids=torch.tensor([0, 0]))
    assert all(torch.equal(call, torch.tensor([0, 0])) for call in spy.calls)  # an explicit modality_ids wins


def test_a_vision_tower_without_the_targets_is_skipped_with_a_log(caplog):
    with caplog.at_level(logging.INFO, logger="transformers_lavin.mma.model"):
        model = mma_model(build_tiny_vlm("llava"), vision_target_modules=["attn"])
    assert "gets no adapters" in caplog.text
    assert all(m.routing_key is not None for m in model.modules() if isinstance(m, MMALayer))


def test_merging_a_vlm_needs_a_modality_from_the_call_or_the_config():
    model = mma_model(build_tiny_vlm("llava"))
    with pytest.raises(ValueError, match="pass modality"):  # unlike a plain LLM, a VLM has two paths
        model.merge_adapter()
    model = mma_model(build_tiny_vlm("llava"), merge_modality="image")
    model.merge_adapter()
    assert all(layer.merged_modality == "image" for layer in llm_layers(model))
