import json
import subprocess
import sys
import textwrap

import torch
from conftest import random_image

# Loads the saved directory in a fresh interpreter where `transformers_lavin` cannot be imported at all.
LOADER = textwrap.dedent(
    """
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "transformers_lavin" or name.startswith("transformers_lavin."):
                raise ImportError("blocked: " + name)

    sys.meta_path.insert(0, Block())
    import numpy as np, torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = sys.argv[1]
    model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
    image = Image.fromarray(np.load(path + "/image.npy"))
    inputs = processor(images=[[image], []], text=["a picture", "text only"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    torch.save(logits, path + "/logits.pt")
    print(type(model).__module__, type(processor).__module__)
    """
)


def test_saved_model_loads_with_trust_remote_code_without_the_package(tiny, tmp_path):
    import numpy as np

    model, processor = tiny
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageTextToText"] == "modeling_lavin.LavinForConditionalGeneration"
    for name in ("configuration_lavin.py", "modeling_lavin.py", "processing_lavin.py", "image_loading.py"):
        assert (tmp_path / name).is_file(), name
    image = random_image(4)
    np.save(tmp_path / "image.npy", np.asarray(image))

    result = subprocess.run(
        [sys.executable, "-c", LOADER, str(tmp_path)], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "transformers_modules" in result.stdout and "transformers_lavin" not in result.stdout

    inputs = processor(images=[[image], []], text=["a picture", "text only"], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**inputs).logits
    assert torch.equal(torch.load(tmp_path / "logits.pt"), expected)
