"""Peak memory of one measurement: CUDA allocator statistics on a GPU, the process's resident set on a CPU.

On CPU, torch tensors are invisible to `tracemalloc`, so we read the kernel's numbers from `/proc/self/status`:
`VmRSS` (resident now) and `VmHWM` (the high-water mark), which writing `5` to `/proc/self/clear_refs` resets. Each
measurement runs in its own child process (see `child.py`), so the other model's memory and the allocator's cached
blocks from earlier work never count. The numbers therefore include everything resident in the process: weights,
activations, gradients, optimizer states and allocator slack, plus the interpreter and libraries, which we subtract
as the `baseline` taken before the model is built.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_bytes(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"{field} not found in {_STATUS}.")


class MemoryMeter:
    """
    Current and peak memory of this process on `device`.

    Args:
        device: `cpu` (resident set size, Linux only) or `cuda` (`torch.cuda.memory_allocated`).
    """

    def __init__(self, device: str | torch.device):
        self.cuda = torch.device(device).type == "cuda"
        if not self.cuda and not _CLEAR_REFS.exists():
            raise RuntimeError(
                "CPU peak memory needs Linux's /proc/self/clear_refs (resettable high-water mark); run on Linux or "
                "skip the memory measurement."
            )
        self.kind = "cuda_max_memory_allocated" if self.cuda else "process_peak_rss"

    def current(self) -> int:
        """Bytes in use now."""
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.memory_allocated()
        return _status_bytes("VmRSS")

    def reset_peak(self) -> None:
        """Start a new high-water mark from the current usage."""
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            _CLEAR_REFS.write_text("5")

    def peak(self) -> int:
        """Highest usage since the last `reset_peak`."""
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated()
        return _status_bytes("VmHWM")


def lifetime_peak_rss() -> int:
    """Peak resident set of this process over its whole life, in bytes (`ru_maxrss`)."""
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, kB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def mib(value: float) -> float:
    return value / 2**20
