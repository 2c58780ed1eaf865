"""Several images per sample: each `<image>` placeholder gets its own image's visual tokens, checked against
computations that place them by hand; the one-image layout stays as it was."""

import pytest
import torch
import torch.nn.functional as F
from conftest import random_image
from helpers import mma_model

from transformers_lavin.testing_utils import build_tiny_lavin

TEXT = "First <image> then <image> which?"


def chars(processor, text: str) -> list[int]:
    return processor.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)


def image_block(processor) -> list[int]:
    """One image's tokens, by the reference's prefix rule: "Image: " then one image token per visual token."""
    return chars(processor, "Image: ") + [processor.image_token_id] * processor.num_image_tokens


def lavin(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def visual_tokens(model, image_pixels: torch.Tensor) -> torch.Tensor:
    """One image's visual tokens by hand: the [CLS] of each chosen CLIP hidden state, through the projector."""
    inner = lavin(model).model
    hidden_states = inner.vision_tower(image_pixels[None], output_hidden_states=True).hidden_states
    cls_tokens = torch.stack([hidden_states[i][0, 0] for i in inner.config.vision_feature_layers])
    projector = inner.multi_modal_projector
    return projector.linear_2(F.silu(projector.linear_1(cls_tokens)))


def logits_from_hand_placed_embeds(model, input_ids: torch.Tensor, pixel_values: torch.Tensor, **kwargs):
    """Embed the text tokens, write image k's visual tokens over the k-th block of image tokens of the row (images
    in row order), and run the language model (with modality 1 for rows with an image) and the LM head."""
    base = lavin(model)
    image_id = base.config.image_token_id
    embeds = base.model.get_input_embeddings()(input_ids.masked_fill(input_ids == image_id, 0))
    n, image = base.config.num_image_tokens, 0
    for row in range(input_ids.shape[0]):
        positions = (input_ids[row] == image_id).nonzero().flatten().tolist()
        for start in positions[::n]:
            assert positions[positions.index(start) : positions.index(start) + n] == list(range(start, start + n))
            embeds[row, start : start + n] = visual_tokens(model, pixel_values[image])
            image += 1
    assert image == pixel_values.shape[0]
    modality_ids = (input_ids == image_id).any(-1).long()
    hidden = base.model.language_model(inputs_embeds=embeds, modality_ids=modality_ids, **kwargs).last_hidden_state
    return base.lm_head(hidden)


@pytest.fixture(params=["base", "mma"])
def model_and_processor(request):
    """The tiny LaVIN with 6 visual tokens per image (as LaVIN has), bare or with random non-zero MMA adapters."""
    model, processor = build_tiny_lavin(seed=0, vision_layers=6, vision_feature_layers=[1, 2, 3, 4, 5, 6])
    assert processor.num_image_tokens == 6
    return (model if request.param == "base" else mma_model(model, seed=1)), processor


def test_processor_layout_of_two_placeholders(tiny):
    _, processor = tiny
    a, b = random_image(0), random_image(1)
    out = processor(images=[[a, b]], text=[TEXT], return_tensors="pt")
    block = image_block(processor)
    expected = (
        [processor.tokenizer.bos_token_id]
        + chars(processor, "First ")
        + block
        + chars(processor, " then ")
        + block
        + chars(processor, " which?")
    )
    assert out["input_ids"][0].tolist() == expected
    one_by_one = [processor(images=[image], text=["x"], return_tensors="pt")["pixel_values"][0] for image in (a, b)]
    assert torch.equal(out["pixel_values"], torch.stack(one_by_one))
    # A flat list fills the placeholders in order, as LLaVA's processor does.
    flat = processor(images=[a, b], text=[TEXT], return_tensors="pt")
    assert all(torch.equal(flat[key], out[key]) for key in out)
    texts = ["x", TEXT, "<image> y", "z"]
    nested = processor(images=[[], [a, b], [a], []], text=texts, padding=True, return_tensors="pt")
    flat = processor(images=[None, a, b, a, None], text=texts, padding=True, return_tensors="pt")
    assert all(torch.equal(flat[key], nested[key]) for key in nested)


def test_two_images_equal_the_language_model_on_hand_placed_visual_tokens(model_and_processor):
    model, processor = model_and_processor
    inputs = processor(images=[[random_image(0), random_image(1)]], text=[TEXT], return_tensors="pt")
    with torch.no_grad():
        actual = model(**inputs).logits
        expected = logits_from_hand_placed_embeds(model, inputs["input_ids"], inputs["pixel_values"])
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_each_image_block_depends_on_its_own_image_only(model_and_processor):
    model, processor = model_and_processor
    a, b = random_image(0), random_image(1)
    forward = processor(images=[[a, b]], text=[TEXT], return_tensors="pt")
    swapped = processor(images=[[b, a]], text=[TEXT], return_tensors="pt")
    assert torch.equal(forward["input_ids"], swapped["input_ids"])
    with torch.no_grad():
        tokens = model(**forward, output_hidden_states=True)
        tokens_swapped = model(**swapped, output_hidden_states=True)
        alone = [visual_tokens(model, pixels) for pixels in forward["pixel_values"]]
    blocks = tokens.image_outputs.pooler_output
    torch.testing.assert_close(blocks[0], alone[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(blocks[1], alone[1], rtol=0, atol=1e-6)
    torch.testing.assert_close(tokens_swapped.image_outputs.pooler_output, blocks.flip(0), rtol=0, atol=1e-6)
    # The input embeddings at the two blocks swap; every text position stays.
    positions = (forward["input_ids"][0] == processor.image_token_id).nonzero().flatten()
    first, second = positions[:6], positions[6:]
    embeds, embeds_swapped = tokens.hidden_states[0][0], tokens_swapped.hidden_states[0][0]
    torch.testing.assert_close(embeds_swapped[first], embeds[second], rtol=0, atol=1e-6)
    torch.testing.assert_close(embeds_swapped[second], embeds[first], rtol=0, atol=1e-6)
    text = forward["input_ids"][0] != processor.image_token_id
    assert torch.equal(embeds_swapped[text], embeds[text])


def test_one_image_without_placeholder_keeps_the_reference_layout_and_logits(model_and_processor):
    """Pinned independently of the placeholder code: the reference's prefix rule by hand, and logits of the language
    model on embeddings built by hand; a placeholder at the very start of the text gives the same tokens."""
    model, processor = model_and_processor
    image, text = random_image(2), "Q: what shape?"
    inputs = processor(images=[image], text=[text], return_tensors="pt")
    tokenizer = processor.tokenizer
    expected_ids = (
        [tokenizer.bos_token_id]
        + tokenizer.encode("Image: ", add_special_tokens=False)
        + [processor.image_token_id] * processor.num_image_tokens
        + tokenizer.encode(text, add_special_tokens=False)
    )
    assert inputs["input_ids"][0].tolist() == expected_ids
    with torch.no_grad():
        actual = model(**inputs).logits
        base = lavin(model)
        input_ids = inputs["input_ids"]
        embeds = base.model.get_input_embeddings()(input_ids.masked_fill(input_ids == processor.image_token_id, 0))
        start = 1 + len(tokenizer.encode("Image: ", add_special_tokens=False))
        embeds[0, start : start + processor.num_image_tokens] = base.get_image_features(
            inputs["pixel_values"]
        ).pooler_output[0]
        hidden = base.model.language_model(inputs_embeds=embeds, modality_ids=torch.tensor([1])).last_hidden_state
        assert torch.equal(actual, base.lm_head(hidden))
    placed = processor(images=[image], text=["<image>" + text], return_tensors="pt")
    assert all(torch.equal(placed[key], inputs[key]) for key in inputs)


def test_one_image_at_a_placeholder_goes_there(tiny):
    model, processor = tiny
    image = random_image(2)
    inputs = processor(images=[[image]], text=["Look: <image> ok?"], return_tensors="pt")
    expected = (
        [processor.tokenizer.bos_token_id]
        + chars(processor, "Look: ")
        + image_block(processor)
        + chars(processor, " ok?")
    )
    assert inputs["input_ids"][0].tolist() == expected
    with torch.no_grad():
        torch.testing.assert_close(
            model(**inputs).logits,
            logits_from_hand_placed_embeds(model, inputs["input_ids"], inputs["pixel_values"]),
            rtol=0,
            atol=1e-5,
        )


MIXED = [
    ([0, 1], "Compare <image> with <image>, please."),
    ([2], "What is in the picture?"),
    ([], "A text-only question that is longer than the others here."),
]


def _row(processor, images, text, **kwargs):
    return processor(images=[[random_image(i) for i in images]], text=[text], return_tensors="pt", **kwargs)


def test_mixed_batch_rows_equal_the_rows_alone(model_and_processor):
    model, processor = model_and_processor
    batch = processor(
        images=[[random_image(i) for i in images] for images, _ in MIXED],
        text=[text for _, text in MIXED],
        padding=True,
        padding_side="left",
        return_tensors="pt",
    )
    assert batch["pixel_values"].shape[0] == 3
    assert lavin(model).model.get_modality_ids(batch["input_ids"]).tolist() == [1, 1, 0]
    with torch.no_grad():
        logits = model(**batch).logits
        expected = logits_from_hand_placed_embeds(
            model, batch["input_ids"], batch["pixel_values"], attention_mask=batch["attention_mask"]
        )
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(logits[real], expected[real], rtol=0, atol=1e-5)
    generated = model.generate(**batch, max_new_tokens=6, do_sample=False)
    no_cache = model.generate(**batch, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(generated, no_cache)
    beams = model.generate(**batch, max_new_tokens=4, num_beams=2, do_sample=False)
    length = batch["input_ids"].shape[1]
    for row, (images, text) in enumerate(MIXED):
        alone = _row(processor, images, text)
        with torch.no_grad():
            alone_logits = model(**alone).logits[0]
        torch.testing.assert_close(logits[row][real[row]], alone_logits, rtol=0, atol=1e-5)
        alone_length = alone["input_ids"].shape[1]
        alone_out = model.generate(**alone, max_new_tokens=6, do_sample=False)
        assert torch.equal(generated[row, length:], alone_out[0, alone_length:])
        alone_beams = model.generate(**alone, max_new_tokens=4, num_beams=2, do_sample=False)
        assert torch.equal(beams[row, length:], alone_beams[0, alone_length:])


def test_loss_never_targets_image_tokens_of_any_image(tiny):
    model, processor = tiny
    inputs = _row(processor, [0, 1], TEXT)
    labels = inputs["input_ids"].clone()
    with torch.no_grad():
        outputs = model(**inputs, labels=labels)
    targets = labels[:, 1:].masked_fill(labels[:, 1:] == processor.image_token_id, -100)
    expected = F.cross_entropy(outputs.logits[0, :-1], targets[0], ignore_index=-100)
    torch.testing.assert_close(outputs.loss, expected)


@pytest.mark.parametrize(
    "images, text, message",
    [
        ([[0, 1]], ["Only <image> one placeholder"], "Prompt 0 has 1 <image> placeholder\\(s\\) but 2 image\\(s\\)"),
        ([[0, 1]], ["No placeholder"], "Prompt 0 has 0 <image> placeholder\\(s\\) but 2 image\\(s\\)"),
        ([[0], []], ["a", "b <image>"], "Prompt 1 has 1 <image> placeholder\\(s\\) but 0 image\\(s\\)"),
        ([[0], []], ["<image><image>", "b"], "Prompt 0 has 2 <image> placeholder\\(s\\) but 1 image\\(s\\)"),
        ([0, 1, 2], ["<image>", "b <image>"], "3 images for 2 <image> placeholders"),
    ],
)
def test_placeholders_that_do_not_match_the_images_are_a_clear_error(tiny, images, text, message):
    _, processor = tiny
    nested = isinstance(images[0], list)
    given = [[random_image(i) for i in row] for row in images] if nested else [random_image(i) for i in images]
    with pytest.raises(ValueError, match=message) as error:
        processor(images=given, text=text)
    assert "escape_special_tokens" in str(error.value) or "one list per prompt" in str(error.value)


def test_pixel_values_that_do_not_match_the_image_tokens_are_a_clear_error(tiny):
    model, processor = tiny
    inputs = _row(processor, [0, 1], TEXT)
    with pytest.raises(ValueError, match="1 image\\(s\\) in pixel_values but 1 row\\(s\\) with image tokens"):
        model(**dict(inputs, pixel_values=inputs["pixel_values"][:1]))


def test_mma_forward_backward_and_generate_on_a_two_image_row(tiny):
    base, processor = tiny
    model = mma_model(base, seed=2)
    inputs = _row(processor, [0, 1], TEXT)
    model.train()
    loss = model(**inputs, labels=inputs["input_ids"]).loss
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
    assert torch.isfinite(loss)
    for part in ("multi_modal_projector", "modality_embedding", "vision_tower", "language_model"):
        assert any(g is not None and g.abs().sum() > 0 for name, g in grads.items() if part in name), part
    model.eval()
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape == (1, inputs["input_ids"].shape[1] + 5)


def test_chat_template_puts_several_images_where_their_parts_stand(tiny):
    model, processor = tiny
    a, b = random_image(0), random_image(1)
    messages = [
        {"role": "user", "content": [{"type": "image", "image": a}, {"type": "text", "text": "Is <image> this?"}]},
        {"role": "assistant", "content": "Yes."},
        {"role": "user", "content": [{"type": "text", "text": "And "}, {"type": "image", "image": b}]},
        {"role": "assistant", "content": "No."},
    ]
    text = processor.apply_chat_template(messages, tokenize=False)
    assert text == processor.tokenizer.bos_token + (
        "Instruction: <image>Is \ue000<image> this?\nResponse:Yes.</s>\nInstruction: And <image>\nResponse:No.</s>"
    )
    out = processor.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, processor_kwargs={}
    )
    ids, mask = out["input_ids"][0], out["assistant_masks"][0]
    eos, block = processor.tokenizer.eos_token_id, image_block(processor)
    expected = (
        [processor.tokenizer.bos_token_id]
        + chars(processor, "Instruction: ")
        + block
        + chars(processor, "Is <image> this?\nResponse:Yes.")
        + [eos]
        + chars(processor, "\nInstruction: And ")
        + block
        + chars(processor, "\nResponse:No.")
        + [eos]
    )
    assert ids == expected
    assert processor.tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m]) == "Yes.</s>No.</s>"
    direct = processor(images=[[a, b]], text=[text], return_tensors="pt")
    assert torch.equal(torch.as_tensor(out["pixel_values"]), direct["pixel_values"])


def test_chat_template_with_one_image_keeps_the_slot_after_bos(tiny):
    _, processor = tiny
    messages = [
        {"role": "user", "content": "Hello."},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": [{"type": "text", "text": "And this?"}, {"type": "image"}]},
    ]
    assert "<image>" not in processor.apply_chat_template(messages, tokenize=False)


def test_pipeline_chat_with_two_images_generates_what_generate_gives(tiny):
    from transformers import pipeline

    model, processor = tiny
    a, b = random_image(0), random_image(1)
    content = [{"type": "image", "image": a}, {"type": "text", "text": "versus"}, {"type": "image", "image": b}]
    pipe = pipeline("image-text-to-text", model=model, processor=processor)
    result = pipe(text=[{"role": "user", "content": content}], max_new_tokens=4, do_sample=False)
    inputs = processor(images=[[a, b]], text=["<s>Instruction: <image>versus<image>\nResponse:"], return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)[0, inputs["input_ids"].shape[1] :]
    assert result[0]["generated_text"][-1]["content"] == processor.decode(generated, skip_special_tokens=True)
