"""Nothing reaches the network unless the user asks: no Hub kernels and no usage reports by default.

Two parts of the stack this package builds on contact the Hub without the user naming anything:
- Hub kernels. transformers (>= 5.25) installs the `kernels` package, and with it bitsandbytes, when it is imported
  (PEFT imports it), fetches `kernels-community/quantization-bitsandbytes` on CPUs with AVX512-BF16, and
  `from_pretrained` kernelizes models with Hub kernels by default (on CUDA: norms, activations, rotary embeddings).
  Both use their own code when no Hub kernel is loaded. Opt in with transformers' switch: `USE_HUB_KERNELS=YES`.
- Telemetry. TRL's trainers report every training run to the Hub, and huggingface_hub asks the Hub for its list of AI
  agents when it builds request headers. Opt in with huggingface_hub's switch: `HF_HUB_DISABLE_TELEMETRY=0`.
- Download counts. `datasets.load_dataset("json", data_files=...)` on local files sends a request to count a load of
  its packaged builder. Opt in with datasets' switch: `HF_UPDATE_DOWNLOAD_COUNTS=1`.
Set any of them before Python starts (docs/security.md). Hub ids and URLs the user names are not affected.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from huggingface_hub import constants as hub_constants
from transformers.utils import import_utils, is_env_variable_true

HUB_KERNELS_SWITCH = "USE_HUB_KERNELS"
TELEMETRY_SWITCH = "HF_HUB_DISABLE_TELEMETRY"
DOWNLOAD_COUNTS_SWITCH = "HF_UPDATE_DOWNLOAD_COUNTS"


def hub_kernels_requested() -> bool:
    """Whether the user asked for Hub kernels: `USE_HUB_KERNELS` set to a true value (1, yes, true, on)."""
    return is_env_variable_true(HUB_KERNELS_SWITCH)


def telemetry_requested() -> bool:
    """Whether the user allowed telemetry: `HF_HUB_DISABLE_TELEMETRY` set, to a value that is not true."""
    return TELEMETRY_SWITCH in os.environ and not is_env_variable_true(TELEMETRY_SWITCH)


def keep_hub_kernels_off() -> None:
    """Unless Hub kernels were requested, turn off transformers' Hub kernels and import bitsandbytes without them."""
    if hub_kernels_requested():
        return
    # transformers reads it at every `from_pretrained` and `kernelize`; child processes (launchers) inherit it.
    os.environ[HUB_KERNELS_SWITCH] = "NO"
    _import_bitsandbytes_without_hub_kernels()
    _no_flash_attention_kernel_probe()


def keep_telemetry_off() -> None:
    """Unless telemetry was allowed, turn off huggingface_hub's telemetry (TRL reports through it)."""
    if telemetry_requested():
        return
    os.environ[TELEMETRY_SWITCH] = "1"  # for child processes
    # huggingface_hub read the variable when it was imported (transformers imports it first): update what it read.
    hub_constants.HF_HUB_DISABLE_TELEMETRY = True


def keep_download_counts_off() -> None:
    """Unless the user set datasets' switch, datasets counts no loads (a request per `load_dataset`, local files too)."""
    if DOWNLOAD_COUNTS_SWITCH in os.environ:
        return
    os.environ[DOWNLOAD_COUNTS_SWITCH] = "0"  # read when datasets is imported; child processes inherit it
    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None:  # imported already: update what it read
        datasets_config.HF_UPDATE_DOWNLOAD_COUNTS = False


def _no_flash_attention_kernel_probe() -> None:
    """
    transformers' `is_flash_attn_*_available(kernels_fallback_ok=True)` (continuous batching, `transformers serve`,
    the testing utils) downloads a flash-attention kernel from the Hub to see whether one would load, whatever
    `USE_HUB_KERNELS` says. With Hub kernels off the answer is no: say so without asking the Hub.
    """
    import_utils.is_flash_attn_kernel_fallback_available = lambda fa_version: False


def _import_bitsandbytes_without_hub_kernels() -> None:
    """
    bitsandbytes reads no switch before its import-time fetch; it skips the fetch when `kernels` cannot be imported.
    Import it once with `kernels` hidden (a `None` entry in `sys.modules` makes the import fail); every later import
    of bitsandbytes, PEFT's included, reuses this module. Too late if bitsandbytes was imported first.
    """
    if "bitsandbytes" in sys.modules or importlib.util.find_spec("bitsandbytes") is None:
        return
    missing = object()
    kernels = sys.modules.get("kernels", missing)
    sys.modules["kernels"] = None
    try:
        import bitsandbytes  # noqa: F401
    finally:
        if kernels is missing:
            del sys.modules["kernels"]
        else:
            sys.modules["kernels"] = kernels


# Applied on import, which the package does before anything in it imports bitsandbytes, loads a model or trains.
keep_hub_kernels_off()
keep_telemetry_off()
keep_download_counts_off()

__all__ = [
    "DOWNLOAD_COUNTS_SWITCH",
    "HUB_KERNELS_SWITCH",
    "TELEMETRY_SWITCH",
    "hub_kernels_requested",
    "keep_download_counts_off",
    "keep_hub_kernels_off",
    "keep_telemetry_off",
    "telemetry_requested",
]
