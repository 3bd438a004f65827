"""TensorRT build options as data (no tensorrt import, no argparse: the CLI fills them)."""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from twins_deploy.artifacts import path_kind
from twins_deploy.errors import OptionError, quoted

HW_COMPAT_LEVELS = ("none", "ampere+", "same-cc")


DEFAULT_TIMING_CACHE = "auto"


def timing_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/twins-deploy`` (``~/.cache/twins-deploy``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "twins-deploy"


def timing_cache_path(opts: TrtBuildOptions, trt_version: str, gpu: dict[str, Any] | None = None) -> Path | None:
    """Where a build reads and merges its timing cache: ``None`` (disabled), the user's
    path, or by default one file per TensorRT version and GPU architecture. A timing cache
    is only valid for the TensorRT version and device it was measured on, and TensorRT
    rejects (or with ``ignore_mismatch`` silently drops) a foreign one, so sharing one file
    across versions would throw the cache away at every switch."""
    if opts.timing_cache is None:
        return None
    if opts.timing_cache != DEFAULT_TIMING_CACHE:
        return Path(opts.timing_cache)
    sm = f"-sm{gpu['sm']}" if gpu and gpu.get("sm") else ""
    return timing_cache_dir() / f"trt-{trt_version}{sm}.timing-cache"


def check_cache_file(path: Path) -> None:
    """A timing cache the build can read and write: not a folder, and every existing folder
    above it a folder (the build creates the missing ones), checked before the ONNX stage."""
    kind = path_kind(path)
    if kind not in ("a file", "missing", "a path through a file"):  # a FIFO would block the build's read
        raise OptionError(f"--timing-cache {quoted(str(path))} is {kind}; give a file path (or 'none')")
    for parent in path.parents:
        parent_kind = path_kind(parent)
        if parent_kind != "missing":
            if parent_kind != "a folder":
                raise OptionError(f"--timing-cache {quoted(str(path))}: {quoted(str(parent))} is {parent_kind}, "
                                  "not a folder")
            break


@dataclass(frozen=True)
class TrtBuildOptions:
    workspace_gib: float = 4.0
    opt_level: int = 3
    tf32: bool = False          # off: an FP32 engine computes in FP32
    timing_cache: str | None = DEFAULT_TIMING_CACHE  # "auto": per TensorRT version and GPU; None: off
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
            raise OptionError(f"--hw-compat must be one of {', '.join(HW_COMPAT_LEVELS)}, got {quoted(self.hw_compat)}")
        if self.timing_cache not in (None, DEFAULT_TIMING_CACHE):
            check_cache_file(Path(self.timing_cache))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
