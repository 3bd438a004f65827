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
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from twins_deploy.artifacts import (
    ONNX_KIND,
    PLAN_KIND,
    existing_file,
    hash_mismatch,
    json_safe,
    manifest_path,
    path_kind,
    read_bounded,
)
from twins_deploy.errors import ArtifactError, InputShapeError, quoted
from twins_deploy.exporters.spec import (
    DEFAULT_OPSET,
    FEATURE_NAMES,
    MAX_BATCH,
    MAX_CLASSES,
    MAX_IMAGE_SIDE,
    MAX_OPSET,
    MIN_OPSET,
    BatchRange,
    ExportSpec,
    check_hw,
)
from twins_deploy.precision import PRECISIONS, ROUTES, PrecisionPlan
from twins_deploy.registry import MIN_IMAGE_SIDE, Preprocess
from twins_deploy.weights import WEIGHT_SOURCES, WeightsInfo

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
            raise ArtifactError(f"manifest kind must be one of {KINDS}, got {quoted(self.kind)}")
        if self.validation is not None and not isinstance(self.validation, dict):
            raise ArtifactError(f"manifest validation must be an object or null, got {quoted(self.validation)}")
        if not self.outputs or not all(isinstance(o, str) for o in self.outputs):
            raise ArtifactError(f"manifest outputs must be a list of tensor names, got {quoted(self.outputs)}")
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
        """A manifest read back: every field checked for its type and bounds first (see
        :func:`_checked`), so a damaged or hostile one is one line naming the field."""
        if not isinstance(d, dict):
            raise ArtifactError("is not a twins-deploy manifest (not a JSON object)")
        _check_tree(d)
        # as written to disk: a manifest made here (tuples, int axis keys) is checked exactly as
        # one read back from its file (lists, str keys); the tree is bounded, so this is cheap
        d = json.loads(json.dumps(json_safe(d), default=str))
        schema = d.get("schema")
        if type(schema) is not int or schema not in (1, SCHEMA):
            raise ArtifactError(f"schema {quoted(schema, 40)} is not one this twins-deploy reads (1, {SCHEMA})")
        return _checked(_upgrade(d))


