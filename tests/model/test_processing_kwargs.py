"""LavinProcessor takes options as transformers' processors do (typed `ProcessingKwargs` through `_merge_kwargs`),
with LLaVA's processor, built from the same tokenizer, as the reference where the two should agree."""

import numpy as np
import pytest
import torch
from conftest import random_image
from PIL import Image
from transformers import LlavaProcessor
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging

from transformers_lavin.processing_lavin import ESCAPE

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def _resized(image, size=30) -> np.ndarray:
    return np.asarray(image.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float64).transpose(2, 0, 1)


@pytest.mark.parametrize("how", ["flat", "images_kwargs"])
def test_image_processor_options_given_to_the_processor_apply(tiny, how):
    _, processor = tiny
    image = random_image(3, size=50)
    options = {"do_rescale": False}
    kwargs = options if how == "flat" else {"images_kwargs": options}
    pixel_values = processor(text="q", images=image, **kwargs)["pixel_values"][0]
    expected = (_resized(image) - MEAN[:, None, None]) / STD[:, None, None]  # normalised, not divided by 255
    np.testing.assert_allclose(pixel_values, expected, rtol=1e-5, atol=1e-3)
    resized = processor(text="q", images=image, size={"height": 20, "width": 20}, do_normalize=False)
    np.testing.assert_allclose(resized["pixel_values"][0], _resized(image, 20) / 255.0, atol=1e-5)


def _warning_for(processor, **kwargs) -> str:
    logging.warning_once.cache_clear()  # the warning is given once per process
    logger = logging.get_logger("transformers.processing_utils")
    with CaptureLogger(logger) as captured:
        processor(text="<image> q", images=random_image(0), **kwargs)
    return captured.out


def _llava(tokenizer) -> LlavaProcessor:
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30})
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=6)


def test_an_unknown_option_is_reported_as_llavas_processor_reports_it(tiny):
    _, processor = tiny
    lavin_warning = _warning_for(processor, pading="max_length")
    llava_warning = _warning_for(_llava(processor.tokenizer), pading="max_length")
    assert "`pading` is not a valid argument" in lavin_warning
    assert lavin_warning == llava_warning


def test_an_option_given_twice_is_an_error(tiny):
    _, processor = tiny
    with pytest.raises(ValueError, match="do_rescale was passed two times"):
        processor(text="q", images=random_image(0), do_rescale=False, images_kwargs={"do_rescale": False})
    with pytest.raises(ValueError, match="padding was passed two times"):
        processor(text="q", padding="max_length", text_kwargs={"padding": "longest"})


def test_max_length_padding_and_truncation_are_honoured(tiny):
    _, processor = tiny
    texts = ["short", "a somewhat longer prompt"]
    natural = processor(text=texts)["input_ids"]
    padded = processor(text=texts, padding="max_length", max_length=40, return_tensors="pt")
    assert padded["input_ids"].shape == (2, 40)
    pad = processor.tokenizer.pad_token_id
    for row, ids, mask in zip(natural, padded["input_ids"], padded["attention_mask"], strict=True):
        assert ids[: len(row)].tolist() == row and set(ids[len(row) :].tolist()) == {pad}
        assert mask.tolist() == [1] * len(row) + [0] * (40 - len(row))
    left = processor(text=texts, text_kwargs={"padding": "max_length", "max_length": 40, "padding_side": "left"})
    assert left["input_ids"][0][-len(natural[0]) :] == natural[0] and len(left["input_ids"][0]) == 40
    cut = processor(text=texts, padding="max_length", truncation=True, max_length=15)["input_ids"]
    assert cut == [row[:15] + [pad] * (15 - len(row[:15])) for row in natural]


def test_tokenizer_init_options_are_defaults_as_in_transformers_processors(tiny):
    _, processor = tiny
    processor.tokenizer.init_kwargs.update(padding="max_length", max_length=33)
    assert len(processor(text="q")["input_ids"][0]) == 33
    assert len(processor(text="q", padding=False)["input_ids"][0]) < 33


@pytest.mark.parametrize("option", [{"stride": 2}, {"return_token_type_ids": True}, {"text_pair": "b"}])
def test_a_text_option_lavin_cannot_honour_is_an_error(tiny, option):
    _, processor = tiny
    with pytest.raises(ValueError, match=f"does not support {next(iter(option))}"):
        processor(text="q", **option)


