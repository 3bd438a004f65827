"""ONNX -> serialized TensorRT engine, one code path for TensorRT 8.6, 10.x and 11.x.

Branches on the installed major version only where the API differs (TensorRT's
10.x -> 11.x migration guide and the Python bindings of each release):

* below 10: the ONNX parser needs ``EXPLICIT_BATCH``; 8.x has no strong typing, so FP16
  means the FP32 graph plus ``BuilderFlag.FP16`` (the "weak" route);
* 9.x/10.x: FP16 comes from the mixed FP16 ONNX built as a ``STRONGLY_TYPED`` network (the
  "strong" route); the weak flag stays available on request (``--weak-fp16``);
* 11.x: every network is strongly typed and ``BuilderFlag.FP16``/``EXPLICIT_BATCH`` are
  gone, so the strong route is built with no precision flags at all.

Which route a precision takes is decided once, in :mod:`twins_deploy.precision`.

TF32 is cleared unless asked for: an FP32 engine computes in FP32.

Conformance convention: TensorRT objects live in variables named ``builder``,
``network``, ``parser``, ``config``, ``profile``, ``cache``, ``plan`` and ``err``; the
test suite checks every attribute used on them against TensorRT's API descriptions.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from twins_deploy.artifacts import write_bytes_atomic
from twins_deploy.engines.trt.env import import_tensorrt, trt_major
from twins_deploy.engines.trt.options import TrtBuildOptions
from twins_deploy.engines.trt.profile import Profile
from twins_deploy.errors import BackendUnavailableError, ExportError
from twins_deploy.precision import ROUTES

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _make_logger(trt: ModuleType) -> Any:
    """A logger that prints warnings and keeps errors, so failures can quote them."""

    class _Logger(trt.ILogger):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.warnings: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.Logger.INTERNAL_ERROR, trt.Logger.ERROR):
                self.errors.append(msg)
            elif severity == trt.Logger.WARNING:
                self.warnings.append(msg)

    return _Logger()


def parser_errors(parser: Any) -> list[str]:
    """Each parser error as ``node <name> (<op>): <message>``."""
    out = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        try:
            out.append(f"node {err.node_name() or err.node()} ({err.node_operator() or '?'}): {err.desc()}")
        except AttributeError:  # older parsers lack node_name/node_operator
            out.append(str(err))
    return out


def build_engine(onnx_path: str | os.PathLike[str], shapes: Profile, opts: TrtBuildOptions,
                 route: str) -> tuple[bytes, BuildInfo]:
    """Parse ``onnx_path`` and build a serialized engine (a plain plan, no header)."""
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}")
    trt = import_tensorrt()
    major = trt_major(trt.__version__)
    log = _make_logger(trt)
    info = BuildInfo(trt.__version__, route, [], [])

    builder = trt.Builder(log)
    flags = 0
    if major < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        info.network_flags.append("EXPLICIT_BATCH")
    if route == "strong" and major < 11:  # 11 is strongly typed only; the flag is ignored there
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        info.network_flags.append("STRONGLY_TYPED")
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, log)
    if not parser.parse_from_file(str(onnx_path)):
        raise ExportError(f"TensorRT {trt.__version__} cannot parse {Path(onnx_path).name}:\n  "
                          + "\n  ".join(parser_errors(parser) or log.errors or ["(no parser message)"]))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_gib * 2**30))
    config.builder_optimization_level = opts.opt_level
    if opts.tf32:
        config.set_flag(trt.BuilderFlag.TF32)
        info.builder_flags.append("TF32")
    else:
        config.clear_flag(trt.BuilderFlag.TF32)
    if route == "weak":
        config.set_flag(trt.BuilderFlag.FP16)
        info.builder_flags.append("FP16")
    if opts.hw_compat != "none":
        level = {"ampere+": "AMPERE_PLUS", "same-cc": "SAME_COMPUTE_CAPABILITY"}[opts.hw_compat]
        if not hasattr(trt.HardwareCompatibilityLevel, level):
            raise BackendUnavailableError(f"TensorRT {trt.__version__} has no hardware compatibility level {level}")
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, level)
    if opts.version_compat:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        info.builder_flags.append("VERSION_COMPATIBLE")

    profile = builder.create_optimization_profile()
    profile.set_shape(shapes.input, shapes.min, shapes.opt, shapes.max)
    config.add_optimization_profile(profile)

    cache_path = Path(opts.timing_cache) if opts.timing_cache else None
    if cache_path is not None:
        blob = cache_path.read_bytes() if cache_path.is_file() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=True)
        info.timing_cache, info.timing_cache_loaded = str(cache_path), bool(blob)

    t0 = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    info.build_seconds = round(time.perf_counter() - t0, 1)
    if plan is None:
        raise ExportError(f"TensorRT {trt.__version__} failed to build the engine:\n  "
                          + "\n  ".join(log.errors or ["(no error in the TensorRT log)"]))
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache = config.get_timing_cache()
        write_bytes_atomic(cache_path, memoryview(cache.serialize()))
    info.warnings = log.warnings[-20:]
    return bytes(memoryview(plan)), info
