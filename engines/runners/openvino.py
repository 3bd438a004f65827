"""OpenVINO (CPU) as a Runner, with the precision it computes in always chosen and proven.

Two behaviours of OpenVINO's CPU plugin decide how this runner is written:

* Its default inference precision depends on the CPU: on CPUs with native BF16
  (AVX-512 BF16, AMX) it silently computes an FP32 graph in BF16 (logits off by about
  3e-2), and where BF16 is not native a ``bf16`` request silently runs FP32 (OpenVINO
  2026.4 on an AVX2-only EPYC: the compiled model reads back ``f32``). So the precision
  hint is always set, never left to the device default, and is read back from the
  compiled model after compiling: a request the CPU cannot honour is refused
  (:class:`BackendUnavailableError`), and what was used is in :meth:`describe`.
* On a model with dynamic H/W, its "snippets" (the fused attention/MHA subgraphs) give
  wrong results after a small input: once a compiled model has run an input whose last
  stage is 1x1 (H or W below 64 for Twins), every later larger input on that compiled
  model (a new infer request too) comes out wrong (relative error 1-14 on logits and
  feature maps, no NaN); a fresh compile or ``SNIPPETS_MODE=DISABLE`` is correct
  (reproduced with OpenVINO 2026.4.1, FP32, on svt_s and pcpvt_s). Static-H/W models are
  not affected (batch changes are fine), so snippets are disabled for dynamic-H/W models
  only, and the choice is recorded.

Threads, streams, pinning and the performance hint are set explicitly too, so that a
benchmark row says what ran: by default one stream with as many threads as this process
may use, and no core pinning (on a shared machine a pinned thread waits for its core).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from twins_deploy.artifacts import existing_file
from twins_deploy.engines.runners.base import RouteRow, Runner, RunTarget, as_numpy, check_input_shape
from twins_deploy.errors import ArtifactError, BackendUnavailableError, quoted

# Our precision names -> OpenVINO's inference precision hint values.
PRECISIONS = {"fp32": "f32", "bf16": "bf16"}
DEVICE = "CPU"


def available_threads() -> int:
    """Cores this process may run on (the affinity mask, not the machine's core count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _ov_precision_name(value: Any) -> str:
    """``<Type: 'float32'>``, ``'f32'`` or ``'bf16'`` -> our name (fp32, bf16, ...)."""
    text = str(getattr(value, "get_type_name", lambda: value)()).lower()
    return {"f32": "fp32", "float32": "fp32", "bf16": "bf16", "bfloat16": "bf16",
            "f16": "fp16", "float16": "fp16"}.get(text, text)


def import_openvino() -> Any:
    try:
        import openvino
    except ImportError:
        raise BackendUnavailableError(
            "OpenVINO is not installed; pip install 'twins-deploy[openvino]'") from None
    return openvino


def _reason(error: Exception) -> str:
    """OpenVINO's message without its source-location lines ("Exception from src/...cpp:84:",
    "Check '...' failed at ...", "FrontEnd API failed with ..."), which say nothing to a user."""
    noise = ("Exception from ", "Check '", "FrontEnd API failed")
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip() and not ln.strip().startswith(noise)]
    return " ".join(lines) or type(error).__name__


def read_onnx(ov: Any, path: Path) -> Any:
    """The ONNX file as an OpenVINO model, through OpenVINO's ONNX frontend only.

    ``Core.read_model`` tries every frontend it has, so a file that is not ONNX is first
    parsed as a TensorFlow GraphDef (absl errors on stderr) and the error says only that no
    frontend could read it; the ONNX frontend alone says why the file is not ONNX."""
    frontend = ov.frontend.FrontEndManager().load_by_framework("onnx")
    try:
        model = frontend.convert(frontend.load(str(path)))
    except Exception as e:  # OpenVINO raises its own GeneralFailure/OpConversionFailure types
        raise ArtifactError(f"OpenVINO's ONNX reader cannot read {quoted(str(path))}: {_reason(e)}") from None
    if len(model.inputs) != 1 or not model.outputs:  # stray bytes can parse as an empty ModelProto
        raise ArtifactError(f"{quoted(str(path))} is not an image model: its ONNX graph has {len(model.inputs)} "
                            f"inputs and {len(model.outputs)} outputs")
    return model


