"""Hub kernels stay off unless the user asks for them, so importing the package or running a command reaches no network.

transformers (>= 5.25) installs the `kernels` package, and with it two libraries fetch code from the Hub that nobody
named: bitsandbytes, when it is imported (PEFT imports it), asks for `kernels-community/quantization-bitsandbytes` on
CPUs with AVX512-BF16, and `from_pretrained` kernelizes models with Hub kernels by default (on CUDA: norms,
activations, rotary embeddings). Both use their own code when no Hub kernel is loaded. Users opt in with transformers'
own switch, `USE_HUB_KERNELS=YES`, set before Python starts (docs/security.md).
"""

from __future__ import annotations

import importlib.util
import os
import sys

from transformers.utils import is_env_variable_true

HUB_KERNELS_SWITCH = "USE_HUB_KERNELS"


def hub_kernels_requested() -> bool:
    """Whether the user asked for Hub kernels: `USE_HUB_KERNELS` set to a true value (1, yes, true, on)."""
    return is_env_variable_true(HUB_KERNELS_SWITCH)


def keep_hub_kernels_off() -> None:
    """
    Unless Hub kernels were requested, turn off transformers' Hub kernels and import bitsandbytes without them.
    """
    if hub_kernels_requested():
        return
    # transformers reads it at every `from_pretrained` and `kernelize`; child processes (launchers) inherit it.
    os.environ[HUB_KERNELS_SWITCH] = "NO"
    _import_bitsandbytes_without_hub_kernels()


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


# Applied on import, which the package does before anything in it imports bitsandbytes or loads a model.
keep_hub_kernels_off()

__all__ = ["HUB_KERNELS_SWITCH", "hub_kernels_requested", "keep_hub_kernels_off"]
