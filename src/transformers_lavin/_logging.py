"""Log records of other libraries that this package keeps from its users' terminals (imported first)."""

from __future__ import annotations

import logging

_BITSANDBYTES_CPU_OPS = "bitsandbytes.backends.cpu.ops"


class _DropKernelsHubNotice(logging.Filter):
    """
    bitsandbytes (>= 0.50) tries to fetch a faster CPU 4-bit kernel from the Hub with the `kernels` package when it is
    imported, and logs a warning when it cannot (always, offline or without `kernels`). PEFT imports bitsandbytes, so
    every command printed it. bitsandbytes then uses its own CPU kernel, so 4-bit still works: the notice is noise.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "kernels-community" not in record.getMessage()


# Installed on import, which the package does before anything imports bitsandbytes.
logging.getLogger(_BITSANDBYTES_CPU_OPS).addFilter(_DropKernelsHubNotice())
