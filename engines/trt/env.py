"""Finding TensorRT and the GPU, imported only when an engine is built or run.

``import twins_deploy`` never reaches this module's imports. Missing pieces become
:class:`BackendUnavailableError` with the command that installs them.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from twins_deploy.errors import BackendUnavailableError

INSTALL_HINT = (
    "install it with: pip install 'twins-deploy[trt]' (TensorRT's wheels come from NVIDIA's "
    "package index and need an NVIDIA GPU with a recent driver)"
)
# Full module first; the lean runtime runs version-compatible engines only. The bare
# bindings wheel (tensorrt-lean-cu12-bindings) names its module tensorrt_lean_bindings.
FULL_MODULES = ("tensorrt",)
LEAN_MODULES = ("tensorrt_lean", "tensorrt_lean_bindings")


def _try_import(name: str) -> ModuleType | None:
    try:
        mod = importlib.import_module(name)
    except ImportError:
        return None
    # A folder of .pyi stubs imports as an empty namespace package: not TensorRT.
    return mod if hasattr(mod, "Runtime") and hasattr(mod, "__version__") else None


def import_tensorrt(lean_ok: bool = False) -> ModuleType:
    """The TensorRT module (full, or with ``lean_ok`` the lean runtime), or a clear error."""
    for name in FULL_MODULES + (LEAN_MODULES if lean_ok else ()):
        mod = _try_import(name)
        if mod is not None:
            return mod
    raise BackendUnavailableError(f"TensorRT is not installed; {INSTALL_HINT}")


def has_builder(trt: ModuleType) -> bool:
    return hasattr(trt, "Builder") and hasattr(trt, "OnnxParser")


def trt_major(version: str) -> int:
    return int(str(version).split(".")[0])


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in str(version).split(".")[:3] if p.isdigit())


def gpu_info(device: int = 0, driver: int | None = None) -> dict[str, Any]:
    """Name and compute capability of ``device`` through cuda-python, or a clear error
    (``driver``: cudaDriverGetVersion's answer, when the caller has already asked)."""
    from twins_deploy.engines.trt.cuda import cuda_check, cudart

    rt = cudart()
    count = cuda_check(rt.cudaGetDeviceCount(), "cudaGetDeviceCount", missing_gpu=True)
    if count < 1:
        raise BackendUnavailableError("no CUDA GPU is visible (cudaGetDeviceCount returned 0)")
    props = cuda_check(rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    if driver is None:
        driver = cuda_check(rt.cudaDriverGetVersion(), "cudaDriverGetVersion")
    return {"name": name.strip("\x00 "), "compute_capability": f"{props.major}.{props.minor}",
            "sm": props.major * 10 + props.minor, "memory_gib": round(props.totalGlobalMem / 2**30, 1),
            "driver": f"{driver // 1000}.{driver % 1000 // 10}"}


@dataclass(frozen=True)
class BuildEnv:
    """TensorRT with its builder and the GPU to build on (both None when no engine is built);
    made by :func:`twins_deploy.engines.trt.preflight.checked_build_env`."""

    trt: ModuleType | None
    gpu: dict[str, Any] | None

    @property
    def version(self) -> str:
        return str(self.trt.__version__) if self.trt is not None else ""

    @property
    def major(self) -> int | None:
        return trt_major(self.version) if self.trt is not None else None
