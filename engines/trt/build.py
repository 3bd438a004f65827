"""ONNX -> serialized TensorRT engine through Polygraphy's loaders, for TensorRT 8.6, 10.x, 11.x.

Polygraphy (NVIDIA's, kept in step with each TensorRT release) owns the TensorRT calls:
``NetworkFromOnnxPath`` creates the network (``EXPLICIT_BATCH`` below 10, ``STRONGLY_TYPED``
on request) and parses the ONNX file, ``CreateConfig`` sets flags, memory pool, profile,
optimization level, compatibility and an empty timing cache (we load the saved one, to
know whether TensorRT took it: :func:`_timing_cache`), ``EngineBytesFromNetwork`` builds
the plan and merges the timing cache back to disk. The loaders are lazy: building the
chain (:func:`engine_loader`) imports no TensorRT, so its arguments are checked on CPU.
What stays ours: the precision route (decided once, in :mod:`twins_deploy.precision`),
the manifest facts (:class:`BuildInfo`), compatibility checks and the trtexec line.

Per route, as NVIDIA's docs and bindings have it:

* ``fp32``: the FP32 graph, no precision flag; TF32 cleared unless asked for;
* ``strong``: the mixed FP16 graph as a strongly typed network. 9.x and 10.x need the
  ``STRONGLY_TYPED`` creation flag; 11.x is strongly typed only and deprecates the flag
  (pyCore.cpp, NVIDIA/TensorRT v11.1: "Deprecated: always enabled"), so none is set;
* ``weak``: the FP32 graph plus ``BuilderFlag.FP16`` (8.6-10.x; removed in 11.0);
* ``qdq``: the INT8 graph with explicit Q/DQ. 8.x: ``BuilderFlag.INT8`` and ``FP16``
  (Polygraphy's ``CreateConfig(int8=True)`` sets the flag and, the network having Q/DQ
  layers, runs no calibrator); 9.x/10.x: strongly typed, no flag; 11.x: no flag. No
  calibrator is ever given to TensorRT (implicit INT8 is deprecated in 10.1, gone in 11).
  TensorRT takes a network as explicitly quantized only when it has Q/DQ layers, so the
  parsed network is checked for them (:func:`_explicit_int8`): a graph without any would
  build silently as implicit INT8 with no scales (8.x: "Calibrator is not being used") or
  as a plain FP32/FP16 engine (9+), never as what the manifest says.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
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
    flags = plan.builder_flags(major)
    info = BuildInfo(trt.__version__, plan.route, [], [])
    if major < 10:
        info.network_flags.append("EXPLICIT_BATCH")  # Polygraphy sets it below 10.0
    if strongly_typed:
        info.network_flags.append("STRONGLY_TYPED")
    network = pg.NetworkFromOnnxPath(str(onnx_path), strongly_typed=strongly_typed)
    if plan.route == "qdq":
        network = _explicit_int8(network, trt, Path(onnx_path).name)

    profile = pg.Profile().add(shapes.input, min=shapes.min, opt=shapes.opt, max=shapes.max)
    hw = None
    if opts.hw_compat != "none":
        hw = getattr(trt.HardwareCompatibilityLevel, HW_LEVELS[opts.hw_compat], None)
        if hw is None:
            raise BackendUnavailableError(f"TensorRT {trt.__version__} has no hardware compatibility level "
                                          f"{HW_LEVELS[opts.hw_compat]}")
    info.builder_flags += (["TF32"] if opts.tf32 else []) + list(flags) + (
        ["VERSION_COMPATIBLE"] if opts.version_compat else [])
    config = pg.CreateConfig(
        tf32=opts.tf32,
        fp16="FP16" in flags,
        int8="INT8" in flags,  # a Q/DQ network: Polygraphy sets the flag and calibrates nothing
        profiles=[profile],
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: int(opts.workspace_gib * 2**30)},
        builder_optimization_level=opts.opt_level,
        hardware_compatibility_level=hw,
        version_compatible=opts.version_compat or None,
        # no load_timing_cache: Polygraphy would fall back to an empty cache when TensorRT
        # cannot read the file, and ignore set_timing_cache's refusal, without a word;
        # _timing_cache loads it and records what TensorRT said (CreateConfig still sets
        # an empty cache first, which the build fills and EngineBytesFromNetwork saves)
    )
    if cache_path is not None:
        info.timing_cache = str(cache_path)
        config = _timing_cache(config, cache_path, info)
    build = pg.EngineBytesFromNetwork(network, config=config,
                                      save_timing_cache=str(cache_path) if cache_path is not None else None)
    return build, info


def _explicit_int8(load_network: Callable[[], Any], trt: Any, onnx_name: str) -> Callable[[], Any]:
    """``load_network`` followed by the check that the parsed network is explicitly quantized:
    it has QuantizeLinear/DequantizeLinear layers (Polygraphy's ``CreateConfig`` and TensorRT
    decide between explicit and implicit INT8 the same way)."""

    def load() -> Any:
        loaded = load_network()
        network = loaded[1]
        qdq = (trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE)
        if not any(layer.type in qdq for layer in network):
            raise ExportError(f"{onnx_name} has no QuantizeLinear/DequantizeLinear layers: it is not an INT8 Q/DQ "
                              "graph, and TensorRT would build it as implicit INT8 (no calibration) or in float; "
                              "build INT8 engines from the -s8s8 graph that twins-export --precision int8 writes")
        return loaded

    return load


def _timing_cache(create_config: Callable[[Any, Any], Any], path: Path, info: BuildInfo) -> Callable[[Any, Any], Any]:
    """``create_config`` followed by loading the timing cache at ``path`` through TensorRT,
    setting ``info.timing_cache_loaded`` to what TensorRT answered: true only when it read
    the file (``create_timing_cache`` gave a cache), accepted it (``set_timing_cache``
    returned true) and logged no error or "ignored" about it. A refused cache leaves the
    empty one in place and a warning in the manifest; the build then rewrites the file."""

    def load(builder: Any, network: Any) -> Any:
        config = create_config(builder, network)
        info.timing_cache_loaded = False
        if not path.is_file():
            return config  # the first build: the empty cache is filled and saved
        from polygraphy import util as pg_util

        # TensorRT's messages while the cache loads (through Polygraphy's logger) are about
        # the cache: they go to its report, not to the build's warnings and errors
        said, logger = _Collect(), logging.getLogger("Polygraphy")
        build_handlers = [h for h in logger.handlers if isinstance(h, _Collect)]
        for h in build_handlers:
            logger.removeHandler(h)
        logger.addHandler(said)
        try:
            try:
                with pg_util.LockFile(str(path)):
                    data = path.read_bytes()
            except OSError as e:
                data, said.errors = None, [f"{type(e).__name__}: {e}"]
            if data == b"":
                return config  # an empty file: nothing to load
            try:
                cache = config.create_timing_cache(data) if data is not None else None
            except Exception as e:  # noqa: BLE001 - the bindings raise for some unreadable blobs
                cache, said.errors = None, said.errors + [str(e)]
            accepted = cache is not None and bool(config.set_timing_cache(cache, ignore_mismatch=False))
        finally:
            logger.removeHandler(said)
            for h in build_handlers:
                logger.addHandler(h)
        ignored = said.errors + [m for m in said.warnings if _IGNORED.search(m)]
        info.timing_cache_loaded = accepted and not ignored
        if not info.timing_cache_loaded:
            why = ("the file could not be read" if data is None else
                   "TensorRT could not read it" if cache is None else
                   "TensorRT refused it (another TensorRT version or device?)" if not accepted else
                   "TensorRT ignored it")
            info.warnings.append(f"timing cache {path} not used: {why}" +
                                 "".join(f'; TensorRT: "{_plain(m)}"' for m in ignored[-3:]) +
                                 "; built without it, the new cache replaces it")
        return config

    return load


_IGNORED = re.compile(r"ignor|mismatch|invalid|corrupt|discard", re.IGNORECASE)
_LETTER = re.compile(r"^\[[A-Z!]\] ")


def _plain(message: str) -> str:
    """A Polygraphy message without its severity letter (``[W] ``, ``[E] ``, ``[!] ``)."""
    return _LETTER.sub("", message.strip())


class _Collect(logging.Handler):
    """Polygraphy's messages, by severity: ``errors`` are TensorRT's (and the ONNX parser's,
    which Polygraphy logs as errors), ``critical`` Polygraphy's own, raised as its exception."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.critical: list[str] = []
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        kept = (self.critical if record.levelno >= logging.CRITICAL else
                self.errors if record.levelno >= logging.ERROR else self.warnings)
        message = _plain(record.getMessage())
        if message and message not in kept:  # TensorRT repeats itself; report each message once
            kept.append(message)


