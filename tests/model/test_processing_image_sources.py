"""Images given as `transformers.image_utils.load_image` takes them (paths, data URLs, base64; URLs are fetched),
under this project's limits. No test reaches the network: URLs are served by an in-process httpx transport."""

import base64
import io

import httpx
import numpy as np
import pytest
from conftest import random_image
from PIL import Image

from transformers_lavin import image_loading
from transformers_lavin.image_loading import load_image


def _encoded(image: Image.Image, format: str = "PNG", **save_options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **save_options)
    return buffer.getvalue()


@pytest.fixture
def image_file(tmp_path):
    image = random_image(7, size=48)
    path = tmp_path / "picture.png"
    path.write_bytes(_encoded(image))
    return image, path


def test_every_source_form_gives_the_same_pixel_values(tiny, image_file):
    _, processor = tiny
    image, path = image_file
    data = base64.b64encode(path.read_bytes()).decode()
    forms = [image, str(path), path, f"data:image/png;base64,{data}", data, "\n".join([data[:40], data[40:]])]
    outputs = [processor(text="q", images=form)["pixel_values"] for form in forms]
    for output in outputs[1:]:
        np.testing.assert_array_equal(output, outputs[0])


def test_a_chat_image_part_may_be_a_data_url_or_base64(tiny, image_file):
    _, processor = tiny
    image, path = image_file
    data = base64.b64encode(path.read_bytes()).decode()
    expected = processor(text="q", images=image)["pixel_values"]
    for part in ({"type": "image", "url": f"data:image/png;base64,{data}"}, {"type": "image", "base64": data}):
        messages = [{"role": "user", "content": [part, {"type": "text", "text": "What is it?"}]}]
        out = processor.apply_chat_template(messages, tokenize=True, return_dict=True)
        np.testing.assert_array_equal(out["pixel_values"], expected)


def test_exif_orientation_and_the_pixel_bound_apply_to_base64_images():
    image = Image.new("RGB", (40, 20), (200, 30, 30))
    image.paste((20, 20, 220), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    data = base64.b64encode(_encoded(image, "JPEG", exif=exif.tobytes())).decode()
    upright = load_image(f"data:image/jpeg;base64,{data}")
    assert upright.size == (20, 40)
    assert upright.getpixel((10, 5))[2] > 150  # the blue half is now on top
    with pytest.raises(ValueError, match="over the limit of 100"):
        load_image(data, max_pixels=100)


@pytest.mark.parametrize(
    "source, message",
    [
        ("data:text/plain;base64,aGVsbG8=", "Unsupported data URL"),
        ("data:image/png,not-base64", "Unsupported data URL"),
        ("data:image/png;base64," + base64.b64encode(b"not an image at all").decode(), "Could not read the data-URL"),
        ("missing/picture.png", "Image file not found: missing/picture.png"),
        (base64.b64encode(b"x" * 300).decode(), "Image file not found: eHh4"),
    ],
)
def test_bad_sources_are_one_clear_error(source, message):
    with pytest.raises(ValueError, match=message):
        load_image(source)


@pytest.fixture
def served(monkeypatch):
    """URLs answered in-process: a PNG, a 404, and a body over the download bound."""
    png = _encoded(random_image(2, size=32))

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/picture.png":
            return httpx.Response(200, content=png)
        if request.url.path == "/huge":
            return httpx.Response(200, content=b"\0" * (image_loading.MAX_DOWNLOAD_BYTES + 1))
        return httpx.Response(404)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    monkeypatch.setattr(image_loading.httpx, "stream", client.stream)
    return png


def test_a_url_is_fetched_and_checked_like_any_image(served, monkeypatch):
    image = load_image("https://images.example/picture.png")
    np.testing.assert_array_equal(np.asarray(image), np.asarray(Image.open(io.BytesIO(served)).convert("RGB")))
    with pytest.raises(ValueError, match="HTTP 404"):
        load_image("https://images.example/missing.png")
    monkeypatch.setattr(image_loading, "MAX_DOWNLOAD_BYTES", 1000)
    with pytest.raises(ValueError, match="over 1,000 bytes"):
        load_image("https://images.example/huge")
