"""Inspect an ONNX graph: census, I/O, size, roll-free and TensorRT-compatible verdicts."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx

from twins_deploy.artifacts import existing_file
from twins_deploy.errors import ArtifactError, quoted
from twins_deploy.exporters.trt_ops import PROFILES

_FLOATS = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16 (onnx.TensorProto)


@dataclass
class TrtVerdict:
    version: str
    compatible: bool
    problems: list[str] = field(default_factory=list)


@dataclass
class GraphReport:
    path: str
    ir_version: int
    opset: int
    producer: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    num_nodes: int
    op_census: dict[str, int]
    num_params: int
    param_bytes: int
    param_dtypes: dict[str, int]
    roll_free: bool
    roll_findings: list[str]
    trt: list[TrtVerdict]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _load(model: Any) -> Any:

    if isinstance(model, (str, os.PathLike)):
        p = existing_file(model, "ONNX file")
        try:
            m = onnx.load(str(p))
        except Exception as e:  # protobuf DecodeError and friends
            raise ArtifactError(f"{quoted(str(p))} is not a readable ONNX model: {e}") from None
        if not m.graph.node or not m.opset_import:  # e.g. an empty file parses as an empty model
            raise ArtifactError(f"{quoted(str(p))} is not a readable ONNX model: it holds no graph "
                                f"({p.stat().st_size} bytes)")
        return m
    return model


def _value_info(vi: Any) -> dict[str, Any]:

    t = vi.type.tensor_type
    dims = [d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else "?")
            for d in t.shape.dim]
    return {"name": vi.name, "dtype": onnx.TensorProto.DataType.Name(t.elem_type).lower(),
            "shape": dims, "dynamic_axes": {i: d for i, d in enumerate(dims) if isinstance(d, str)}}


def _float_tensors(model: Any) -> set[str]:
    """Names of float-typed values (after shape inference), to tell data from shape math."""

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    g = inferred.graph
    names = {vi.name for vi in list(g.value_info) + list(g.input) + list(g.output)
             if vi.type.tensor_type.elem_type in _FLOATS}
    names |= {i.name for i in g.initializer if i.data_type in _FLOATS}
    return names


def roll_findings(model: Any) -> list[str]:
    """``Roll`` ops, and Concats fed by two Slices of one float tensor (torch.roll's lowering)."""
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    floats = _float_tensors(model)
    found = [f"{n.name or '?'}: op {n.op_type}" for n in g.node if n.op_type.lower() == "roll"]
    for n in g.node:
        if n.op_type != "Concat":
            continue
        sources = Counter(
            producer[i].input[0] for i in n.input
            if i in producer and producer[i].op_type == "Slice" and producer[i].input[0] in floats
        )
        for src, count in sources.items():
            if count >= 2:
                found.append(f"{n.name or '?'}: Concat of {count} Slices of {src!r} (a shift/roll)")
    return found


def _constant_names(model: Any) -> set[str]:
    g = model.graph
    return {i.name for i in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}


def trt_verdicts(model: Any, opset: int) -> list[TrtVerdict]:
    """Check every node and the opset against each TensorRT parser profile."""
    consts = _constant_names(model)
    out = []
    for prof in PROFILES:
        problems: list[str] = []
        if not prof.min_opset <= opset <= prof.max_opset:
            problems.append(f"opset {opset} outside {prof.min_opset}..{prof.max_opset}")
        for n in model.graph.node:
            label = f"{n.name or '?'} ({n.domain + '::' if n.domain else ''}{n.op_type})"
            if n.domain not in ("", "ai.onnx"):
                problems.append(f"{label}: custom-domain op needs a TensorRT plugin")
            elif n.op_type not in prof.ops:
                problems.append(f"{label}: not supported by the TensorRT {prof.label} ONNX parser")
            elif n.op_type == "Pad" and len(n.input) > 3 and n.input[3] and n.input[3] not in consts:
                problems.append(f"{label}: Pad 'axes' must be a constant")
            elif n.op_type == "LayerNormalization" and len([o for o in n.output if o]) > 1:
                problems.append(f"{label}: only LayerNormalization's first output is supported")
        out.append(TrtVerdict(prof.label, not problems, problems))
    return out


def inspect_onnx(model: Any) -> GraphReport:
    """Everything ``twins-inspect`` prints, from a path or a ModelProto."""

    path = str(model) if isinstance(model, (str, os.PathLike)) else "<in memory>"
    m = _load(model)
    g = m.graph
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 0)
    inits = list(g.initializer)
    # Weights are the non-scalar float tensors, in initializers or Constant nodes (some
    # exporters fold weights into them); int64 shape tensors and scalars are not.
    const_tensors = [a.t for n in g.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    weights = [t for t in inits + const_tensors if t.data_type in _FLOATS and len(t.dims) >= 1]
    n_params = sum(int(np.prod(t.dims)) for t in weights)
    nbytes = sum(onnx.numpy_helper.to_array(t).nbytes for t in inits + const_tensors)
    dtypes = Counter(onnx.TensorProto.DataType.Name(t.data_type).lower() for t in weights)
    roll = roll_findings(m)
    return GraphReport(
        path=path, ir_version=m.ir_version, opset=opset,
        producer=f"{m.producer_name} {m.producer_version}".strip(),
        inputs=[_value_info(v) for v in g.input if v.name not in {i.name for i in inits}],
        outputs=[_value_info(v) for v in g.output], num_nodes=len(g.node),
        op_census=dict(sorted(Counter(n.op_type for n in g.node).items(), key=lambda kv: (-kv[1], kv[0]))),
        num_params=n_params, param_bytes=nbytes, param_dtypes=dict(dtypes),
        roll_free=not roll, roll_findings=roll, trt=trt_verdicts(m, opset),
    )


def format_report(r: GraphReport, max_problems: int = 10) -> str:
    """Human-readable report for ``twins-inspect``."""
    lines = [f"{r.path}", f"  IR version {r.ir_version}, opset {r.opset}, producer {r.producer or '?'}"]
    for kind, vals in (("input", r.inputs), ("output", r.outputs)):
        for v in vals:
            dyn = f"  dynamic: {', '.join(f'{k}={d}' for k, d in v['dynamic_axes'].items())}" if v["dynamic_axes"] else ""
            lines.append(f"  {kind:<6} {v['name']}: {v['dtype']} {v['shape']}{dyn}")
    lines.append(f"  parameters: {r.num_params:,} (constants {r.param_bytes / 2**20:.1f} MiB; weights "
                 + ", ".join(f"{k} x{v}" for k, v in r.param_dtypes.items()) + ")")
    lines.append(f"  nodes: {r.num_nodes}")
    for op, n in r.op_census.items():
        lines.append(f"    {op:<24}{n:>6}")
    lines.append("  roll-free: " + ("yes (no Roll, no Slice+Slice+Concat shift)" if r.roll_free
                                    else "NO\n" + "\n".join(f"    {f}" for f in r.roll_findings)))
    for v in r.trt:
        if v.compatible:
            lines.append(f"  TensorRT {v.version}: compatible")
        else:
            lines.append(f"  TensorRT {v.version}: INCOMPATIBLE ({len(v.problems)} problems)")
            lines += [f"    {p}" for p in v.problems[:max_problems]]
            if len(v.problems) > max_problems:
                lines.append(f"    ... {len(v.problems) - max_problems} more")
    return "\n".join(lines)
