"""Facts about the machine a measurement ran on (recorded with every result)."""
from __future__ import annotations

import os
import platform
from typing import Any

import torch

# The instruction-set flags that decide CPU inference speed (and whether native BF16 exists).
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


def _cpuinfo_field(name: str) -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """Which of :data:`CPU_FLAGS` this CPU has (empty where /proc/cpuinfo is not readable)."""
    flags = (_cpuinfo_field("flags") or "").split()
    return [f for f in CPU_FLAGS if f in flags]


def machine_info() -> dict[str, Any]:
    """CPU, its flags, cores, and (when torch sees one) the GPU, its compute capability and driver."""
    info: dict[str, Any] = {"cpu": cpu_name(), "cores": os.cpu_count(), "cpu_flags": cpu_flags(),
                            "platform": platform.platform(), "gpu": None}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": p.name, "compute_capability": f"{p.major}.{p.minor}",
                       "memory_gib": round(p.total_memory / 2**30, 1), "cuda": torch.version.cuda}
    return info
