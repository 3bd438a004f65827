"""The manifest beside every artifact, as typed data: one schema, built in one place.

``model.onnx`` gets ``model.onnx.json``: what the artifact is (model, weights and their
sha256, input contract, precision plan, preprocessing), how it was made (tool versions;
graph facts for ONNX; TensorRT version, GPU, profile and build options for engines) and
how it validated. :meth:`Manifest.identity` is every input that shapes an artifact: two
artifacts with equal identities are interchangeable, which is what lets a later run reuse
one instead of rebuilding it.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from twins_deploy.artifacts import ONNX_KIND, PLAN_KIND, existing_file, file_sha256, manifest_path
from twins_deploy.errors import ArtifactError
from twins_deploy.exporters.spec import ExportSpec
from twins_deploy.precision import PrecisionPlan
from twins_deploy.registry import Preprocess
from twins_deploy.weights import WeightsInfo

SCHEMA = 2
KINDS = (ONNX_KIND, PLAN_KIND)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    features: bool
    num_classes: int
    paper_name: str | None = None
    timm_name: str | None = None
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InputInfo:
    name: str
    shape: list[int | str]
    dtype: str
    dynamic_axes: dict[int, str]
    batch: dict[str, int]
    layout: str = "NCHW"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputInfo:
        return cls(d["name"], list(d["shape"]), d["dtype"], {int(k): v for k, v in d["dynamic_axes"].items()},
                   dict(d["batch"]), d.get("layout", "NCHW"))


@dataclass(frozen=True)
class OnnxInfo:
    """Facts of an ONNX artifact's graph and of its export."""

    opset: int
    ir_version: int
    nodes: int
    op_census: dict[str, int]
    roll_free: bool
    trt_compatible: dict[str, bool]
    export: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineInfo:
    """What a TensorRT plan was built with and for."""

    trt_version: str
    gpu: dict[str, Any]
    profile: dict[str, Any]
    build_options: dict[str, Any]
    source_onnx: dict[str, str]
    tf32: bool = False
    build: dict[str, Any] = field(default_factory=dict)
    trtexec: str = ""


@dataclass(frozen=True)
class QuantInfo:
    """How an INT8 artifact was quantized (an engine carries its Q/DQ graph's): the Q/DQ form,
    the quantizer and its version, and the calibration set (image count, content hash, method)."""

    form: str
    activations: str
    weights: str
    ops: list[str]
    quantizer: str
    quantizer_version: str
    calibration: dict[str, Any]
    source_onnx: dict[str, str] = field(default_factory=dict)  # the FP32 graph it was quantized from
    qdq: dict[str, Any] = field(default_factory=dict)  # Q/DQ facts read from the graph
    runs_best_in: str = ""

    def identity(self) -> dict[str, Any]:
        c = self.calibration
        return {"form": self.form, "ops": list(self.ops),
                "calibration": {k: c.get(k) for k in ("sha256", "images", "method")}}


@dataclass
class Manifest:
    kind: str
    artifact: str
    model: ModelInfo
    weights: WeightsInfo
    spec: ExportSpec
    plan: PrecisionPlan
    input: InputInfo
    outputs: list[str]
    preprocess: Preprocess
    tools: dict[str, str | None]
    created: str
    sha256: str | None = None
    size_bytes: int | None = None
    onnx: OnnxInfo | None = None
    engine: EngineInfo | None = None
    validation: dict[str, Any] | None = None
    quant: QuantInfo | None = None
    schema: int = SCHEMA

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ArtifactError(f"manifest kind must be one of {KINDS}, got {self.kind!r}")
        if self.validation is not None and not isinstance(self.validation, dict):
            raise ArtifactError(f"manifest validation must be an object or null, got {self.validation!r}")
        if not self.outputs or not all(isinstance(o, str) for o in self.outputs):
            raise ArtifactError(f"manifest outputs must be a list of tensor names, got {self.outputs!r}")
        if (self.plan.requested == "int8") != (self.quant is not None):
            raise ArtifactError("manifest precision int8 and its quant section go together "
                                f"(precision {self.plan.requested}, quant {'present' if self.quant else 'absent'})")

    @property
    def precision(self) -> str:
        """What this artifact computes in (picks its validation thresholds)."""
        return self.plan.of(self.kind)

    @property
    def is_plan(self) -> bool:
        """Whether the artifact is a TensorRT plan (else an ONNX model)."""
        return self.kind == PLAN_KIND

    @property
    def passed(self) -> bool | None:
        """The validation verdict: None when the artifact was not validated."""
        return None if self.validation is None else bool(self.validation.get("passed"))

    def identity(self) -> dict[str, Any]:
        """Everything that shapes the artifact, and nothing that merely describes it."""
        w = self.weights
        ident: dict[str, Any] = {
            "kind": self.kind,
            "model": {"name": self.model.name, "features": self.model.features, "num_classes": self.model.num_classes},
            "weights": {"source": w.source, "sha256": w.sha256, "seed": w.seed,
                        "path": w.path if w.source == "pretrained" else None},
            "spec": self.spec.to_dict(), "plan": self.plan.to_dict(),
        }
        if self.quant is not None:
            ident["quant"] = self.quant.identity()
        if self.engine is not None:
            e = self.engine
            ident["engine"] = {
                "trt_version": e.trt_version, "profile": e.profile,
                "gpu": {k: e.gpu.get(k) for k in ("name", "compute_capability")},
                "build_options": {k: v for k, v in e.build_options.items() if k != "timing_cache"},
            }
        return ident

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "schema": self.schema, "kind": self.kind, "artifact": self.artifact, "sha256": self.sha256,
            "size_bytes": self.size_bytes, "created": self.created,
            "model": asdict(self.model), "weights": self.weights.to_dict(),
            "spec": self.spec.to_dict(), "precision": self.precision, "precision_plan": self.plan.to_dict(),
            "input": asdict(self.input), "outputs": list(self.outputs), "preprocess": self.preprocess.to_dict(),
            "tools": dict(self.tools),
        }
        if self.onnx is not None:
            d["onnx"] = asdict(self.onnx)
        if self.engine is not None:
            d["engine"] = asdict(self.engine)
        if self.quant is not None:
            d["quant"] = asdict(self.quant)
        d["validation"] = self.validation
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        d = _upgrade(d)
        return cls(
            kind=d["kind"], artifact=d["artifact"], model=ModelInfo(**d["model"]),
            weights=WeightsInfo(**d["weights"]), spec=ExportSpec.from_dict(d["spec"]),
            plan=PrecisionPlan.from_dict(d["precision_plan"]), input=InputInfo.from_dict(d["input"]),
            outputs=list(d["outputs"]), preprocess=Preprocess.from_dict(d["preprocess"]), tools=dict(d.get("tools") or {}),
            created=d.get("created", ""), sha256=d.get("sha256"), size_bytes=d.get("size_bytes"),
            onnx=OnnxInfo(**d["onnx"]) if d.get("onnx") else None,
            engine=EngineInfo(**d["engine"]) if d.get("engine") else None,
            validation=d.get("validation"), quant=QuantInfo(**d["quant"]) if d.get("quant") else None,
            schema=SCHEMA,
        )


