"""The user side of the Hub round trip, run by `test_hub_roundtrip.py` in a fresh interpreter.

The test starts the fake Hub and runs this script with `HF_ENDPOINT`, `HF_TOKEN`, `HF_HOME` and `HF_HUB_DISABLE_XET`
set in the environment, exactly as a user would configure huggingface_hub (it reads them at import). Phases:

- `push`: push a tiny LaVIN (no namespace given: the token owner's is used), load it back from the Hub, add an MMA
  adapter with random weights, push the adapter, download both into a fresh folder, reload them with
  `PeftModel.from_pretrained` and save the logits before and after; then run the adapter card's usage snippet.
- `remote-code`: with `transformers_lavin` made unimportable, run the full model card's snippet
  (`trust_remote_code=True`) and save the logits of the remote-code model on the same inputs. It can start with
  `push`: it imports its libraries, then waits for the file `base_pushed` that `push` writes once the base is up.

Usage: python hub_roundtrip_script.py {push|remote-code} OUT_DIR
"""

from __future__ import annotations

import contextlib
import importlib.abc
import io
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import hf_hub_download, snapshot_download
from safetensors.torch import save_file

BASE_NAME = "tiny-lavin"
ADAPTER_REPO = "tester/tiny-lavin-mma"
SCIENCEQA_SCORES = {"NAT": 91.5, "SOC": 88.25, "LAN": 80.0, "TXT": 87.0, "IMG": 86.5, "NO": 90.0, "Avg": 88.75}
SNIPPET_TOKENS = 8  # the cards' snippets generate this many tokens (64 by default): keeps the test fast
PROMPTS = ["Question: What colour is the square?\nResponse:", "Question: Is the sky blue?\nResponse:"]


def make_inputs(processor):
    """One row with an image, one text-only row: both routing paths."""
    image = np.random.default_rng(0).integers(0, 256, size=(30, 30, 3), dtype=np.uint8)
    return processor(images=[[image], []], text=PROMPTS, padding=True, return_tensors="pt")


def logits_of(model, processor) -> torch.Tensor:
    with torch.no_grad():
        return model(**make_inputs(processor)).logits.float().contiguous()


def card_snippet(repo_id: str) -> str:
    """The first python code block of a repo's README, as pushed."""
    readme = Path(hf_hub_download(repo_id, "README.md")).read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    if not blocks:
        raise AssertionError(f"the card of {repo_id} has no python usage snippet")
    return blocks[0]


def run_snippet(code: str) -> str:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        exec(compile(code, "<model card snippet>", "exec"), {"__name__": "__main__"})
    return stdout.getvalue()


def push_phase(out: Path) -> dict:
    # The package first, as its README imports it: it keeps Hub kernels off before PEFT imports bitsandbytes.
    from transformers_lavin import MMAConfig  # isort: skip

    from peft import PeftModel, get_peft_model
    from transformers import AutoModelForImageTextToText

    from transformers_lavin.hub import push_adapter_to_hub, push_model_to_hub
    from transformers_lavin.testing_utils import build_tiny_lavin

    model, processor = build_tiny_lavin(seed=0)
    model_commit = push_model_to_hub(model, processor, BASE_NAME, max_new_tokens=SNIPPET_TOKENS)
    base_repo = f"tester/{BASE_NAME}"
    (out / "base_pushed").touch()

    # The user's path: load the base from the Hub, adapt it, push the adapter.
    base = AutoModelForImageTextToText.from_pretrained(base_repo).eval()
    peft_model = get_peft_model(base, MMAConfig(dropout=0.0)).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in peft_model.parameters():
            if parameter.requires_grad:  # zero-initialised up-projections would make the adapter a no-op
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    adapter_commit = push_adapter_to_hub(
        peft_model, ADAPTER_REPO, processor=processor, scienceqa_scores=SCIENCEQA_SCORES, max_new_tokens=SNIPPET_TOKENS
    )

    fresh = out / "fresh"
    base_dir = snapshot_download(base_repo, cache_dir=fresh)
    adapter_dir = snapshot_download(ADAPTER_REPO, cache_dir=fresh)
    reloaded_base = AutoModelForImageTextToText.from_pretrained(base_dir).eval()
    reloaded = PeftModel.from_pretrained(reloaded_base, adapter_dir).eval()

    save_file(
        {
            "base_before_push": logits_of(model, processor),
            "adapter_before_push": logits_of(peft_model, processor),
            "adapter_after_download": logits_of(reloaded, processor),
        },
        str(out / "push_logits.safetensors"),
    )
    return {
        "model_commit": model_commit,
        "adapter_commit": adapter_commit,
        "base_files": sorted(p.name for p in Path(base_dir).iterdir()),
        "adapter_files": sorted(p.name for p in Path(adapter_dir).iterdir()),
        "snippet_output": run_snippet(card_snippet(ADAPTER_REPO)),
    }


class _BlockPackage(importlib.abc.MetaPathFinder):
    """Makes `import transformers_lavin` fail, as on a machine where the package is not installed."""

    def find_spec(self, name, path=None, target=None):
        if name == "transformers_lavin" or name.startswith("transformers_lavin."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None


def remote_code_phase(out: Path, wait_s: float = 300.0) -> dict:
    sys.meta_path.insert(0, _BlockPackage())
    from transformers import AutoModelForImageTextToText, AutoProcessor

    deadline = time.monotonic() + wait_s
    while not (out / "base_pushed").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the push phase never pushed the base model")
        time.sleep(0.1)
    base_repo = f"tester/{BASE_NAME}"
    snippet_output = run_snippet(card_snippet(base_repo))
    model = AutoModelForImageTextToText.from_pretrained(base_repo, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(base_repo, trust_remote_code=True)
    save_file({"remote_code_base": logits_of(model, processor)}, str(out / "remote_logits.safetensors"))
    return {
        "snippet_output": snippet_output,
        "model_class_module": type(model).__module__,
        "processor_class_module": type(processor).__module__,
        "package_importable": any(name.startswith("transformers_lavin") for name in sys.modules),
    }


if __name__ == "__main__":
    phase, out_dir = sys.argv[1], Path(sys.argv[2])
    result = push_phase(out_dir) if phase == "push" else remote_code_phase(out_dir)
    (out_dir / f"{phase}.json").write_text(json.dumps(result, indent=1))
