"""Stand-in for transformers' `utils/fetch_hub_objects_for_ci.py`, which the sdist does not ship.

Upstream maps a Hub fixture URL to its copy fetched for CI. Here nothing is downloaded: an image URL becomes an image
drawn locally (deterministic, with the fixture's file name); any other fixture (video, audio) becomes a path that
does not exist, so a test that needs one fails clearly instead of reaching the network.
"""

import atexit
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

_FIXTURES = Path(tempfile.mkdtemp(prefix="lavin-upstream-fixtures-"))
atexit.register(shutil.rmtree, _FIXTURES, ignore_errors=True)
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def url_to_local_path(url: str) -> str:
    path = _FIXTURES / url.rsplit("/", 1)[-1]
    if path.suffix.lower() in _IMAGE_SUFFIXES and not path.exists():
        seed = sum(path.name.encode())
        pixels = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)
    return str(path)
