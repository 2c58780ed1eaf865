"""Turn whatever users pass as an image into an RGB PIL image, or fail with a message that names the problem."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

ImageInput = Image.Image | np.ndarray | str | os.PathLike


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


def load_image(image: ImageInput) -> Image.Image:
    """
    Load an image given as a PIL image, a numpy array (H, W[, C], uint8) or a file path, as an RGB PIL image.

    Raises:
        ValueError: the file is missing, is not an image, or is truncated or corrupt; the message names the file.
        TypeError: the input is of a type that is not an image.
    """
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise ValueError(f"Image file not found: {path}. Check the path.")
        try:
            with Image.open(path) as opened:
                opened.load()
                return to_rgb(opened.copy())
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            raise ValueError(f"Could not read image file {path}: {error}. Is it a complete, valid image?") from error
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (1, 3, 4)):
            raise ValueError(f"A numpy image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {image.shape}.")
        array = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
        if array.dtype != np.uint8:
            raise ValueError(f"A numpy image must be uint8; got {array.dtype}. Scale it to 0-255 first.")
        return to_rgb(Image.fromarray(array))
    if isinstance(image, Image.Image):
        try:
            image.load()
        except OSError as error:
            raise ValueError(f"Could not decode the image: {error}. Is the file complete?") from error
        return to_rgb(image)
    raise TypeError(f"Expected a PIL image, a numpy array or a file path as an image; got {type(image).__name__}.")
