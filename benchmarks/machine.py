"""A description of the machine and software a result was measured on."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

import torch

# Dense bf16 tensor-core peaks (no sparsity), for utilisation; override with --peak_tflops.
PEAK_BF16_TFLOPS = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _cpu_flags() -> list[str]:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return []
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "fma"})
    return []


def _total_memory_gib() -> float | None:
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def peak_bf16_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a known GPU, by name; `None` when unknown."""
    for key, value in PEAK_BF16_TFLOPS.items():  # most specific names first
        if key in device_name:
            return value
    return None


def describe_machine(device: str | torch.device = "cpu") -> dict:
    """CPU, memory, accelerator and library versions, for the results files."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    description = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cpu_count": os.cpu_count(),
        "cpus_available": affinity,
        "torch_threads": torch.get_num_threads(),
        "memory_gib": _total_memory_gib(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "peft": _version("peft"),
        "bitsandbytes": _version("bitsandbytes"),
        "device": str(device),
    }
    if torch.device(device).type == "cuda":
        properties = torch.cuda.get_device_properties(torch.device(device))
        description |= {
            "gpu": properties.name,
            "gpu_memory_gib": round(properties.total_memory / 2**30, 1),
            "gpu_capability": f"{properties.major}.{properties.minor}",
            "cuda": torch.version.cuda,
            "gpu_peak_bf16_tflops": peak_bf16_tflops(properties.name),
        }
    return description
