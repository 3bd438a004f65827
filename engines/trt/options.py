"""TensorRT build options as data (no tensorrt import, no argparse: the CLI fills them)."""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from twins_deploy.errors import OptionError

HW_COMPAT_LEVELS = ("none", "ampere+", "same-cc")


def default_timing_cache() -> Path:
    """Shared across builds: ``$XDG_CACHE_HOME/twins-deploy/trt-timing.cache``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "twins-deploy" / "trt-timing.cache"


@dataclass(frozen=True)
class TrtBuildOptions:
    workspace_gib: float = 4.0
    opt_level: int = 3
    tf32: bool = False          # off: an FP32 engine computes in FP32
    timing_cache: str | None = str(default_timing_cache())
    hw_compat: str = "none"
    version_compat: bool = False
    weak_fp16: bool = False     # TensorRT 8.6-10.x only, never the only route
    min_hw: tuple[int, int] | None = None  # --dynamic-hw profile; default half the export size
    max_hw: tuple[int, int] | None = None  # default twice the export size

    def __post_init__(self) -> None:
        if not 0 <= self.opt_level <= 5:
            raise OptionError(f"--opt-level must be 0..5, got {self.opt_level}")
        if not (math.isfinite(self.workspace_gib) and self.workspace_gib > 0):
            raise OptionError(f"--workspace must be > 0 GiB, got {self.workspace_gib}")
        if self.hw_compat not in HW_COMPAT_LEVELS:
            raise OptionError(f"--hw-compat must be one of {', '.join(HW_COMPAT_LEVELS)}, got {self.hw_compat!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
