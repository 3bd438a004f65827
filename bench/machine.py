"""Facts about the machine a measurement ran on (recorded with every result)."""
from __future__ import annotations

import os
import platform
from typing import Any


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU, cores, and (when torch sees one) the GPU, its compute capability and driver."""
    info: dict[str, Any] = {"cpu": cpu_name(), "cores": os.cpu_count(), "platform": platform.platform(),
                            "gpu": None}
    try:
        import torch

        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            info["gpu"] = {"name": p.name, "compute_capability": f"{p.major}.{p.minor}",
                           "memory_gib": round(p.total_memory / 2**30, 1), "cuda": torch.version.cuda}
    except ImportError:
        pass
    return info