@contextlib.contextmanager
def _polygraphy_log() -> Iterator[_Collect]:
    """Route Polygraphy's (and through it TensorRT's) messages into Python logging for the
    build: warnings and errors are kept for the manifest and the error message, nothing
    is printed (stdout carries only our output). Polygraphy prints its own messages unless
    ``use_python_logging_system``; with ``colors`` on it also prints, to stdout and once per
    process, a notice that the ``colored`` module is missing (``has_colors`` in
    polygraphy/logger/logger.py), so colors and the severity letter are off here."""
    from polygraphy.logger import G_LOGGER

    handler = _Collect()
    logger = logging.getLogger("Polygraphy")
    saved = {k: getattr(G_LOGGER, k) for k in ("use_python_logging_system", "module_severity", "colors", "letter")}
    old = (logger.propagate, logger.level)
    G_LOGGER.use_python_logging_system = True
    G_LOGGER.module_severity = G_LOGGER.WARNING
    G_LOGGER.colors = G_LOGGER.letter = False
    logger.addHandler(handler)
    logger.propagate, logger.level = False, logging.WARNING
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        for k, v in saved.items():
            setattr(G_LOGGER, k, v)
        logger.propagate, logger.level = old


def _build_failure(version: str, onnx_name: str, log: _Collect, e: Exception) -> str:
    """One message for a failed build: TensorRT's (or the parser's) own words, quoted, the
    first on the line; Polygraphy's summary ("Invalid Engine...") only when TensorRT said
    nothing, since Polygraphy logged nothing else to stdout or stderr."""
    head = f"TensorRT {version} could not build {onnx_name}"
    reasons = [m for m in log.errors if m != _plain(str(e))][:10]
    if not reasons:
        return f"{head}: {_plain(str(e)) or type(e).__name__}"
    return f'{head}: "{reasons[0]}"' + "".join(f'\n  "{m}"' for m in reasons[1:])


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
            raise ExportError(_build_failure(trt.__version__, Path(onnx_path).name, log, e)) from None
    info.build_seconds = round(time.perf_counter() - t0, 1)
    info.warnings += log.warnings[-20:]
    return bytes(memoryview(plan)), info
