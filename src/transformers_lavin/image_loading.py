"""Turn whatever users pass as an image into an RGB PIL image, or fail with a message that names the problem.

Accepted: PIL images, uint8 numpy arrays, file paths, and, as `transformers.image_utils.load_image` takes them, `http://`
or `https://` URLs (a URL is the user naming the network, so it is fetched), `data:image/...;base64,` URLs and bare
base64-encoded image bytes.

Bounds on hostile images (see docs/security.md):
- `MAX_IMAGE_PIXELS` (default 89,478,485, PIL's own default): larger images are refused from their header, before any
  pixel is decoded. Raise it per call with `max_pixels=` or for the process by setting
  `transformers_lavin.image_loading.MAX_IMAGE_PIXELS`; above twice `PIL.Image.MAX_IMAGE_PIXELS` raise PIL's too.
- `MAX_DOWNLOAD_BYTES` (default 64 MiB): a URL whose body is bigger is refused while it downloads.
- With `reduce_to=(height, width)` (the processor passes the model's input size) a big image is made small early: a
  JPEG is decoded at a reduced scale (`Image.draft`), any image is then shrunk by an integer factor
  (`Image.reduce`) while every side keeps at least twice the target, all before the colour conversion, so a 9000x9000
  photo never exists at full size in float or in RGBA.

Why not `transformers.image_utils.load_image` underneath: it downloads a URL's whole body, decodes every pixel before
any size check (no header cap, no draft decoding) and converts with `convert("RGB")` (alpha on black, 16-bit clipped),
so this module opens images itself and takes from transformers only the accepted string forms, and from PIL
`ImageOps.exif_transpose`.
"""

import base64
import binascii
import io
import os
import warnings
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageInput = Image.Image | np.ndarray | str | os.PathLike

MAX_IMAGE_PIXELS = 89_478_485
MAX_DOWNLOAD_BYTES = 64 * 1024**2
DOWNLOAD_TIMEOUT_SECONDS = 30.0
# Sides kept above the target, as PIL's `thumbnail(reducing_gap=2.0)`: the final bicubic resize still has detail.
REDUCING_GAP = 2
# EXIF orientations that swap width and height.
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}


