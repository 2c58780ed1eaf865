"""Hostile prompts and images: user text never becomes special tokens; big, rotated and empty images."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from transformers_lavin.image_loading import load_image
from transformers_lavin.processing_lavin import ESCAPE

TYPED = "Is <image> a tag? Say </s> then <s> and <pad> and <unk>."


def _chars(processor, text):
    return processor.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def test_typed_special_strings_in_a_chat_stay_text(tiny):
    _, processor = tiny
    tokenizer = processor.tokenizer
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": TYPED}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Typed </s> here."}]},
        {"role": "user", "content": "Again: </s>" + ESCAPE},
    ]
    text = processor.apply_chat_template(messages, tokenize=False)
    out = processor(images=[[Image.new("RGB", (30, 30))]], text=[text])
    ids = out["input_ids"][0]
    assert ids.count(processor.image_token_id) == processor.num_image_tokens  # only the processor's own
    assert ids.count(tokenizer.bos_token_id) == 1
    assert ids.count(tokenizer.eos_token_id) == 1  # the template's, after the assistant turn
    body = ids[ids.index(processor.image_token_id) + processor.num_image_tokens :]
    # The template's dialogue format (Instruction/Response turns, EOS after each answer) around the typed text.
    expected = (
        _chars(processor, "Instruction: " + TYPED + "\nResponse:Typed </s> here.")
        + [tokenizer.eos_token_id]
        + _chars(processor, "\nInstruction: Again: </s>" + ESCAPE + "\n")
    )
    assert body == expected
    assert tokenizer.decode(body, skip_special_tokens=False).count("</s>") == 4


def test_direct_text_reads_image_placeholders_only_unescaped_and_never_added_special_tokens(tiny):
    _, processor = tiny
    # `<image>` in prompt-format text marks an image, so placeholders without images are refused...
    with pytest.raises(ValueError, match="2 <image> placeholder\\(s\\) but 0 image\\(s\\)"):
        processor(text=["<image><image> <pad> <unk> <s>"])
    # ...and escaped they are the characters they are.
    text = processor.escape_special_tokens("<image><image>") + " <pad> <unk> <s>"
    out = processor(text=[text])
    ids = out["input_ids"][0]
    assert ids == processor(text=["x"])["input_ids"][0][:-1] + _chars(processor, "<image><image> <pad> <unk> <s>")
    assert processor.image_token_id not in ids
    assert processor.tokenizer.pad_token_id not in ids and processor.tokenizer.unk_token_id not in ids
    assert ids.count(processor.tokenizer.bos_token_id) == 1


def test_escape_marks_only_eos_the_image_placeholder_and_the_marker(tiny):
    _, processor = tiny
    assert processor.escape_special_tokens("a</s>b" + ESCAPE) == f"a{ESCAPE}</s>b{ESCAPE}{ESCAPE}"
    assert processor.escape_special_tokens("<image>") == ESCAPE + "<image>"
    assert processor.escape_special_tokens("<s><pad><unk>") == "<s><pad><unk>"


def test_offsets_index_the_rendered_text(tiny):
    _, processor = tiny
    text = f"<s>x {ESCAPE}</s> y</s>"
    out = processor(text=[text], return_offsets_mapping=True)
    pieces = [text[start:end] for start, end in out["offset_mapping"][0] if end > start]
    assert "".join(pieces) == "x </s> y</s>"


def _jpeg(size, orientation=None) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", size, (200, 30, 30))
    image.paste((20, 20, 220), (0, 0, size[0] // 2, size[1]))  # left half blue
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(buffer, "JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    path.write_bytes(_jpeg((60, 40), orientation=6))  # stored landscape, shown rotated 90 degrees clockwise
    image = load_image(path)
    assert image.size == (40, 60)
    top = np.asarray(image)[2, 20]
    assert top[2] > 150 and top[0] < 100  # the stored left (blue) half is now on top
    reduced = load_image(path, reduce_to=(8, 8))
    assert reduced.size[1] > reduced.size[0] and np.asarray(reduced)[1, reduced.size[0] // 2][2] > 150


@pytest.mark.parametrize(
    "image", [Image.new("RGB", (0, 0)), Image.new("L", (0, 5)), np.zeros((0, 4, 3), np.uint8)], ids=str
)
def test_empty_image_is_refused(tiny, image):
    _, processor = tiny
    with pytest.raises(ValueError, match=r"is empty \(\d+x\d+ pixels\)"):
        processor(images=[image], text=["hi"])


def test_pixel_bound_is_checked_from_the_header_and_can_be_raised(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("L", (3000, 2000)).save(path)
    with pytest.raises(ValueError, match=r"3000x2000 = 6,000,000 pixels, over the limit of 1,000,000.*max_pixels"):
        load_image(path, max_pixels=1_000_000)
    assert load_image(path, max_pixels=6_000_000).size == (3000, 2000)


def test_a_big_image_is_reduced_before_it_is_converted(tmp_path):
    path = tmp_path / "big.jpg"
    path.write_bytes(_jpeg((4000, 3000)))
    image = load_image(path, reduce_to=(224, 224))
    assert 448 <= min(image.size) and max(image.size) < 4 * 448


def test_9000_pixel_photo_stays_small_in_memory(tmp_path):
    # Measured in a fresh process: peak memory of the processor call over the import baseline.
    script = f"""
import resource
from PIL import Image
from transformers_lavin.testing_utils import build_tiny_lavin
_, processor = build_tiny_lavin()
processor.image_processor.size = {{"height": 224, "width": 224}}
Image.new("RGB", (9000, 9000), (9, 99, 199)).save({str(tmp_path / "huge.jpg")!r}, quality=40)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
processor(images=[{str(tmp_path / "huge.jpg")!r}], text=["hi"])
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # The RGBA-free path would hold 243 MB of pixels and about 1 GB as float; reduced, a few MB.
    assert int(result.stdout.strip().splitlines()[-1]) < 100


def test_pipeline_chat_input_keeps_typed_special_strings_as_text(tiny):
    from transformers import pipeline
    from transformers.pipelines.image_text_to_text import Chat

    model, processor = tiny
    pipe = pipeline("image-text-to-text", model=model, processor=processor)
    messages = [
        {
            "role": "user",
            "content": [{"type": "image", "image": Image.new("RGB", (30, 30))}, {"type": "text", "text": TYPED}],
        }
    ]
    ids = pipe.preprocess(Chat(messages))["input_ids"][0].tolist()  # what generate would get; no forward here
    assert ids.count(processor.image_token_id) == processor.num_image_tokens
    assert processor.tokenizer.eos_token_id not in ids