def test_videos_or_audio_are_an_error(tiny):
    _, processor = tiny
    with pytest.raises(ValueError, match="takes images and text; got videos"):
        processor(text="q", videos=[np.zeros((2, 8, 8, 3), dtype=np.uint8)])


def _conversations(image):
    typed = f"What does {ESCAPE}</s> or <image> or </s> mean?"
    return {
        "text-only batch": [
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Describe this."}],
            [{"role": "user", "content": [{"type": "text", "text": "And now?"}]}],
        ],
        "one image": [
            {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "What is it?"}]},
            {"role": "assistant", "content": "A square."},
            {"role": "user", "content": typed},
        ],
        "two images": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": image},
                    {"type": "text", "text": "and"},
                    {"type": "image", "image": image.rotate(90)},
                    {"type": "text", "text": "differ how?"},
                ],
            }
        ],
    }


def _images_of(conversation):
    conversations = conversation if isinstance(conversation[0], list) else [conversation]
    return [
        [
            part["image"]
            for message in turns
            if isinstance(message["content"], list)
            for part in message["content"]
            if part["type"] == "image"
        ]
        for turns in conversations
    ]


@pytest.mark.parametrize("case", ["text-only batch", "one image", "two images"])
def test_chat_template_tokenized_equals_the_processor_on_the_rendered_text(tiny, case):
    _, processor = tiny
    conversation = _conversations(random_image(4))[case]
    options = {"padding": True, "padding_side": "left"}
    rendered = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    tokenized = processor.apply_chat_template(
        conversation, add_generation_prompt=True, tokenize=True, return_dict=True, processor_kwargs=options
    )
    images = _images_of(conversation)
    direct = processor(text=rendered, images=images if any(images) else None, **options)
    assert tokenized["input_ids"] == direct["input_ids"]
    assert tokenized["attention_mask"] == direct["attention_mask"]
    if any(images):
        np.testing.assert_array_equal(tokenized["pixel_values"], direct["pixel_values"])
    ids_only = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True)
    assert ids_only == processor(text=rendered, images=images if any(images) else None)["input_ids"]


def test_num_multimodal_tokens_match_the_image_tokens_of_a_call(tiny):
    _, processor = tiny
    sizes = [(100, 100), (300, 100), (40, 500)]
    images = [np.random.default_rng(i).integers(0, 256, (*size, 3), dtype=np.uint8) for i, size in enumerate(sizes)]
    out = processor(
        text=["one <image>", "two <image> <image>"], images=[images[:1], images[1:]], return_mm_token_type_ids=True
    )
    counted = [int(np.sum(row)) for row in out["mm_token_type_ids"]]
    assert counted == [sum(np.asarray(ids) == processor.image_token_id) for ids in out["input_ids"]]
    reported = processor._get_num_multimodal_tokens(image_sizes=sizes)
    assert reported.num_image_tokens == [processor.num_image_tokens] * 3
    assert sum(counted) == sum(reported.num_image_tokens)
    assert reported.num_image_patches == [1, 1, 1]


def test_offsets_and_replacement_offsets_index_the_expanded_text(tiny):
    _, processor = tiny
    text = "<s>look: <image> and <image>, then answer</s>"
    out = processor(
        text=[text],
        images=[[random_image(0), random_image(1)]],
        return_offsets_mapping=True,
        return_text_replacement_offsets=True,
    )
    replacements = out["text_replacement_offsets"][0]
    assert [r["span"] for r in replacements] == [(9, 16), (21, 28)]
    expanded = text
    for record in reversed(replacements):
        start, end = record["span"]
        expanded = expanded[:start] + record["replacement"] + expanded[end:]
    for record in replacements:
        start, end = record["new_span"]
        assert expanded[start:end] == record["replacement"] == processor.replace_image_token()
    pieces = [expanded[start:end] for start, end in out["offset_mapping"][0] if end > start]
    assert "".join(pieces) == "look:  and , then answer</s>"  # text and EOS; BOS and image tokens are added tokens
    assert torch.tensor(out["input_ids"][0]).eq(processor.image_token_id).sum() == 2 * processor.num_image_tokens


def test_placeholders_take_their_images_without_special_tokens(tiny):
    _, processor = tiny
    out = processor(text="see <image> here", images=random_image(0), add_special_tokens=False)
    ids = out["input_ids"][0]
    assert processor.tokenizer.bos_token_id not in ids
    assert ids.count(processor.image_token_id) == processor.num_image_tokens
    with pytest.raises(ValueError, match="no prefix"):
        processor(text="no placeholder", images=random_image(0), add_special_tokens=False)