def _flatten_alpha(image: Image.Image) -> Image.Image:
    # Transparent pixels become white, as a viewer shows them; dropping alpha would expose arbitrary colours.
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """
    Convert any PIL mode to 8-bit RGB.

    Documented conversions: grayscale (L, 1) is replicated to three channels; palette images and images with an
    alpha channel (RGBA, LA, P with transparency) are composited on white; CMYK and YCbCr go through PIL's colour
    conversion; 16- and 32-bit integer images (I;16, I) are scaled from their full range to 0-255, and float images
    (F) from [0, 1].
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        return _flatten_alpha(image)
    if mode.startswith("I") or mode == "F":
        array = np.asarray(image, dtype=np.float64)
        if mode == "F":
            scaled = array * 255.0
        elif mode.startswith("I;16"):
            scaled = array / 257.0  # 65535 -> 255
        else:
            scaled = array / max(float(array.max()), 1.0) * 255.0 if array.max() > 255 else array
        gray = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")
        return gray.convert("RGB")
    return image.convert("RGB")


def _check_size(size: tuple[int, int], max_pixels: int, where: str) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ValueError(f"{where} is empty ({width}x{height} pixels); give an image with at least one pixel.")
    if width * height > max_pixels:
        raise ValueError(
            f"{where} is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,} that guards "
            "against decompression bombs. If you trust it, pass max_pixels= or raise "
            "transformers_lavin.image_loading.MAX_IMAGE_PIXELS."
        )


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(ImageOps.ExifTags.Base.Orientation, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block is ignored, as viewers ignore it
        return 1


def _reduce(image: Image.Image, reduce_to: tuple[int, int] | None, orientation: int) -> Image.Image:
    """Shrink by integer factors while each side stays at least `REDUCING_GAP` times the (oriented) target."""
    if reduce_to is None:
        return image
    height, width = reduce_to
    if orientation in _TRANSPOSING_ORIENTATIONS:
        height, width = width, height
    factors = (max(1, image.width // (REDUCING_GAP * width)), max(1, image.height // (REDUCING_GAP * height)))
    if factors == (1, 1):
        return image
    if image.mode not in ("1", "L", "LA", "La", "RGB", "RGBA", "RGBa", "I", "F", "CMYK", "YCbCr", "P", "PA"):
        return image  # modes Image.reduce does not take (I;16) are converted at full size
    if image.mode in ("P", "PA", "1"):
        image = to_rgb(image)  # palette indices cannot be averaged
    return image.reduce(factors)


def _finish(image: Image.Image, reduce_to: tuple[int, int] | None) -> Image.Image:
    orientation = _orientation(image)
    if orientation != 1:
        reduced = _reduce(image, reduce_to, orientation)
        if reduced is not image:  # `reduce` drops the EXIF block that exif_transpose reads
            reduced.info["exif"] = image.getexif().tobytes()
        return to_rgb(ImageOps.exif_transpose(reduced))
    return to_rgb(_reduce(image, reduce_to, orientation))


def _describe(source: str) -> str:
    # Base64 data can be megabytes long; an error message shows its start.
    return source if len(source) <= 80 else f"{source[:60]}... ({len(source):,} characters)"


def _download(url: str) -> bytes:
    """The body of `url`, refused past `MAX_DOWNLOAD_BYTES` while it arrives."""
    try:
        with httpx.stream("GET", url, timeout=DOWNLOAD_TIMEOUT_SECONDS, follow_redirects=True) as response:
            if response.status_code != 200:
                raise ValueError(f"Could not download image {url}: HTTP {response.status_code}. Check the URL.")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_DOWNLOAD_BYTES:
                    raise ValueError(
                        f"Image {url} is over {MAX_DOWNLOAD_BYTES:,} bytes; download it yourself if you trust it, or "
                        "raise transformers_lavin.image_loading.MAX_DOWNLOAD_BYTES."
                    )
            return bytes(body)
    except httpx.HTTPError as error:
        raise ValueError(f"Could not download image {url}: {error}. Check the URL and the network.") from None


def _decode_base64(data: str) -> bytes | None:
    """The bytes of base64 `data` (whitespace allowed), or None if it is not base64."""
    try:
        return base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def _open(source: str | os.PathLike | io.BytesIO, where: str, reduce_to, max_pixels: int) -> Image.Image:
    """Open a file or in-memory image, checking its size from the header before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            # The size is checked against `max_pixels` below, before decoding; PIL's warning would only repeat it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(source)
        with opened:
            _check_size(opened.size, max_pixels, where)
            if reduce_to is not None and opened.format == "JPEG":
                height, width = reduce_to
                opened.draft(None, (REDUCING_GAP * max(height, width),) * 2)
            opened.load()
            return _finish(opened, reduce_to)
    except Image.DecompressionBombError as error:
        raise ValueError(
            f"{where} is refused by PIL's decompression-bomb guard ({error}). If you trust it, raise "
            "PIL.Image.MAX_IMAGE_PIXELS as well as max_pixels."
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        subject = where[:1].lower() + where[1:]
        raise ValueError(f"Could not read {subject}: {error}. Is it a complete, valid image?") from error


def _load_string(source: str, reduce_to, max_pixels: int) -> Image.Image:
    """A path, a URL, a data URL or base64 image data, as `transformers.image_utils.load_image` reads them."""
    if source.startswith(("http://", "https://")):
        return _open(io.BytesIO(_download(source)), f"Image {source}", reduce_to, max_pixels)
    if source.startswith("data:"):
        header, _, payload = source.partition(",")
        data = _decode_base64(payload) if header.endswith(";base64") else None
        if not header.startswith("data:image/") or data is None:
            raise ValueError(
                f"Unsupported data URL {_describe(source)}: give an image as data:image/<type>;base64,<data>."
            )
        return _open(io.BytesIO(data), "The data-URL image", reduce_to, max_pixels)
    if os.path.isfile(source):  # False, not an error, for a string too long to be a path (base64 data)
        return _open(source, f"Image file {source}", reduce_to, max_pixels)
    data = _decode_base64(source) if len(source) >= 16 else None
    if data is not None:
        try:
            with Image.open(io.BytesIO(data)):
                pass
        except (UnidentifiedImageError, OSError, SyntaxError):
            data = None
    if data is None:
        raise ValueError(
            f"Image file not found: {_describe(source)}. Give an existing file, an http(s) URL, a data:image URL or "
            "base64-encoded image bytes."
        )
    return _open(io.BytesIO(data), "The base64 image", reduce_to, max_pixels)


def load_image(
    image: ImageInput, reduce_to: tuple[int, int] | None = None, max_pixels: int | None = None
) -> Image.Image:
    """
    Load an image given as a PIL image, a numpy array (H, W[, C], uint8), a file path, an `http(s)://` URL, a
    `data:image/...;base64,` URL or base64-encoded image bytes, as an RGB PIL image.

    The EXIF orientation is applied (a phone photo is upright as a viewer shows it). A URL is fetched (with
    `httpx`, at most `MAX_DOWNLOAD_BYTES`); nothing else reaches the network.

    Args:
        image: the image.
        reduce_to (`tuple[int, int]`, *optional*): `(height, width)` the model needs; a bigger image is shrunk early
            (JPEG draft decoding, then integer-factor reduction) while each side stays at least twice the target.
        max_pixels (`int`, *optional*): refuse images with more pixels; defaults to `MAX_IMAGE_PIXELS`.

    Raises:
        ValueError: the file is missing, the URL cannot be fetched or is too big, the data is not an image, is
            truncated or corrupt, is empty (0 pixels) or over `max_pixels`; the message names the source.
        TypeError: the input is of a type that is not an image.
    """
    max_pixels = MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    if isinstance(image, str):
        return _load_string(image, reduce_to, max_pixels)
    if isinstance(image, os.PathLike):
        path = Path(image)
        if not path.is_file():
            raise ValueError(f"Image file not found: {path}. Check the path.")
        return _open(path, f"Image file {path}", reduce_to, max_pixels)
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (1, 3, 4)):
            raise ValueError(f"A numpy image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {image.shape}.")
        array = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
        if array.dtype != np.uint8:
            raise ValueError(f"A numpy image must be uint8; got {array.dtype}. Scale it to 0-255 first.")
        _check_size((array.shape[1], array.shape[0]), max_pixels, "The numpy image")
        return _finish(Image.fromarray(array), reduce_to)
    if isinstance(image, Image.Image):
        _check_size(image.size, max_pixels, "The image")
        try:
            image.load()
        except OSError as error:
            raise ValueError(f"Could not decode the image: {error}. Is the file complete?") from error
        return _finish(image, reduce_to)
    raise TypeError(
        "Expected a PIL image, a numpy array, a file path, a URL, a data URL or base64 image data as an image; got "
        f"{type(image).__name__}."
    )
