"""Precision, resolved once per export into the object every stage reads.

A user asks for ``fp32`` or ``fp16``. How FP16 is realised depends on the TensorRT line
that builds the engine, and decides which ONNX graph is exported:

* ``strong``: the precision lives in the ONNX graph (a mixed FP16 graph, LayerNorm in
  FP32). TensorRT 10.x builds it as a ``STRONGLY_TYPED`` network; 11.x has only strong
  typing (``BuilderFlag.FP16`` was removed in 11.0). ONNX-only exports of FP16 take this
  route too: the mixed graph is the FP16 artifact.
* ``weak``: the FP32 graph plus ``BuilderFlag.FP16``, letting the builder choose layer
  precisions. The only FP16 route on TensorRT 8.x (which has no strong typing), and an
  opt-in on 9.x/10.x; never offered on 11.
* ``fp32``: the FP32 graph, nothing else.
* ``qdq`` (INT8): explicit, symmetric ``QuantizeLinear``/``DequantizeLinear`` pairs in the
  graph, quantized from the FP32 graph (:mod:`twins_deploy.exporters.int8`). TensorRT 8.x
  builds it with ``BuilderFlag.INT8`` (a Q/DQ network needs the flag under weak typing,
  NVIDIA/TensorRT#4021) plus ``FP16`` so the layers left in high precision are not FP32;
  9.x/10.x build it as a ``STRONGLY_TYPED`` network with no precision flag (both flags are
  deprecated from 10.12: "Superseded by strong typing"); 11.x is strongly typed only. Never
  TensorRT's implicit calibrator: deprecated in 10.1, removed in 11.

TensorRT 9.x (the LLM-oriented releases 9.x) already binds
``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` (github.com/NVIDIA/TensorRT,
``python/src/infer/pyCore.cpp`` at tags v9.1.0 and v9.3.0, beside ``EXPLICIT_BATCH``;
v8.6.1 binds only ``EXPLICIT_BATCH``/``EXPLICIT_PRECISION``), so 9.x takes the strong route
by default like 10.x (and still gets ``EXPLICIT_BATCH``, which only 10.0 made implicit).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from twins_deploy.artifacts import PLAN_KIND
from twins_deploy.errors import BackendUnavailableError, InputShapeError, quoted

PRECISIONS = ("fp32", "fp16", "int8")
ROUTES = ("fp32", "strong", "weak", "qdq")
_ROUTES_OF = {"fp32": ("fp32",), "fp16": ("strong", "weak"), "int8": ("qdq",)}
# First TensorRT major with strongly typed networks; 11 is the first without weak typing.
FIRST_STRONG_MAJOR = 9
FIRST_STRONG_ONLY_MAJOR = 11


@dataclass(frozen=True)
class PrecisionPlan:
    """What the user asked for and how each stage realises it."""

    requested: str = "fp32"   # "fp32" | "fp16" | "int8": what the deployed artifact computes in
    route: str = "fp32"       # "fp32" | "strong" | "weak" (fp16) | "qdq" (int8)
    io_fp16: bool = False     # FP16 graph inputs/outputs (strong route only)

    def __post_init__(self) -> None:
        if self.requested not in PRECISIONS:
            raise InputShapeError(f"precision must be one of {', '.join(PRECISIONS)}, got {quoted(self.requested)}")
        if self.route not in _ROUTES_OF[self.requested]:
            raise InputShapeError(f"route {quoted(self.route)} cannot realise precision {quoted(self.requested)}")
        if self.io_fp16 and self.route != "strong":
            raise InputShapeError(
                "--io-fp16 needs the FP16 graph (--precision fp16 without --weak-fp16): only a graph "
                "computed in FP16 can take and return FP16 tensors")

    @property
    def graph(self) -> str:
        """Precision of the deployed ONNX graph."""
        return {"strong": "fp16", "qdq": "int8"}.get(self.route, "fp32")

    @property
    def source(self) -> PrecisionPlan:
        """The plan of the graph exported from PyTorch: this one, or FP32 for INT8 (whose
        Q/DQ graph is quantized from the FP32 graph, which is an artifact of its own)."""
        return PrecisionPlan() if self.route == "qdq" else self

    def builder_flags(self, trt_major: int) -> tuple[str, ...]:
        """The weak-typing ``BuilderFlag`` precision flags TensorRT ``trt_major`` is given:
        FP16 for the weak route; INT8 and FP16 for a Q/DQ graph on 8.x (no strong typing
        there); none otherwise (the graph's own types rule)."""
        self.check_trt(trt_major)
        if self.route == "weak":
            return ("FP16",)
        if self.route == "qdq" and trt_major < FIRST_STRONG_MAJOR:
            return ("INT8", "FP16")
        return ()

    def strongly_typed_network(self, trt_major: int) -> bool:
        """Whether TensorRT ``trt_major`` is asked for a ``STRONGLY_TYPED`` network: the FP16
        graph below 11, and the Q/DQ graph from 9 to 10 (11 has strong typing only, so the
        flag is implied there)."""
        self.check_trt(trt_major)
        if self.route == "qdq":
            return FIRST_STRONG_MAJOR <= trt_major < FIRST_STRONG_ONLY_MAJOR
        return self.route == "strong" and trt_major < FIRST_STRONG_ONLY_MAJOR

    def check_trt(self, trt_major: int) -> None:
        """Refuse a plan TensorRT ``trt_major`` cannot build: weak typing is gone from 11."""
        if self.route == "weak" and trt_major >= FIRST_STRONG_ONLY_MAJOR:
            raise BackendUnavailableError(
                f"--weak-fp16 needs TensorRT 8.6-10.x: TensorRT 11 removed BuilderFlag.FP16 (weak typing; this is "
                f"TensorRT {trt_major}); drop the flag to build the strongly typed FP16 graph")

    def of(self, kind: str) -> str:
        """The precision an artifact of ``kind`` (ONNX model or TensorRT plan) computes in."""
        return self.requested if kind == PLAN_KIND else self.graph

    def io_dtype(self, kind: str) -> str:
        return "float16" if self.io_fp16 and self.of(kind) == "fp16" else "float32"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PrecisionPlan:
        return cls(str(d["requested"]), str(d["route"]), bool(d.get("io_fp16", False)))


def resolve_precision(requested: str, io_fp16: bool = False, trt_major: int | None = None,
                      weak_fp16: bool = False) -> PrecisionPlan:
    """The plan for ``requested`` on TensorRT ``trt_major`` (None: no engine, or TensorRT
    unknown, which is treated like the current line)."""
    if requested not in PRECISIONS:
        raise InputShapeError(f"precision must be one of {', '.join(PRECISIONS)}, got {quoted(requested)}")
    if requested != "fp16":
        if weak_fp16:
            raise InputShapeError("--weak-fp16 only applies to --precision fp16")
        # io_fp16 is refused by the plan itself
        return PrecisionPlan(requested, "qdq" if requested == "int8" else "fp32", io_fp16)
    weak = weak_fp16 or (trt_major is not None and trt_major < FIRST_STRONG_MAJOR)
    plan = PrecisionPlan("fp16", "weak" if weak else "strong", io_fp16)
    if trt_major is not None:
        plan.check_trt(trt_major)
    return plan
