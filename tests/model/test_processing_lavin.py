import numpy as np
import pytest
import torch
from conftest import random_image
from PIL import Image
from transformers import AutoProcessor

import transformers_lavin  # noqa: F401
from transformers_lavin import LavinProcessor
from transformers_lavin.image_loading import load_image, to_rgb


def expected_ids(processor, text: str, has_image: bool) -> list[int]:
    """The reference's layout, built by hand: BOS, then "Image: " + image tokens or "Image: N/A", then the text."""
    tok = processor.tokenizer
    if has_image:
        prefix = (
            tok.encode("Image: ", add_special_tokens=False) + [processor.image_token_id] * processor.num_image_tokens
        )
    else:
        prefix = tok.encode("Image: N/A", add_special_tokens=False)
    return [tok.bos_token_id] + prefix + tok.encode(text, add_special_tokens=False)


def test_token_layout_matches_the_reference_prefix_rules(tiny):
    _, processor = tiny
    out = processor(images=[[random_image(0)], []], text=["Q: shape?", "Q: sum?"])
    assert out["input_ids"][0] == expected_ids(processor, "Q: shape?", True)
    assert out["input_ids"][1] == expected_ids(processor, "Q: sum?", False)
    assert out["pixel_values"].shape == (1, 3, 30, 30)


def test_images_per_sample_flat_and_single_forms_agree(tiny):
    _, processor = tiny
    image = random_image(0)
    nested = processor(images=[[image]], text=["hi"], return_tensors="pt")
    flat = processor(images=[image], text=["hi"], return_tensors="pt")
    single = processor(images=image, text="hi", return_tensors="pt")
    for other in (flat, single):
        assert torch.equal(nested["input_ids"], other["input_ids"])
        assert torch.equal(nested["pixel_values"], other["pixel_values"])


def test_pixel_values_are_bicubic_resize_with_imagenet_normalisation(tiny):
    _, processor = tiny
    image = random_image(5, size=50)
    out = processor(images=[image], text=["x"], return_tensors="np")
    resized = np.asarray(image.resize((30, 30), Image.Resampling.BICUBIC), dtype=np.float64) / 255.0
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = ((resized - mean) / std).transpose(2, 0, 1)
    np.testing.assert_allclose(out["pixel_values"][0], expected, atol=1e-5)


def _first(value):
    return value[0] if isinstance(value[0], list) else value


def test_chat_template_output_gets_the_prefix_and_answer_mask(tiny):
    _, processor = tiny
    image = random_image(0)
    messages = [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Q?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "The answer is A."}]},
    ]
    text = processor.apply_chat_template(messages, tokenize=False)
    assert text == "<s>Instruction: Q?\nResponse:The answer is A.</s>"
    out = processor.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, processor_kwargs={}
    )
    ids = _first(out["input_ids"])
    answer_ids = processor.tokenizer.encode("The answer is A.</s>", add_special_tokens=False)
    assert ids == expected_ids(processor, "Instruction: Q?\nResponse:", True) + answer_ids
    mask = _first(out["assistant_masks"])
    assert [i for i, m in zip(ids, mask, strict=True) if m] == answer_ids
    assert "pixel_values" in out


def test_chat_template_roles_system_turns_and_generation_cue(tiny):
    """The reference's dialogue format: system line, `Instruction:`/`Response:` turns, the cue as generation prompt."""
    _, processor = tiny
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": "A circle."},
        {"role": "user", "content": "Which color?"},
    ]
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == (
        "<s>Answer briefly.\nInstruction: What is it?\nResponse:A circle.</s>\nInstruction: Which color?\nResponse:"
    )
    assert processor.apply_chat_template(messages, tokenize=False).endswith("Instruction: Which color?\n")
    with pytest.raises(Exception, match="roles system, user and assistant"):
        processor.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_chat_template_masks_every_answer_and_puts_a_later_image_in_the_slot(tiny):
    _, processor = tiny
    image = random_image(1)
    messages = [
        {"role": "user", "content": "Hello."},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": [{"type": "text", "text": "And this?"}, {"type": "image", "image": image}]},
        {"role": "assistant", "content": "A square."},
    ]
    out = processor.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, processor_kwargs={}
    )
    ids, mask = _first(out["input_ids"]), _first(out["assistant_masks"])
    text = "Instruction: Hello.\nResponse:Hi.</s>\nInstruction: And this?\nResponse:A square.</s>"
    assert ids == expected_ids(processor, text, True)
    assert processor.tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m]) == "Hi.</s>A square.</s>"


def test_text_without_bos_and_no_special_tokens_is_tokenized_as_is(tiny):
    _, processor = tiny
    out = processor(text=["The answer is A.</s>"], add_special_tokens=False)
    assert out["input_ids"][0] == processor.tokenizer.encode("The answer is A.</s>", add_special_tokens=False)