def _upgrade(d: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 (twins-deploy 0.1) kept graph and engine facts at the top level and the
    precision inside ``spec``; lay it out as schema 2."""
    schema = d.get("schema")
    if schema == SCHEMA:
        return d
    if schema != 1:
        raise ArtifactError(f"manifest schema {schema!r} is not one this twins-deploy reads (1, {SCHEMA})")
    d = dict(d)
    spec = d.get("spec") or {}
    trt = d.get("trt") or {}
    precision = spec.get("precision", d.get("precision", "fp32"))
    route = trt.get("route") or ("strong" if precision == "fp16" else "fp32")
    d["precision_plan"] = {"requested": precision, "route": route, "io_fp16": bool(spec.get("io_fp16"))}
    if d.get("kind") == ONNX_KIND and "graph" in d:
        g = d["graph"]
        d["onnx"] = {"opset": d.get("opset"), "ir_version": d.get("ir_version"), "nodes": g.get("nodes"),
                     "op_census": g.get("op_census", {}), "roll_free": g.get("roll_free"),
                     "trt_compatible": g.get("trt_compatible", {}), "export": d.get("export") or {}}
    elif d.get("kind") == PLAN_KIND:
        d["onnx"] = None
        d["engine"] = {"trt_version": trt.get("version"), "gpu": d.get("gpu") or {},
                       "profile": trt.get("profile") or {}, "build_options": trt.get("build_options") or {},
                       "source_onnx": d.get("onnx") or {}, "tf32": bool(trt.get("tf32")),
                       "build": trt.get("build") or {}, "trtexec": trt.get("trtexec", "")}
    return d


def _identity_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _identity_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return out


def reuse_verdict(path: Path, planned: Manifest, require_validated: bool) -> tuple[Manifest | None, str]:
    """(the existing manifest, "") when the artifact at ``path`` can stand in for
    ``planned``; otherwise (None, why not)."""
    if not Path(path).exists():
        return None, "absent"
    try:
        existing = read_manifest(path)
    except ArtifactError as e:
        return None, str(e)
    diff = _identity_diff(existing.identity(), planned.identity())
    if diff:
        return None, "made with other inputs (" + "; ".join(diff[:4]) + ")"
    if not existing.sha256 or file_sha256(path) != existing.sha256:
        return None, "its file differs from its manifest (sha256)"
    if existing.passed is False or (require_validated and not existing.passed):
        return None, "it did not pass validation" if existing.passed is False else "it was never validated"
    return existing, ""


def read_manifest(artifact: str | os.PathLike[str]) -> Manifest:
    """Read and check the manifest beside ``artifact``; any defect is one clear line."""
    art = existing_file(artifact, "artifact")
    mp = manifest_path(art)
    if not mp.is_file():
        raise ArtifactError(
            f"no manifest {str(mp)!r} beside {art.name}; twins-deploy artifacts are written "
            "with one (re-export with twins-export)"
        )
    try:
        data = json.loads(mp.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"manifest {str(mp)!r} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"manifest {str(mp)!r} is not a twins-deploy manifest (not a JSON object)")
    try:
        return Manifest.from_dict(data)
    except ArtifactError as e:
        raise ArtifactError(f"manifest {str(mp)!r}: {e}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        what = f"lacks {e}" if isinstance(e, KeyError) else f"is malformed ({type(e).__name__}: {e})"
        raise ArtifactError(f"manifest {str(mp)!r} {what}; is it a twins-deploy manifest?") from None
