"""ONNX -> serialized TensorRT engine through Polygraphy's loaders, for TensorRT 8.6, 10.x, 11.x.

Polygraphy (NVIDIA's, kept in step with each TensorRT release) owns the TensorRT calls:
``NetworkFromOnnxPath`` creates the network (``EXPLICIT_BATCH`` below 10, ``STRONGLY_TYPED``
on request) and parses the ONNX file, ``CreateConfig`` sets flags, memory pool, profile,
optimization level, compatibility and the timing cache, ``EngineBytesFromNetwork`` builds
the plan and merges the timing cache back to disk. The loaders are lazy: building the
chain (:func:`engine_loader`) imports no TensorRT, so its arguments are checked on CPU.
What stays ours: the precision route (decided once, in :mod:`twins_deploy.precision`),
the manifest facts (:class:`BuildInfo`), compatibility checks and the trtexec line.

Per route, as NVIDIA's docs and bindings have it:

* ``fp32``: the FP32 graph, no precision flag; TF32 cleared unless asked for;
* ``strong``: the mixed FP16 graph as a strongly typed network. 9.x and 10.x need the
  ``STRONGLY_TYPED`` creation flag; 11.x is strongly typed only and deprecates the flag
  (pyCore.cpp, NVIDIA/TensorRT v11.1: "Deprecated: always enabled"), so none is set;
* ``weak``: the FP32 graph plus ``BuilderFlag.FP16`` (8.6-10.x; removed in 11.0).
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from twins_deploy.engines.trt.env import import_tensorrt, trt_major
from twins_deploy.engines.trt.options import TrtBuildOptions, timing_cache_path
from twins_deploy.engines.trt.profile import Profile
from twins_deploy.errors import BackendUnavailableError, ExportError
from twins_deploy.precision import PrecisionPlan

HW_LEVELS = {"ampere+": "AMPERE_PLUS", "same-cc": "SAME_COMPUTE_CAPABILITY"}


@dataclass
class BuildInfo:
    trt_version: str
    route: str
    network_flags: list[str]
    builder_flags: list[str]
    build_seconds: float = 0.0
    timing_cache: str | None = None
    timing_cache_loaded: bool = False
    warnings: list[str] = field(default_factory=list)
    builder: str = "polygraphy"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _polygraphy() -> ModuleType:
    try:
        import polygraphy.backend.trt as pg_trt
    except ImportError:
        raise BackendUnavailableError(
            "Polygraphy is not installed (it builds the TensorRT engines); "
            "install it with: pip install 'twins-deploy[trt]' or pip install polygraphy") from None
    return pg_trt


def engine_loader(onnx_path: str | os.PathLike[str], shapes: Profile, opts: TrtBuildOptions, plan: PrecisionPlan,
                  trt: Any, cache_path: Path | None) -> tuple[Callable[[], bytes], BuildInfo]:
    """The lazy Polygraphy chain that builds the plan, and what the manifest will say
    about it. Nothing is imported from TensorRT here beyond the enum values in ``trt``."""
    pg = _polygraphy()
    major = trt_major(trt.__version__)
    strongly_typed = plan.strongly_typed_network(major)  # refuses weak typing on 11
    fp16_flag = plan.builder_fp16_flag
    info = BuildInfo(trt.__version__, plan.route, [], [])
    if major < 10:
        info.network_flags.append("EXPLICIT_BATCH")  # Polygraphy sets it below 10.0
    if strongly_typed:
        info.network_flags.append("STRONGLY_TYPED")
    network = pg.NetworkFromOnnxPath(str(onnx_path), strongly_typed=strongly_typed)

    profile = pg.Profile().add(shapes.input, min=shapes.min, opt=shapes.opt, max=shapes.max)
    hw = None
    if opts.hw_compat != "none":
        hw = getattr(trt.HardwareCompatibilityLevel, HW_LEVELS[opts.hw_compat], None)
        if hw is None:
            raise BackendUnavailableError(f"TensorRT {trt.__version__} has no hardware compatibility level "
                                          f"{HW_LEVELS[opts.hw_compat]}")
    info.builder_flags += (["TF32"] if opts.tf32 else []) + (["FP16"] if fp16_flag else []) + (
        ["VERSION_COMPATIBLE"] if opts.version_compat else [])
    config = pg.CreateConfig(
        tf32=opts.tf32,
        fp16=fp16_flag,
        profiles=[profile],
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: int(opts.workspace_gib * 2**30)},
        builder_optimization_level=opts.opt_level,
        hardware_compatibility_level=hw,
        version_compatible=opts.version_compat or None,
        load_timing_cache=str(cache_path) if cache_path is not None else None,
    )
    if cache_path is not None:
        info.timing_cache, info.timing_cache_loaded = str(cache_path), cache_path.is_file()
    build = pg.EngineBytesFromNetwork(network, config=config,
                                      save_timing_cache=str(cache_path) if cache_path is not None else None)
    return build, info


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        (self.errors if record.levelno >= logging.ERROR else self.warnings).append(record.getMessage())


@contextlib.contextmanager
def _polygraphy_log() -> Iterator[_Collect]:
    """Route Polygraphy's (and through it TensorRT's) messages into Python logging for the
    build: warnings and errors are kept for the manifest and the error message, nothing
    else is printed between our progress lines."""
    from polygraphy.logger import G_LOGGER

    handler = _Collect()
    logger = logging.getLogger("Polygraphy")
    old = (G_LOGGER.use_python_logging_system, G_LOGGER.module_severity, logger.propagate, logger.level)
    G_LOGGER.use_python_logging_system = True
    G_LOGGER.module_severity = G_LOGGER.WARNING
    logger.addHandler(handler)
    logger.propagate, logger.level = False, logging.WARNING
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        G_LOGGER.use_python_logging_system, G_LOGGER.module_severity = old[0], old[1]
        logger.propagate, logger.level = old[2], old[3]


def build_engine(onnx_path: str | os.PathLike[str], shapes: Profile, opts: TrtBuildOptions,
                 plan: PrecisionPlan, gpu: dict[str, Any] | None = None) -> tuple[bytes, BuildInfo]:
    """Parse ``onnx_path`` and build a serialized engine (a plain plan, no header)."""
    _polygraphy()  # a clear BackendUnavailableError when Polygraphy is missing
    from polygraphy.exception import PolygraphyException

    trt = import_tensorrt()
    cache_path = timing_cache_path(opts, trt.__version__, gpu)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with _polygraphy_log() as log:
        build, info = engine_loader(onnx_path, shapes, opts, plan, trt, cache_path)
        try:
            plan = build()
        except PolygraphyException as e:
            details = [m for m in log.errors if m.strip() != str(e).strip()]
            raise ExportError(f"TensorRT {trt.__version__} could not build {Path(onnx_path).name}: {e}"
                              + "".join(f"\n  {m}" for m in details[-10:])) from None
    info.build_seconds = round(time.perf_counter() - t0, 1)
    info.warnings = log.warnings[-20:]
    return bytes(memoryview(plan)), info