def _upgrade(d: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 (twins-deploy 0.1) kept graph and engine facts at the top level and the
    precision inside ``spec``; lay it out as schema 2."""
    if d["schema"] == SCHEMA:
        return d
    d = dict(d)

    def section(key: str) -> dict[str, Any]:  # a damaged one: its fields are then found missing
        v = d.get(key)
        return v if isinstance(v, dict) else {}

    spec, trt = section("spec"), section("trt")
    precision = spec.get("precision", d.get("precision", "fp32"))
    route = trt.get("route") or ("strong" if precision == "fp16" else "fp32")
    d["precision_plan"] = {"requested": precision, "route": route, "io_fp16": spec.get("io_fp16", False)}
    if d.get("kind") == ONNX_KIND and "graph" in d:
        g = section("graph")
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


# -- reading a manifest back: bounds ------------------------------------------------------------------
MAX_MANIFEST_BYTES = 16 << 20  # a real manifest is a few KiB (its validation report included)
MAX_DEPTH = 32                 # a real one nests 5 deep; Python's json recurses per level
MAX_ITEMS = 100_000            # entries of any one list or object
MAX_NAME = 1024                # names: model, tensor, file, tool, version, time stamp, dict key
MAX_PATH = 4096                # paths: PATH_MAX on Linux
MAX_TEXT = 64 << 10            # free text anywhere (notes, summaries, command lines)
MAX_COUNT = 2**31 - 1          # counts in descriptive sections (nodes, images)
MAX_FILE_BYTES = 2**40         # an artifact's size: the largest Twins plan is under 1 GiB
MAX_OUTPUTS = len(FEATURE_NAMES)
MAX_SEED = 2**32 - 1           # what --seed takes
OPSET_BOUNDS = (1, 100)        # an ONNX graph's own opset / IR version as recorded (descriptive)
IO_DTYPES = ("float32", "float16")
MAX_EMBED_DIM = 65_536


def _name(where: str) -> str:
    """A field's dotted path for an error line: as is when plain, else bounded and escaped."""
    if len(where) <= 120 and where.isascii() and where.isprintable() and '"' not in where:
        return f'"{where}"'
    return quoted(where, 120)


def _bad(where: str, value: Any, rule: str) -> ArtifactError:
    return ArtifactError(f"field {_name(where)} is {quoted(value)}; {rule}")


def _check_tree(d: Any) -> None:
    """Bounds on the whole document, whatever its schema: depth, entries per list or object,
    length of every key and string. Iterative, so no recursion limit is met here."""
    stack: list[tuple[Any, str, int]] = [(d, "", 0)]
    while stack:
        node, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ArtifactError(f"is nested deeper than {MAX_DEPTH} levels (at {_name(where)})")
        if isinstance(node, str):
            if len(node) > MAX_TEXT:
                raise ArtifactError(f"field {_name(where)} is a text of {len(node):,} characters; "
                                    f"at most {MAX_TEXT:,} are read")
        elif isinstance(node, (dict, list)):
            if len(node) > MAX_ITEMS:
                raise ArtifactError(f"field {_name(where or '(top level)')} has {len(node):,} entries; "
                                    f"at most {MAX_ITEMS:,} are read")
            if isinstance(node, dict):
                for k, v in node.items():  # str from JSON; a manifest made here may hold ints (axes)
                    if len(str(k)) > MAX_NAME:
                        raise ArtifactError(f"field {_name(where or '(top level)')} has a key of {len(str(k)):,} "
                                            f"characters ({quoted(k, 60)}); at most {MAX_NAME} are read")
                    stack.append((v, f"{where}.{k}" if where else k, depth + 1))
            else:
                stack.extend((v, f"{where}[{i}]", depth + 1) for i, v in enumerate(node))


_MISSING = object()


def _get(d: dict[str, Any], key: str, where: str, default: Any = _MISSING) -> Any:
    """``d[key]``, or ``default`` when the key is absent (never when it is null, 0 or "")."""
    if key in d:
        return d[key]
    if default is _MISSING:
        raise ArtifactError(f"lacks '{where}{key}'; is it a twins-deploy manifest?")
    return default


def _obj(v: Any, where: str, nullable: bool = False) -> dict[str, Any]:
    if nullable and v is None:
        return {}
    if not isinstance(v, dict):
        raise _bad(where, v, "must be an object" + (" or null" if nullable else ""))
    return v


def _int(v: Any, where: str, lo: int, hi: int, what: str = "it", nullable: bool = False) -> int | None:
    """A whole number within ``lo..hi``; a bool is not one (``True == 1`` in Python)."""
    if nullable and v is None:
        return None
    if type(v) is not int or not lo <= v <= hi:
        many = what == "batch sizes"
        raise _bad(where, v, f"{what} must be {'' if many else 'a '}whole number{'s' if many else ''} "
                             f"{lo}..{hi}" + (" or null" if nullable else ""))
    return v


def _bool(v: Any, where: str) -> bool:
    if type(v) is not bool:
        raise _bad(where, v, "must be true or false")
    return v


def _str(v: Any, where: str, limit: int = MAX_NAME, *, choices: tuple[str, ...] | None = None,
         what: str = "it", empty: bool = True, nullable: bool = False) -> str | None:
    if nullable and v is None:
        return None
    if choices is not None:
        if not isinstance(v, str) or v not in choices:
            raise _bad(where, v, f"{what} must be one of {', '.join(choices)}")
        return v
    if not isinstance(v, str) or len(v) > limit or (not empty and not v):
        rule = f"{what} must be a{'' if empty else ' non-empty'} text of at most {limit} characters"
        raise _bad(where, v, rule + (" or null" if nullable else ""))
    return v


def _number(v: Any, where: str, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or abs(v) > 1e6:
        raise _bad(where, v, f"{what}: a finite number within +-1e6")
    return float(v)


def _sha256(v: Any, where: str) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str) or len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        raise _bad(where, v, "must be a sha256 (64 lowercase hex digits) or null")
    return v


def _str_map(v: Any, where: str, values: str = "str", limit: int = MAX_NAME) -> dict[str, Any]:
    """An object of names to texts (``values`` "str", "str?" for nullable), bools or counts."""
    out: dict[str, Any] = {}
    for k, x in _obj(v, where).items():
        if values == "bool":
            out[k] = _bool(x, f"{where}.{k}")
        elif values == "count":
            out[k] = _int(x, f"{where}.{k}", 0, MAX_COUNT)
        else:
            out[k] = _str(x, f"{where}.{k}", limit, nullable=values == "str?")
    return out


def _hw(v: Any, where: str, what: str = "image size", shown: Any = None) -> tuple[int, int]:
    """(H, W) within the sizes Twins takes (:func:`check_hw`); ``shown`` is the field's whole value."""
    shown = v if shown is None else shown
    if not (isinstance(v, list) and len(v) == 2 and all(type(x) is int for x in v)):
        raise _bad(where, shown, f"{what} must be (H, W): two whole numbers")
    try:
        return check_hw(*v)
    except InputShapeError as e:
        raise _bad(where, shown, str(e)) from None


def _batch(v: Any, where: str) -> BatchRange:
    d = _obj(v, where)
    values = [_int(_get(d, k, f"{where}."), f"{where}.{k}", 1, MAX_BATCH, "batch sizes") for k in ("min", "opt", "max")]
    try:
        return BatchRange(*values)  # type: ignore[arg-type]
    except InputShapeError as e:
        raise ArtifactError(f"field {_name(where)}: {e}") from None


def _built(where: str, make: Any) -> Any:
    """``make()``: a constructor's own consistency checks, its refusal naming the section."""
    try:
        return make()
    except (InputShapeError, ValueError, ArtifactError) as e:
        raise ArtifactError(f"field {_name(where)}: {e}") from None


def _model(v: Any) -> ModelInfo:
    d = _obj(v, "model")
    features = _bool(_get(d, "features", "model."), "model.features")
    lo = 0 if features else 1  # a backbone has no classifier; a classifier has at least one class
    config = _obj(_get(d, "config", "model.", {}), "model.config", nullable=True)
    if "embed_dims" in config:  # the Triton repository sizes a backbone's outputs from it
        dims = config["embed_dims"]
        if not (isinstance(dims, list) and len(dims) == MAX_OUTPUTS):
            raise _bad("model.config.embed_dims", dims, f"must be {MAX_OUTPUTS} whole numbers")
        for i, x in enumerate(dims):
            _int(x, f"model.config.embed_dims[{i}]", 1, MAX_EMBED_DIM)
    return ModelInfo(
        _str(_get(d, "name", "model."), "model.name", empty=False),  # type: ignore[arg-type]
        features, _int(_get(d, "num_classes", "model."), "model.num_classes", lo, MAX_CLASSES,  # type: ignore[arg-type]
                       "the number of classes"),
        _str(d.get("paper_name"), "model.paper_name", nullable=True),
        _str(d.get("timm_name"), "model.timm_name", nullable=True), config)


def _weights(v: Any) -> WeightsInfo:
    d = _obj(v, "weights")
    return WeightsInfo(
        _str(_get(d, "source", "weights."), "weights.source", choices=WEIGHT_SOURCES,  # type: ignore[arg-type]
             what="weights source"),
        _str(d.get("path"), "weights.path", MAX_PATH, nullable=True), _sha256(d.get("sha256"), "weights.sha256"),
        _int(d.get("seed"), "weights.seed", 0, MAX_SEED, "the seed", nullable=True),
        _str(d.get("note", ""), "weights.note", MAX_TEXT))  # type: ignore[arg-type]


def _spec(v: Any) -> ExportSpec:
    d = _obj(v, "spec")
    model = _str(_get(d, "model", "spec."), "spec.model", empty=False)
    hw = _hw(_get(d, "img_size", "spec."), "spec.img_size")
    batch = _batch(_get(d, "batch", "spec."), "spec.batch")
    dynamic_hw = _bool(d.get("dynamic_hw", False), "spec.dynamic_hw")
    features = _bool(d.get("features", False), "spec.features")
    opset = _int(d.get("opset", DEFAULT_OPSET), "spec.opset", MIN_OPSET, MAX_OPSET, "the opset")
    return _built("spec", lambda: ExportSpec(model, hw, batch, dynamic_hw, features, opset))  # type: ignore[arg-type]


def _plan(v: Any) -> PrecisionPlan:
    d = _obj(v, "precision_plan")
    requested = _str(_get(d, "requested", "precision_plan."), "precision_plan.requested", choices=PRECISIONS,
                     what="precision")
    route = _str(_get(d, "route", "precision_plan."), "precision_plan.route", choices=ROUTES, what="route")
    io_fp16 = _bool(d.get("io_fp16", False), "precision_plan.io_fp16")
    return _built("precision_plan", lambda: PrecisionPlan(requested, route, io_fp16))  # type: ignore[arg-type]


def _input(v: Any) -> InputInfo:
    d = _obj(v, "input")
    shape = _get(d, "shape", "input.")
    if not (isinstance(shape, list) and len(shape) == 4):
        raise _bad("input.shape", shape, "must be 4 dimensions (N, C, H, W)")
    dims: list[int | str] = []
    for i, x in enumerate(shape):
        lo, hi = ((1, MAX_BATCH), (3, 3), (MIN_IMAGE_SIDE, MAX_IMAGE_SIDE), (MIN_IMAGE_SIDE, MAX_IMAGE_SIDE))[i]
        dims.append(_str(x, f"input.shape[{i}]", empty=False) if isinstance(x, str)  # type: ignore[arg-type]
                    else _int(x, f"input.shape[{i}]", lo, hi, "a dimension"))
    axes = {}
    for k, name in _obj(_get(d, "dynamic_axes", "input."), "input.dynamic_axes").items():
        if k not in ("0", "1", "2", "3"):
            raise _bad(f"input.dynamic_axes.{k}", k, "dynamic axes are numbered 0..3")
        axes[int(k)] = _str(name, f"input.dynamic_axes.{k}", empty=False)
    b = _batch(_get(d, "batch", "input."), "input.batch")
    return InputInfo(_str(_get(d, "name", "input."), "input.name", empty=False),  # type: ignore[arg-type]
                     dims, _str(_get(d, "dtype", "input."), "input.dtype", choices=IO_DTYPES,  # type: ignore[arg-type]
                                what="the input type"),
                     axes, {"min": b.min, "opt": b.opt, "max": b.max},  # type: ignore[arg-type]
                     _str(d.get("layout", "NCHW"), "input.layout", choices=("NCHW",), what="the layout"))  # type: ignore[arg-type]


def _outputs(v: Any) -> list[str]:
    if not (isinstance(v, list) and 1 <= len(v) <= MAX_OUTPUTS
            and all(isinstance(o, str) and 0 < len(o) <= MAX_NAME for o in v)):
        raise _bad("outputs", v, f"outputs must be a list of tensor names (1..{MAX_OUTPUTS}, each at most "
                                 f"{MAX_NAME} characters)")
    return list(v)


def _preprocess(v: Any) -> Preprocess:
    d = _obj(v, "preprocess")
    size = _get(d, "input_size", "preprocess.")
    if not (isinstance(size, list) and len(size) == 3 and size[0] == 3 and type(size[0]) is int):
        raise _bad("preprocess.input_size", size, "preprocess input_size must be (3, H, W)")
    hw = _hw(size[1:], "preprocess.input_size", "preprocess input_size (H, W)", size)
    three = []
    for key in ("mean", "std"):
        x = _get(d, key, "preprocess.")
        if not (isinstance(x, list) and len(x) == 3):
            raise _bad(f"preprocess.{key}", x, "preprocess mean and std must be 3 finite numbers each, std > 0")
        three.append(tuple(_number(c, f"preprocess.{key}[{i}]", "preprocess mean and std must be 3 finite "
                                   "numbers each, std > 0") for i, c in enumerate(x)))
    interpolation = _str(_get(d, "interpolation", "preprocess."), "preprocess.interpolation", 64,
                         what="preprocess interpolation")
    crop_pct = _get(d, "crop_pct", "preprocess.")
    if isinstance(crop_pct, bool) or not isinstance(crop_pct, (int, float)) or not 0 < crop_pct <= 1:
        raise _bad("preprocess.crop_pct", crop_pct, "preprocess crop_pct must be in (0, 1]")
    crop_mode = _str(d.get("crop_mode", "center"), "preprocess.crop_mode", 64, what="preprocess crop_mode")
    return _built("preprocess", lambda: Preprocess((3, *hw), *three, interpolation, float(crop_pct), crop_mode))


def _onnx(v: Any) -> OnnxInfo | None:
    if v is None:
        return None
    d = _obj(v, "onnx")
    return OnnxInfo(
        _int(_get(d, "opset", "onnx."), "onnx.opset", 0, OPSET_BOUNDS[1], "the opset"),  # type: ignore[arg-type]
        _int(_get(d, "ir_version", "onnx."), "onnx.ir_version", 0, OPSET_BOUNDS[1], "the IR version"),  # type: ignore[arg-type]
        _int(_get(d, "nodes", "onnx."), "onnx.nodes", 0, MAX_COUNT, "the node count"),  # type: ignore[arg-type]
        _str_map(_get(d, "op_census", "onnx.", {}), "onnx.op_census", "count"),
        _bool(_get(d, "roll_free", "onnx."), "onnx.roll_free"),
        _str_map(_get(d, "trt_compatible", "onnx.", {}), "onnx.trt_compatible", "bool"),
        _obj(d.get("export", {}), "onnx.export", nullable=True))


def _profile(v: Any) -> dict[str, Any]:
    """An engine's optimization profile: three NCHW shapes, min <= opt <= max per dimension."""
    d = _obj(v, "engine.profile")
    out: dict[str, Any] = {"input": _str(_get(d, "input", "engine.profile."), "engine.profile.input", empty=False)}
    for k in ("min", "opt", "max"):
        shape = _get(d, k, "engine.profile.")
        where = f"engine.profile.{k}"
        if not (isinstance(shape, list) and len(shape) == 4):
            raise _bad(where, shape, "must be 4 whole numbers (N, 3, H, W)")
        hw_hi = 2 * MAX_IMAGE_SIDE  # a dynamic H/W profile reaches twice the export size
        out[k] = [_int(x, f"{where}[{i}]", lo, hi, "a dimension") for i, (x, lo, hi) in
                  enumerate(zip(shape, (1, 3, MIN_IMAGE_SIDE, MIN_IMAGE_SIDE), (MAX_BATCH, 3, hw_hi, hw_hi)))]
    if not all(a <= b <= c for a, b, c in zip(out["min"], out["opt"], out["max"])):
        raise _bad("engine.profile", [out["min"], out["opt"], out["max"]], "must satisfy min <= opt <= max")
    return out


def _engine(v: Any) -> EngineInfo | None:
    if v is None:
        return None
    d = _obj(v, "engine")
    gpu = _obj(_get(d, "gpu", "engine."), "engine.gpu")
    for k in ("name", "compute_capability"):
        if k in gpu:
            _str(gpu[k], f"engine.gpu.{k}", nullable=True)
    options = _obj(_get(d, "build_options", "engine."), "engine.build_options")
    return EngineInfo(
        _str(_get(d, "trt_version", "engine."), "engine.trt_version"),  # type: ignore[arg-type]
        gpu, _profile(_get(d, "profile", "engine.")), options,
        _str_map(_get(d, "source_onnx", "engine."), "engine.source_onnx"),
        _bool(d.get("tf32", False), "engine.tf32"), _obj(d.get("build", {}), "engine.build", nullable=True),
        _str(d.get("trtexec", ""), "engine.trtexec", MAX_TEXT))  # type: ignore[arg-type]


def _quant(v: Any) -> QuantInfo | None:
    if v is None:
        return None
    d = _obj(v, "quant")

    def text(key: str, default: Any = _MISSING) -> str:
        return _str(_get(d, key, "quant.", default), f"quant.{key}")  # type: ignore[return-value]

    ops = _get(d, "ops", "quant.")
    if not isinstance(ops, list):
        raise _bad("quant.ops", ops, "must be a list of operator names")
    calib = _obj(_get(d, "calibration", "quant."), "quant.calibration")
    if "images" in calib:
        _int(calib["images"], "quant.calibration.images", 0, MAX_COUNT, "the image count", nullable=True)
    _sha256(calib.get("sha256"), "quant.calibration.sha256")
    _str(calib.get("method"), "quant.calibration.method", nullable=True)
    return QuantInfo(text("form"), text("activations"), text("weights"),
                     [_str(o, f"quant.ops[{i}]", empty=False) for i, o in enumerate(ops)],  # type: ignore[misc]
                     text("quantizer"), text("quantizer_version"), calib,
                     _str_map(d.get("source_onnx", {}), "quant.source_onnx"),
                     _obj(d.get("qdq", {}), "quant.qdq", nullable=True), text("runs_best_in", ""))


def _checked(d: dict[str, Any]) -> Manifest:
    """The typed manifest of a schema-2 dict, each field checked for type and bounds."""
    kind = _str(_get(d, "kind", ""), "kind", choices=KINDS, what="the kind")
    engine = _engine(d.get("engine"))
    if kind == PLAN_KIND and engine is None:
        raise ArtifactError("is of kind 'trt' but describes no TensorRT engine (its \"engine\" section is "
                            "missing); rebuild it with twins-export --fmt trt")
    validation = d.get("validation")
    if validation is not None:
        if not isinstance(validation, dict):
            raise _bad("validation", validation, "validation must be an object or null")
        if "passed" in validation:
            _bool(validation["passed"], "validation.passed")
    precision = d.get("precision")
    if precision is not None:
        _str(precision, "precision", choices=PRECISIONS, what="precision")
    tools = d.get("tools")
    tools = {} if tools is None else _str_map(tools, "tools", "str?")
    return Manifest(
        kind=kind, artifact=_str(_get(d, "artifact", ""), "artifact", MAX_PATH),
        model=_model(_get(d, "model", "")), weights=_weights(_get(d, "weights", "")),
        spec=_spec(_get(d, "spec", "")), plan=_plan(_get(d, "precision_plan", "")), input=_input(_get(d, "input", "")),
        outputs=_outputs(_get(d, "outputs", "")), preprocess=_preprocess(_get(d, "preprocess", "")), tools=tools,
        created=_str(d.get("created", ""), "created"), sha256=_sha256(d.get("sha256"), "sha256"),
        size_bytes=_int(d.get("size_bytes"), "size_bytes", 0, MAX_FILE_BYTES, "the size", nullable=True),
        onnx=_onnx(d.get("onnx")), engine=engine, validation=validation, quant=_quant(d.get("quant")),
        schema=SCHEMA,
    )


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
    if why := hash_mismatch(path, existing.sha256):
        return None, f"its file differs from its manifest ({why})"
    if existing.passed is False or (require_validated and not existing.passed):
        return None, "it did not pass validation" if existing.passed is False else "it was never validated"
    return existing, ""


def read_manifest(artifact: str | os.PathLike[str]) -> Manifest:
    """Read and check the manifest beside ``artifact``; any defect is one clear line."""
    art = existing_file(artifact, "artifact")
    mp = manifest_path(art)
    if path_kind(mp) == "missing":
        raise ArtifactError(f"no manifest {quoted(str(mp))} beside {quoted(art.name)}; twins-deploy artifacts are "
                            "written with one (re-export with twins-export)")
    try:
        return Manifest.from_dict(_read_json(mp))
    except ArtifactError as e:
        raise ArtifactError(f"manifest {quoted(str(mp))}: {e}") from None


def _read_json(mp: Path) -> Any:
    """The JSON document in ``mp``, read only when it is a file of a manifest's size: a FIFO
    is never opened (it would block), a 100 GB file never read, a deep nesting never parsed
    into a RecursionError traceback."""
    raw = read_bounded(mp, MAX_MANIFEST_BYTES, "a manifest is a few KiB")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ArtifactError(f"is not valid JSON: not UTF-8 text (byte {e.start})") from None
    except RecursionError:
        raise ArtifactError(f"is not a twins-deploy manifest: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:  # JSONDecodeError, or an integer of more digits than Python converts
        raise ArtifactError(f"is not valid JSON: {str(e)[:200]}") from None
