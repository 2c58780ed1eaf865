import pytest
import torch
import torch.nn.functional as F
from conftest import random_image
from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor, CLIPVisionModel, pipeline

import transformers_lavin  # noqa: F401  (registers the Auto classes)
from transformers_lavin import LavinModel


def test_auto_save_load_gives_identical_logits_on_a_mixed_batch(tiny, mixed_batch, tmp_path):
    model, processor = tiny
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    reloaded_processor = AutoProcessor.from_pretrained(tmp_path)
    assert type(reloaded) is type(model)
    assert isinstance(AutoModel.from_pretrained(tmp_path), LavinModel)
    with torch.no_grad():
        expected = model(**mixed_batch).logits
        inputs = reloaded_processor(
            images=[[random_image(1)], []],
            text=["What is in the picture?", "A text-only question that is longer than the other."],
            padding=True,
            padding_side="left",
            return_tensors="pt",
        )
        actual = reloaded(**inputs).logits
    assert torch.equal(expected, actual)


def test_image_row_depends_on_pixels_and_text_row_never_does(tiny, mixed_batch):
    model, _ = tiny
    with torch.no_grad():
        logits = model(**mixed_batch).logits
        other = dict(mixed_batch, pixel_values=torch.randn_like(mixed_batch["pixel_values"]))
        other_logits = model(**other).logits
    assert not torch.allclose(logits[0], other_logits[0])
    assert torch.equal(logits[1], other_logits[1])


def test_visual_tokens_equal_an_independent_computation(tiny, mixed_batch):
    model, _ = tiny
    pixel_values = mixed_batch["pixel_values"]
    vision = model.model.vision_tower
    assert isinstance(vision, CLIPVisionModel)
    with torch.no_grad():
        hidden_states = vision(pixel_values, output_hidden_states=True).hidden_states
        cls_tokens = torch.stack([hidden_states[i][:, 0] for i in model.config.vision_feature_layers], dim=1)
        projector = model.model.multi_modal_projector
        hidden = F.silu(F.linear(cls_tokens, projector.linear_1.weight, projector.linear_1.bias))
        expected = F.linear(hidden, projector.linear_2.weight, projector.linear_2.bias)
        actual = model.get_image_features(pixel_values).pooler_output
        outputs = model.model(**mixed_batch)
    assert actual.shape == (1, model.config.num_image_tokens, model.config.text_config.hidden_size)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(outputs.image_outputs.pooler_output, expected, rtol=0, atol=1e-6)


def test_modality_ids_follow_the_image_tokens(tiny, mixed_batch):
    model, _ = tiny
    assert model.model.get_modality_ids(mixed_batch["input_ids"]).tolist() == [1, 0]


def test_loss_ignores_padding_and_image_positions(tiny, mixed_batch):
    model, _ = tiny
    labels = mixed_batch["input_ids"].masked_fill(mixed_batch["attention_mask"] == 0, -100)
    with torch.no_grad():
        outputs = model(**mixed_batch, labels=labels)
    logits = outputs.logits[:, :-1]
    targets = labels[:, 1:].masked_fill(mixed_batch["input_ids"][:, 1:] == model.config.image_token_id, -100)
    expected = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(outputs.loss, expected)


def test_greedy_generation_same_with_and_without_cache(tiny, mixed_batch):
    model, _ = tiny
    with_cache = model.generate(**mixed_batch, max_new_tokens=8, do_sample=False, use_cache=True)
    without_cache = model.generate(**mixed_batch, max_new_tokens=8, do_sample=False, use_cache=False)
    assert torch.equal(with_cache, without_cache)


def test_a_row_alone_equals_the_row_in_a_left_padded_batch(tiny, mixed_batch):
    model, processor = tiny
    batch_out = model.generate(**mixed_batch, max_new_tokens=8, do_sample=False)
    prompt_length = mixed_batch["input_ids"].shape[1]
    image_alone = processor(images=[random_image(1)], text=["What is in the picture?"], return_tensors="pt")
    text_alone = processor(text=["A text-only question that is longer than the other."], return_tensors="pt")
    image_out = model.generate(**image_alone, max_new_tokens=8, do_sample=False)
    text_out = model.generate(**text_alone, max_new_tokens=8, do_sample=False)
    assert torch.equal(batch_out[0, prompt_length:], image_out[0, image_alone["input_ids"].shape[1] :])
    assert torch.equal(batch_out[1, prompt_length:], text_out[0, text_alone["input_ids"].shape[1] :])


def test_beam_search_and_sampling(tiny, mixed_batch):
    model, _ = tiny
    beams = model.generate(**mixed_batch, max_new_tokens=6, num_beams=3, num_return_sequences=2, do_sample=False)
    assert beams.shape == (4, mixed_batch["input_ids"].shape[1] + 6)
    torch.manual_seed(3)
    sampled = model.generate(**mixed_batch, max_new_tokens=6, do_sample=True, top_k=20, temperature=1.5)
    torch.manual_seed(3)
    again = model.generate(**mixed_batch, max_new_tokens=6, do_sample=True, top_k=20, temperature=1.5)
    assert torch.equal(sampled, again)


def test_pipeline_image_text_to_text(tiny):
    model, processor = tiny
    pipe = pipeline("image-text-to-text", model=model, processor=processor)
    result = pipe(images=random_image(2), text="Describe it.", max_new_tokens=5, do_sample=False)
    assert isinstance(result[0]["generated_text"], str)
    inputs = processor(images=[random_image(2)], text=["Describe it."], return_tensors="pt")
    direct = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert result[0]["generated_text"].endswith(
        processor.decode(direct[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    )


def test_from_pretrained_in_bfloat16(tiny, mixed_batch, tmp_path):
    model, _ = tiny
    model.save_pretrained(tmp_path)
    bf16 = AutoModelForImageTextToText.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    assert all(p.dtype == torch.bfloat16 for p in bf16.parameters())
    with torch.no_grad():
        logits = bf16(**mixed_batch).logits
        reference = model(**mixed_batch).logits
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), reference, atol=0.1, rtol=0.1)
    out = bf16.generate(**mixed_batch, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == mixed_batch["input_ids"].shape[1] + 3


def test_more_images_than_image_rows_is_a_clear_error(tiny, mixed_batch):
    model, _ = tiny
    two_images = torch.cat([mixed_batch["pixel_values"]] * 2)
    with pytest.raises(ValueError, match="2 image\\(s\\) in pixel_values but 1 row"):
        model(**dict(mixed_batch, pixel_values=two_images))


def test_image_tokens_without_pixels_is_a_clear_error(tiny, mixed_batch):
    model, _ = tiny
    inputs = {k: v for k, v in mixed_batch.items() if k != "pixel_values"}
    with pytest.raises(ValueError, match="no pixel_values"):
        model(**inputs)


def test_a_row_with_a_wrong_number_of_image_tokens_is_a_clear_error(tiny, mixed_batch):
    model, _ = tiny
    input_ids = mixed_batch["input_ids"].clone()
    first_image_token = (input_ids[0] == model.config.image_token_id).nonzero()[0, 0]
    input_ids[0, first_image_token] = 70
    with pytest.raises(ValueError, match="exactly 2"):
        model(**dict(mixed_batch, input_ids=input_ids))
