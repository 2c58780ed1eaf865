"""Property tests: over random image modes and sizes, prompts with special strings and batch layouts, the image
loader and the processor give the documented result or a clear ValueError/TypeError, never a crash from deep inside
a library."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from transformers_lavin.image_loading import load_image
from transformers_lavin.processing_lavin import ESCAPE
from transformers_lavin.testing_utils import build_tiny_lavin

PIL_MODES = ["1", "L", "P", "RGB", "RGBA", "LA", "PA", "CMYK", "YCbCr", "LAB", "HSV", "I", "I;16", "F", "RGBX"]
SPECIAL = ["<image>", "</s>", "<s>", "<pad>", "<unk>", ESCAPE, "Image: ", "\n"]
CLEAR_ERRORS = (ValueError, TypeError)
PROPERTY_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

sizes = st.tuples(st.integers(0, 48), st.integers(0, 48))
pil_images = st.builds(lambda mode, size, color: Image.new(mode, size, color), st.sampled_from(PIL_MODES), sizes,
                       st.integers(0, 255))  # fmt: skip
arrays = st.builds(
    lambda shape, dtype: np.zeros(shape, dtype=dtype),
    st.lists(st.integers(0, 20), min_size=1, max_size=4).map(tuple),
    st.sampled_from([np.uint8, np.float32, np.int16, bool]),
)
prompts = st.lists(st.one_of(st.sampled_from(SPECIAL), st.text(max_size=8)), max_size=6).map("".join)


def assert_clear(error: BaseException) -> None:
    """A clear error: raised by this package itself (not deep inside a library), with a message."""
    frame = error.__traceback__
    while frame.tb_next is not None:
        frame = frame.tb_next
    assert "transformers_lavin" in frame.tb_frame.f_code.co_filename, repr(error)
    assert str(error)


@pytest.fixture(scope="module")
def processor():
    return build_tiny_lavin(seed=0)[1]


def _expected_size(image):
    return image.size if isinstance(image, Image.Image) else (image.shape[1], image.shape[0])


@PROPERTY_SETTINGS
@given(image=st.one_of(pil_images, arrays), reduce=st.booleans())
def test_image_loader_gives_rgb_or_a_clear_error(image, reduce):
    try:
        result = load_image(image, reduce_to=(8, 8) if reduce else None)
    except CLEAR_ERRORS as error:
        assert_clear(error)
        return
    assert result.mode == "RGB"
    width, height = _expected_size(image)
    assert (result.width <= width and result.height <= height) if reduce else result.size == (width, height)
    assert min(result.size) >= 1


def _one_image_or_none(draw):
    return draw(st.one_of(st.none(), pil_images.filter(lambda im: min(im.size) > 0)))


@st.composite
def batches(draw):
    texts = draw(st.lists(prompts, min_size=1, max_size=3))
    layout = draw(st.sampled_from(["none", "flat", "nested", "single"]))
    if layout == "none":
        images = None
    elif layout == "single":
        images = _one_image_or_none(draw)
    elif layout == "flat":
        images = [_one_image_or_none(draw) for _ in range(draw(st.integers(0, 3)))]
    else:
        images = [
            [_one_image_or_none(draw) for _ in range(draw(st.integers(0, 2)))] for _ in range(draw(st.integers(0, 3)))
        ]
    return texts, images, draw(st.sampled_from([False, True, "longest"])), draw(st.booleans())


@PROPERTY_SETTINGS
@given(batch=batches())
def test_processor_gives_the_layout_or_a_clear_error(processor, batch):
    texts, images, padding, bos_first = batch
    texts = [processor.tokenizer.bos_token + text if bos_first else text for text in texts]
    try:
        out = processor(images=images, text=texts, padding=padding)
    except CLEAR_ERRORS as error:
        assert_clear(error)
        return
    images_per_row = [ids.count(processor.image_token_id) / processor.num_image_tokens for ids in out["input_ids"]]
    assert all(count == int(count) for count in images_per_row)
    assert len(out.get("pixel_values", [])) == sum(images_per_row)
    for ids in out["input_ids"]:
        assert ids.count(processor.tokenizer.bos_token_id) == 1
        assert processor.tokenizer.unk_token_id not in ids


@PROPERTY_SETTINGS
@given(turns=st.lists(prompts, min_size=1, max_size=4), with_image=st.booleans())
def test_typed_text_in_a_chat_never_becomes_special_tokens(processor, turns, with_image):
    messages = [
        {"role": "user" if index % 2 == 0 else "assistant", "content": [{"type": "text", "text": text}]}
        for index, text in enumerate(turns)
    ]
    if with_image:
        messages[0]["content"].insert(0, {"type": "image"})
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    try:
        out = processor(images=[[Image.new("RGB", (30, 30))]] if with_image else None, text=[text])
    except CLEAR_ERRORS as error:
        assert_clear(error)
        assert "Empty prompt" in str(error)
        return
    ids = out["input_ids"][0]
    tokenizer = processor.tokenizer
    assert ids.count(processor.image_token_id) == (processor.num_image_tokens if with_image else 0)
    assert ids.count(tokenizer.bos_token_id) == 1
    assert ids.count(tokenizer.eos_token_id) == sum(message["role"] == "assistant" for message in messages)
    assert tokenizer.pad_token_id not in ids and tokenizer.unk_token_id not in ids
