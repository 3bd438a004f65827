"""TensorRT build options as data, and their command-line flags (no tensorrt import)."""
from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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
            raise ValueError(f"--opt-level must be 0..5, got {self.opt_level}")
        if self.workspace_gib <= 0:
            raise ValueError(f"--workspace must be > 0 GiB, got {self.workspace_gib}")
        if self.hw_compat not in HW_COMPAT_LEVELS:
            raise ValueError(f"--hw-compat must be one of {HW_COMPAT_LEVELS}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def add_trt_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("TensorRT (--fmt trt)")
    g.add_argument("--workspace", type=float, default=4.0, metavar="GIB",
                   help="builder workspace memory pool in GiB (default: %(default)s)")
    g.add_argument("--opt-level", type=int, default=3, choices=range(6), metavar="0-5",
                   help="builder optimization level; higher builds slower, may run faster (default: %(default)s)")
    g.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=False,
                   help="allow TF32 in FP32 layers (default: off, so FP32 means FP32)")
    g.add_argument("--timing-cache", default=str(default_timing_cache()), metavar="PATH",
                   help="timing cache reused across builds; 'none' to disable (default: %(default)s)")
    g.add_argument("--hw-compat", choices=HW_COMPAT_LEVELS, default="none",
                   help="hardware compatibility level (TensorRT >= 8.6): ampere+ runs on any Ampere or newer GPU")
    g.add_argument("--version-compat", action="store_true",
                   help="version-compatible engine (runs on later TensorRT via the lean runtime)")
    g.add_argument("--min-hw", type=_hw, metavar="N|HxW",
                   help="with --dynamic-hw: smallest H/W of the engine profile (default: half the export size)")
    g.add_argument("--max-hw", type=_hw, metavar="N|HxW",
                   help="with --dynamic-hw: largest H/W of the engine profile (default: twice the export size)")
    g.add_argument("--weak-fp16", action="store_true",
                   help="TensorRT 8.6-10.x: build the FP32 ONNX with BuilderFlag.FP16 instead of the "
                        "strongly typed FP16 graph (not available on TensorRT 11)")


def trt_options_from_args(args: argparse.Namespace) -> TrtBuildOptions:
    cache = None if str(args.timing_cache).lower() == "none" else args.timing_cache
    return TrtBuildOptions(args.workspace, args.opt_level, args.tf32, cache, args.hw_compat,
                           args.version_compat, args.weak_fp16, args.min_hw, args.max_hw)


def _hw(text: str) -> tuple[int, int]:
    from twins_deploy.cli.common import hw_arg

    return hw_arg(text)
