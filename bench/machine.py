"""Facts about the machine a measurement ran on (recorded with every result)."""
from __future__ import annotations

import os
import platform
from typing import Any

import torch

# The instruction-set flags that decide CPU inference speed (and whether native BF16 exists).
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")
# the instructions that make INT8 dot products fast (VPDPBUSD and AMX); without them ONNX
# Runtime and OpenVINO still run INT8, slower, and U8S8 products may saturate (ORT's docs)
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


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


def int8_cpu_warning(flags: list[str] | None = None) -> str | None:
    """A warning when this CPU lacks VNNI/AMX INT8 instructions (``flags``: the CPU's, by
    default read here): INT8 runs, but slower than on a CPU that has them. None otherwise,
    and where the flags cannot be read."""
    flags = cpu_flags() if flags is None else flags
    if not flags or any(f in flags for f in INT8_DOT_FLAGS):
        return None
    return (f"warning: this CPU has none of {', '.join(INT8_DOT_FLAGS)}: the INT8 routes run, but slower than on a "
            "CPU with VNNI (measure before deploying INT8 here)")


def machine_info() -> dict[str, Any]:
    """CPU, its flags, cores, and (when torch sees one) the GPU, its compute capability and driver."""
    info: dict[str, Any] = {"cpu": cpu_name(), "cores": os.cpu_count(), "cpu_flags": cpu_flags(),
                            "platform": platform.platform(), "gpu": None}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": p.name, "compute_capability": f"{p.major}.{p.minor}",
                       "memory_gib": round(p.total_memory / 2**30, 1), "cuda": torch.version.cuda}
    return info