def test_processor_round_trip_through_auto_processor(tiny, tmp_path):
    _, processor = tiny
    processor.save_pretrained(tmp_path)
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(reloaded, LavinProcessor)
    assert reloaded.chat_template == processor.chat_template
    assert (reloaded.num_image_tokens, reloaded.image_prefix, reloaded.no_image_text) == (2, "Image: ", "N/A")
    image = random_image(3)
    a = processor(images=[[image], []], text=["one", "two two"], padding=True, return_tensors="pt")
    b = reloaded(images=[[image], []], text=["one", "two two"], padding=True, return_tensors="pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_decode_and_post_process(tiny):
    _, processor = tiny
    ids = processor(text=["hello"], return_tensors="pt")["input_ids"]
    assert processor.batch_decode(ids, skip_special_tokens=True) == ["Image: N/Ahello"]
    assert processor.post_process_image_text_to_text(ids) == ["Image: N/Ahello"]


@pytest.mark.parametrize(
    "images, message",
    [
        ([random_image(0), random_image(1)], "2 images for 1 prompts"),
        ([[random_image(0), random_image(1)]], "0 <image> placeholder\\(s\\) but 2 image\\(s\\)"),
        ([[random_image(0)], []], "image lists for 2 samples but 1 prompts"),
    ],
)
def test_wrong_number_of_images_is_a_clear_error(tiny, images, message):
    _, processor = tiny
    with pytest.raises(ValueError, match=message):
        processor(images=images, text=["only one prompt"])


def test_empty_prompt_is_refused_unless_there_is_an_image(tiny):
    _, processor = tiny
    with pytest.raises(ValueError, match="Empty prompt"):
        processor(text=["   "])
    assert processor(images=[random_image(0)], text=[""])["input_ids"][0][-1] == processor.image_token_id


def test_prompt_over_the_maximum_length_is_refused_or_truncated(tiny):
    _, processor = tiny
    processor.tokenizer.model_max_length = 40
    long_text = "x" * 100
    with pytest.raises(ValueError, match="over the maximum of 40"):
        processor(text=[long_text])
    cut = processor(text=[long_text], truncation=True, max_length=20)
    assert len(cut["input_ids"][0]) == 20
    with pytest.raises(ValueError, match="cut into the image tokens"):
        processor(images=[random_image(0)], text=[long_text], truncation=True, max_length=5)


def test_unreadable_and_truncated_image_files_are_clear_errors(tiny, tmp_path):
    _, processor = tiny
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("this is text")
    with pytest.raises(ValueError, match="Could not read image file .*notes.png"):
        processor(images=[str(not_an_image)], text=["q"])
    truncated = tmp_path / "cut.png"
    random_image(0, size=64).save(tmp_path / "full.png")
    truncated.write_bytes((tmp_path / "full.png").read_bytes()[:300])
    with pytest.raises(ValueError, match="cut.png"):
        processor(images=[str(truncated)], text=["q"])
    with pytest.raises(ValueError, match="not found"):
        processor(images=[str(tmp_path / "missing.png")], text=["q"])


def test_image_modes_are_converted_to_rgb():
    gray = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8), mode="L")
    np.testing.assert_array_equal(np.asarray(to_rgb(gray))[..., 1], np.asarray(gray))

    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    assert np.asarray(to_rgb(rgba))[0, 0].tolist() == [255, 255, 255]
    half = Image.new("RGBA", (4, 4), (0, 0, 0, 128))
    assert np.asarray(to_rgb(half))[0, 0].tolist() == [127, 127, 127]

    palette = Image.new("P", (4, 4))
    palette.putpalette([10, 20, 30] + [0] * 765)
    assert np.asarray(to_rgb(palette))[0, 0].tolist() == [10, 20, 30]

    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in CMYK
    assert np.asarray(to_rgb(cmyk))[0, 0].tolist() == [255, 0, 0]

    sixteen = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16), mode="I;16")
    assert np.asarray(to_rgb(sixteen))[0, 0].tolist() == [255, 255, 255]
    mid = Image.fromarray(np.full((4, 4), 257 * 100, dtype=np.uint16), mode="I;16")
    assert np.asarray(to_rgb(mid))[0, 0].tolist() == [100, 100, 100]


def test_numpy_images_and_bad_types(tiny):
    array = np.zeros((5, 5, 3), dtype=np.uint8)
    assert load_image(array).size == (5, 5)
    with pytest.raises(ValueError, match="uint8"):
        load_image(array.astype(np.float32))
    with pytest.raises(TypeError, match="Expected a PIL image"):
        load_image(42)