class OpenVinoRunner(Runner):
    """Run an ONNX file in OpenVINO on the CPU in an explicit precision (fp32 or bf16)."""

    def __init__(self, path: str | os.PathLike[str], precision: str = "fp32", threads: int | None = None,
                 streams: int = 1, pin_threads: bool = False) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {quoted(precision)}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.path, self.precision = Path(path), precision
        self.threads = threads or available_threads()
        self.streams, self.pin_threads = streams, pin_threads
        self.name = f"openvino-{PRECISIONS[precision]}"
        self.info: dict[str, Any] = {}

    def compile_config(self, dynamic_hw: bool) -> dict[str, Any]:
        """Every property this runner decides, as passed to ``compile_model``."""
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": PRECISIONS[self.precision],
            # ACCURACY would override the precision hint with f32; say PERFORMANCE so the hint rules
            "EXECUTION_MODE_HINT": "PERFORMANCE",
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": self.streams,
            "INFERENCE_NUM_THREADS": self.threads,
            "ENABLE_CPU_PINNING": self.pin_threads,
        }
        if dynamic_hw:
            config["SNIPPETS_MODE"] = "DISABLE"  # see the module docstring
        return config

    @classmethod
    def from_route(cls, route: RouteRow, target: RunTarget) -> OpenVinoRunner:
        runner = cls(target.path, precision=route.options["precision"], threads=target.threads)
        runner.name = route.name
        return runner

    def _activate(self) -> None:
        ov = import_openvino()
        existing_file(self.path, "ONNX model")
        core = ov.Core()
        capabilities = [str(c) for c in core.get_property(DEVICE, "OPTIMIZATION_CAPABILITIES")]
        default = _ov_precision_name(core.get_property(DEVICE, "INFERENCE_PRECISION_HINT"))
        if self.precision == "bf16" and "BF16" not in capabilities:
            raise BackendUnavailableError(
                f"this CPU ({core.get_property(DEVICE, 'FULL_DEVICE_NAME')}) has no native BF16 "
                f"(OpenVINO capabilities: {', '.join(capabilities)}); OpenVINO would silently compute in FP32")
        model = read_onnx(ov, self.path)
        shape = model.inputs[0].get_partial_shape()
        self.input_dims = [d.get_length() if d.is_static else None for d in shape] if shape.rank.is_static else None
        dynamic_hw = shape.rank.is_static and len(shape) == 4 and (shape[2].is_dynamic or shape[3].is_dynamic)
        config = self.compile_config(dynamic_hw)
        self.compiled = core.compile_model(model, DEVICE, config)
        used = _ov_precision_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        if used != self.precision:
            raise BackendUnavailableError(
                f"OpenVINO compiled the model in {used}, not the requested {self.precision}")
        self.request = self.compiled.create_infer_request()
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]
        self.info = {
            "precision": used, "device_default_precision": default, "capabilities": capabilities,
            "runtime_precisions": runtime_precisions(self.compiled),
            "snippets": "disabled (dynamic H/W)" if config.get("SNIPPETS_MODE") == "DISABLE" else "default",
            "config": {k: str(v) for k, v in config.items()},
            "openvino": ov.__version__,
        }

    def _deactivate(self) -> None:
        del self.request, self.compiled

    def _feed(self, x: Any) -> np.ndarray:
        arr = as_numpy(x)
        if self.input_dims is not None:  # a graph of unknown rank is left to OpenVINO
            check_input_shape(arr.shape, self.input_dims, self.compiled.inputs[0].get_any_name())
        return arr

    def infer(self, x: Any) -> list[np.ndarray]:
        result = self.request.infer({0: self._feed(x)})
        # the request owns these buffers and reuses them on the next call: copy out
        return [np.array(result[o], dtype=np.float32) for o in self.compiled.outputs]

    def prepare(self, x: np.ndarray, include_copies: bool = False) -> None:
        import openvino as ov

        super().prepare(self._feed(x), include_copies)
        self.request.set_input_tensor(ov.Tensor(self._prepared, shared_memory=True))

    def step(self) -> None:
        if self._include_copies:
            self.infer(self._prepared)
            return
        self.request.infer()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "path": str(self.path), "threads": self.threads,
                "streams": self.streams, "requested_precision": self.precision, **self.info}


def runtime_precisions(compiled: Any) -> dict[str, int]:
    """How many operations of the compiled (runtime) graph run in each precision: the
    proof that BF16 was used, beside the hint read back."""
    counts: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "runtimePrecision" not in info or str(info["layerType"].astype(str)) in ("Const", "Input", "Output"):
            continue
        p = _ov_precision_name(info["runtimePrecision"].astype(str))
        counts[p] = counts.get(p, 0) + 1
    return dict(sorted(counts.items()))
