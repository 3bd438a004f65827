"""The table of deployment routes: every way twins-deploy runs a model, in one place.

A route is a backend at a precision on a device: PyTorch eager, ONNX Runtime on the CPU or
CUDA, OpenVINO computing in FP32 or BF16, TensorRT plans. Its row says what it consumes
(the PyTorch model itself, or an artifact kind), what it computes in (which picks the
thresholds that judge it), where it runs, which extra installs it, and which Runner class
opens it. Validation, the benchmark, predict, serving and the CLIs' choices and help text
all read this table, in the spirit of timm's model registry: a new route is one row here
plus its Runner class (with a ``from_route`` constructor), and nothing else changes.

TensorRT's lean runtime is not a row of its own: a version-compatible plan is a
``plan-*`` artifact like any other, and the TensorRT Runner opens it with the lean runtime
when the full one is absent.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from twins_deploy.artifacts import ONNX_KIND, PLAN_KIND
from twins_deploy.engines.runners.base import Runner
from twins_deploy.engines.runners.onnxrt import OrtRunner
from twins_deploy.engines.runners.openvino import OpenVinoRunner
from twins_deploy.engines.runners.pytorch import TorchRunner
from twins_deploy.engines.runners.trt import TrtRunner
from twins_deploy.errors import OptionError, quoted
from twins_deploy.exporters.int8 import FORMS

if TYPE_CHECKING:
    from twins_deploy.manifest import Manifest

# What a route consumes: the PyTorch model itself, or an artifact of a kind (file format
# and the precision its graph or plan computes in; a mixed FP16 ONNX is "onnx-fp16").
MODEL = "model"
ONNX_FP32, ONNX_FP16, ONNX_INT8 = "onnx-fp32", "onnx-fp16", "onnx-int8"
PLAN_FP32, PLAN_FP16, PLAN_INT8 = "plan-fp32", "plan-fp16", "plan-int8"
ARTIFACT_KINDS = (MODEL, ONNX_FP32, ONNX_FP16, ONNX_INT8, PLAN_FP32, PLAN_FP16, PLAN_INT8)
# artifact kind -> (twins-export --fmt, --precision) that makes it
MADE_BY = {ONNX_FP32: ("onnx", "fp32"), ONNX_FP16: ("onnx", "fp16"), ONNX_INT8: ("onnx", "int8"),
           PLAN_FP32: ("trt", "fp32"), PLAN_FP16: ("trt", "fp16"), PLAN_INT8: ("trt", "int8")}
_FILE_KIND = {ONNX_KIND: "onnx", PLAN_KIND: "plan"}  # manifest kind -> the artifact kind's file part
_KIND_WORDS = {"onnx": "an ONNX model", "plan": "a TensorRT plan", "model": "the PyTorch model"}
DEVICES = ("cpu", "cuda", "auto")  # auto: CUDA when PyTorch sees a GPU, else the CPU
PYTORCH, ONNXRUNTIME, OPENVINO, TENSORRT = "PyTorch", "ONNX Runtime", "OpenVINO", "TensorRT"  # families


@dataclass(frozen=True)
class Route:
    """One row of the table."""

    name: str
    family: str                       # the runtime: PyTorch, ONNX Runtime, OpenVINO, TensorRT
    summary: str                      # one line, for help texts and the docs
    consumes: tuple[str, ...]         # artifact kinds it runs; twins-bench makes the first
    device: str                       # "cpu" | "cuda" | "auto"
    runner: type[Runner]              # opened with ``runner.from_route(route, target)``
    computes_in: str | None = None    # precision whose thresholds judge it; None: the artifact's own
    extra: str | None = None          # pip extra that installs what it needs (None: the base install)
    options: Mapping[str, Any] = field(default_factory=dict)  # passed to the Runner, read by it only
    aliases: tuple[str, ...] = ()     # older names still accepted on the command line
    baseline: bool = False            # the route benchmark speedups are measured against
    # its artifact is tuned to one batch shape (a TensorRT plan picks kernels for its profile's
    # opt batch): twins-bench makes one per measured batch, as trtexec --shapes does
    tuned_per_batch: bool = False
    # INT8 routes: the Q/DQ form (twins_deploy.exporters.int8.FORMS) it runs fastest, the one
    # twins-bench opens for it (an INT8 export writes every form from one calibration)
    int8_form: str | None = None

    def __post_init__(self) -> None:
        unknown = [k for k in self.consumes if k not in ARTIFACT_KINDS]
        if not self.consumes or unknown or self.device not in DEVICES:
            raise ValueError(f"route {self.name!r}: consumes {self.consumes} / device {self.device!r} not in "
                             f"{ARTIFACT_KINDS} / {DEVICES}")
        int8 = [k for k in self.consumes if k.endswith("-int8")]
        if int8 and (len(int8) != len(self.consumes) or self.int8_form not in FORMS):
            raise ValueError(f"route {self.name!r}: an INT8 route runs INT8 artifacts only and names its Q/DQ form "
                             f"({', '.join(FORMS)}), got {self.consumes} / {self.int8_form!r}")
        if self.tuned_per_batch and self.runs_model:
            raise ValueError(f"route {self.name!r} runs the model: there is no artifact to tune per batch")
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    @property
    def runs_model(self) -> bool:
        """Whether it runs the PyTorch model itself rather than an artifact file."""
        return MODEL in self.consumes

    @property
    def needs_gpu(self) -> bool:
        return self.device == "cuda"

    @property
    def makes(self) -> tuple[str, str] | None:
        """(--fmt, --precision) of the artifact twins-bench makes for it; None: runs the model."""
        return None if self.runs_model else MADE_BY[self.consumes[0]]

    @property
    def precision(self) -> str:
        """What it computes in when it runs what twins-bench makes for it."""
        return self.computes_in or MADE_BY[self.consumes[0]][1]

    def install_hint(self) -> str:
        return f"pip install 'twins-deploy[{self.extra}]'" if self.extra else "the base install"


ROUTES: dict[str, Route] = {r.name: r for r in (
    Route("torch", PYTORCH, "PyTorch eager FP32 (the baseline; CUDA when PyTorch sees a GPU)", (MODEL,), "auto",
          TorchRunner, "fp32", baseline=True),
    Route("torch-fp16", PYTORCH, "PyTorch eager FP16 on the GPU", (MODEL,), "cuda", TorchRunner, "fp16",
          options={"dtype": "fp16"}),
    Route("torch-compile", PYTORCH, "torch.compile FP32 (CUDA when PyTorch sees a GPU)", (MODEL,), "auto",
          TorchRunner, "fp32", options={"compile": True}),
    Route("ort-cpu", ONNXRUNTIME, "ONNX Runtime, CPU execution provider", (ONNX_FP32, ONNX_FP16), "cpu", OrtRunner,
          aliases=("ort",)),
    Route("ort-cuda", ONNXRUNTIME, "ONNX Runtime, CUDA execution provider (onnxruntime-gpu)",
          (ONNX_FP32, ONNX_FP16), "cuda", OrtRunner, extra="gpu"),
    Route("openvino-f32", OPENVINO, "OpenVINO on the CPU, inference precision f32", (ONNX_FP32, ONNX_FP16), "cpu",
          OpenVinoRunner, extra="openvino", options={"precision": "fp32"}),
    Route("openvino-bf16", OPENVINO, "OpenVINO on the CPU, inference precision bf16 (CPUs with native BF16)",
          (ONNX_FP32, ONNX_FP16), "cpu", OpenVinoRunner, "bf16", extra="openvino", options={"precision": "bf16"}),
    Route("ort-int8", ONNXRUNTIME, "ONNX Runtime, CPU execution provider, on the INT8 Q/DQ graph (U8S8 form)",
          (ONNX_INT8,), "cpu", OrtRunner, int8_form="u8s8"),
    Route("openvino-int8", OPENVINO, "OpenVINO on the CPU, INT8 kernels from the Q/DQ graph (S8S8 form), the rest f32",
          (ONNX_INT8,), "cpu", OpenVinoRunner, extra="openvino", options={"precision": "fp32"}, int8_form="s8s8"),
    Route("trt-fp32", TENSORRT, "TensorRT plan built from the FP32 ONNX (TF32 off unless --tf32)", (PLAN_FP32,),
          "cuda", TrtRunner, extra="trt", tuned_per_batch=True),
    Route("trt-fp16", TENSORRT, "TensorRT plan in FP16 (strongly typed mixed graph, or --weak-fp16 on 8.6-10.x)",
          (PLAN_FP16,), "cuda", TrtRunner, extra="trt", tuned_per_batch=True),
    Route("trt-int8", TENSORRT, "TensorRT plan from the S8S8 Q/DQ graph (explicit INT8: strongly typed on 9+, "
          "INT8+FP16 flags on 8.6)", (PLAN_INT8,), "cuda", TrtRunner, extra="trt", tuned_per_batch=True,
          int8_form="s8s8"),
)}


def baseline_route() -> Route:
    """The route benchmark speedups are measured against."""
    return next(r for r in ROUTES.values() if r.baseline)


def route_names(kind: str | None = None) -> list[str]:
    """Every route's name, or those that run artifacts of ``kind`` (table order)."""
    return [r.name for r in ROUTES.values() if kind is None or kind in r.consumes]


