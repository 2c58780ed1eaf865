"""Importing the package turns off what would reach the network unasked: Hub kernels (`USE_HUB_KERNELS=YES` opts in)
and telemetry (`HF_HUB_DISABLE_TELEMETRY=0` opts in).

transformers 5.25 installs `kernels`, with which bitsandbytes asks the Hub for a CPU kernel when it is imported and
`from_pretrained` kernelizes models by default; TRL's trainers report each run through huggingface_hub's telemetry.
These tests run the imports in fresh interpreters where every socket connection and name lookup raises and is
counted, so a request a library swallows is still seen.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForImageTextToText

from transformers_lavin.offline import DOWNLOAD_COUNTS_SWITCH, HUB_KERNELS_SWITCH, TELEMETRY_SWITCH
from transformers_lavin.testing_utils import build_tiny_lavin

# Every connection and name lookup raises (as offline) and is recorded, whatever the host: loopback included.
SOCKETS_REFUSED = """
import json, socket, sys
attempts = []
def refuse(*args, **kwargs):
    attempts.append(repr(args[1:2] or args[:1]))
    raise OSError("socket use refused by the test")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.getaddrinfo = lambda *args, **kwargs: refuse(None, *args)
"""

IMPORT_WITH_SOCKETS_REFUSED = (
    SOCKETS_REFUSED
    + """
for name in sys.argv[1:]:
    __import__(name)
# A report as TRL's trainers send one; it goes out on a thread: wait for it.
from huggingface_hub.utils import _telemetry, send_telemetry
send_telemetry("trl/SFTTrainer", library_name="trl", library_version="1.16.0")
_telemetry._TELEMETRY_QUEUE.join()
from transformers_lavin.offline import hub_kernels_requested
print(json.dumps({"attempts": attempts, "requested": hub_kernels_requested(),
                  "switch": __import__("os").environ.get("USE_HUB_KERNELS")}))
"""
)


def _import_with_sockets_refused(modules: list[str], **env: str) -> dict:
    switches = (HUB_KERNELS_SWITCH, TELEMETRY_SWITCH, "HF_HUB_OFFLINE", "DO_NOT_TRACK", "DISABLE_TELEMETRY", "CI")
    environment = {k: v for k, v in os.environ.items() if k not in switches}
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_WITH_SOCKETS_REFUSED, *modules],
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _bitsandbytes_asks_the_hub() -> bool:
    """With `kernels` installed, bitsandbytes asks the Hub for its CPU kernel on CPUs with AVX512-BF16."""
    if importlib.util.find_spec("kernels") is None or importlib.util.find_spec("bitsandbytes") is None:
        return False
    from bitsandbytes.functional import has_avx512bf16

    return has_avx512bf16()


def test_importing_the_package_peft_and_bitsandbytes_opens_no_socket():
    imported = _import_with_sockets_refused(["transformers_lavin", "peft", "bitsandbytes"])
    assert imported["attempts"] == []
    assert imported["requested"] is False and imported["switch"] == "NO"


def test_telemetry_is_sent_when_the_user_allows_it():
    imported = _import_with_sockets_refused(["transformers_lavin"], HF_HUB_DISABLE_TELEMETRY="0")
    assert any("huggingface.co" in attempt for attempt in imported["attempts"])  # the report was tried, and refused


def test_hub_kernels_are_used_when_the_user_asks():
    if not _bitsandbytes_asks_the_hub():
        pytest.skip("this machine's bitsandbytes asks the Hub for nothing (no `kernels`, or no AVX512-BF16)")
    imported = _import_with_sockets_refused(["transformers_lavin", "peft", "bitsandbytes"], USE_HUB_KERNELS="yes")
    # The opt-in is left to the libraries: bitsandbytes asked the Hub (and fell back when refused).
    assert imported["attempts"] and imported["requested"] is True and imported["switch"] == "yes"


def test_from_pretrained_does_not_kernelize_unless_asked(tmp_path):
    model, _ = build_tiny_lavin(seed=0)
    model.save_pretrained(tmp_path)
    assert os.environ[HUB_KERNELS_SWITCH] == "NO"  # set when the package was imported
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path, dtype=torch.float32)
    assert loaded.use_kernels is False


def test_bitsandbytes_was_imported_without_a_hub_kernel():
    bnb = pytest.importorskip("bitsandbytes", reason="the quant extra is not installed")
    from bitsandbytes.backends.cpu import ops

    assert "bitsandbytes" in sys.modules and bnb.__name__ == "bitsandbytes"
    # Set only on CPUs where bitsandbytes tries the Hub; None means its own CPU kernel serves 4-bit bf16 matmuls.
    assert getattr(ops, "gemm_4bit_forward_kernel", None) is None
    assert sys.modules.get("kernels", "absent") is not None  # `kernels` was hidden only for that import


LOAD_LOCAL_JSONL_WITH_SOCKETS_REFUSED = (
    SOCKETS_REFUSED
    + """
import transformers_lavin, datasets
rows = datasets.load_dataset("json", data_files=sys.argv[1], split="train", cache_dir=sys.argv[2])
print(json.dumps({"attempts": attempts, "rows": len(rows)}))
"""
)


@pytest.mark.parametrize("allowed", [False, True], ids=["default", "user-allowed"])
def test_loading_a_local_jsonl_counts_no_load_unless_the_user_allows_it(tmp_path, allowed):
    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "a"}\n{"text": "b"}\n')
    environment = {k: v for k, v in os.environ.items() if k not in (DOWNLOAD_COUNTS_SWITCH, "HF_HUB_OFFLINE")}
    if allowed:
        environment[DOWNLOAD_COUNTS_SWITCH] = "1"
    result = subprocess.run(
        [sys.executable, "-c", LOAD_LOCAL_JSONL_WITH_SOCKETS_REFUSED, str(data), str(tmp_path / "cache")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["rows"] == 2
    # datasets' packaged "json" builder asks to count the load (and goes on when refused) only when allowed.
    assert bool(loaded["attempts"]) is allowed, loaded["attempts"]


def test_flash_attention_availability_asks_no_hub_kernel():
    from transformers.utils import import_utils

    # Without the package's switch this asks the Hub for a kernel when `kernels` is installed (transformers 5.25).
    assert import_utils.is_flash_attn_kernel_fallback_available(2) is False
    assert import_utils.is_flash_attn_2_available.__wrapped__(kernels_fallback_ok=True) is (
        importlib.util.find_spec("flash_attn") is not None
    )