def artifact_routes() -> list[str]:
    """The routes that run an artifact file (what twins-validate's --backend chooses from)."""
    return [r.name for r in ROUTES.values() if not r.runs_model]


def get_route(name: str) -> Route:
    """The route called ``name`` (or one of its aliases); an unknown name is an OptionError."""
    for r in ROUTES.values():
        if name == r.name or name in r.aliases:
            return r
    raise OptionError(f"unknown route {quoted(name)}; choose from {', '.join(ROUTES)}")


def artifact_kind(manifest: Manifest) -> str:
    """The kind of the artifact ``manifest`` describes: its file format and what it computes in."""
    return f"{_FILE_KIND[manifest.kind]}-{manifest.precision}"


def default_route(kind: str, device: str = "cpu") -> Route:
    """The table's first route that runs artifacts of ``kind`` on ``device`` (or, when none
    does, the first that runs ``kind`` at all: a plan runs on the GPU whatever was asked)."""
    fits = [r for r in ROUTES.values() if kind in r.consumes]
    if not fits:
        raise OptionError(f"no route runs {kind} artifacts")
    return next((r for r in fits if r.device in (device, "auto")), fits[0])


def route_for(manifest: Manifest, name: str | None = None, device: str = "cpu") -> Route:
    """The route that runs ``manifest``'s artifact: ``name`` when given (it must run this
    kind), else the first row that runs it on ``device`` (or the first that runs it at all:
    a plan runs on the GPU whatever was asked)."""
    kind = artifact_kind(manifest)
    if name is not None:
        route = get_route(name)
        fits = [r for r in ROUTES.values() if kind in r.consumes]
        if route not in fits:
            what = _KIND_WORDS[kind.split("-")[0]]
            families = " and ".join(dict.fromkeys(r.family for r in fits))
            raise OptionError(f"{manifest.artifact} is {what} ({kind}): it runs in {families} only "
                              f"({', '.join(r.name for r in fits)}); route {route.name} runs {', '.join(route.consumes)}")
        return route
    return default_route(kind, device)


def judged_precision(route: Route, manifest: Manifest | None = None) -> str:
    """The precision whose thresholds judge ``route`` running ``manifest``'s artifact: what
    the route computes in (OpenVINO BF16 is coarser than any graph), else the artifact's own."""
    if route.computes_in is not None:
        return route.computes_in
    if manifest is None:
        raise ValueError(f"route {route.name} computes in its artifact's precision: pass the manifest")
    return manifest.precision


def routes_help(names: list[str] | None = None) -> str:
    """'name (summary; extra)' for each route, for argparse help texts."""
    rows = [ROUTES[n] for n in (names if names is not None else ROUTES)]
    return "; ".join(f"{r.name}: {r.summary}" + (f" [{r.extra}]" if r.extra else "") for r in rows)
