"""PyTorch -> ONNX with the TorchScript exporter, then simplification proven equal.

Exporter choice, on evidence (torch 2.15, onnxruntime 1.31, svt_s, 2-core CPU):
the dynamo exporter (opset 18) gives a clean graph, but ONNX Runtime does not fuse its
GELU (18 ``Erf`` chains stay after ORT_ENABLE_ALL), while the TorchScript exporter's
graph gets 18 ``BiasGelu`` fusions. The TorchScript graph's only drawback, shape
arithmetic, disappears here because a static-H/W export traces the stage sizes as
constants (``Twins.static_hw``); after onnxslim the svt_s graph is 695 nodes with no
Shape/Pad ops, against 720 for dynamo + onnxslim. So: ``dynamo=False``.

Tracing must not freeze anything: a ``TracerWarning`` means a Python branch saw a
tensor, so it is turned into an error instead of a silently wrong graph.
"""
from __future__ import annotations

import contextlib
import io
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from twins_deploy.errors import ExportError
from twins_deploy.exporters.fp16 import to_mixed_fp16
from twins_deploy.exporters.spec import INPUT_NAME, LOGITS_NAME, ExportSpec
from twins_deploy.precision import PrecisionPlan
from twins_deploy.twins import Twins

SIMPLIFY_ATOL = 1e-5  # relative to max |output|; reordering float ops stays far below


@dataclass
class ExportInfo:
    """What happened during export; goes into the manifest."""

    exporter: str = "torch.onnx (TorchScript, dynamo=False)"
    export_seconds: float = 0.0
    nodes_exported: int = 0
    nodes_final: int = 0
    simplifier: str | None = None
    simplify_max_abs_diff: float | None = None
    simplify_note: str = ""
    fp16: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@contextlib.contextmanager
def export_mode(model: Twins, spec: ExportSpec) -> Iterator[Twins]:
    """Explicit attention, and static stage sizes unless H/W are dynamic; restored after."""
    prev_impl, prev_hw = model.attn_impl, model.static_hw
    model.set_attention_impl("explicit")
    model.static_hw = None if spec.dynamic_hw else spec.img_size
    try:
        yield model
    finally:
        model.set_attention_impl(prev_impl)
        model.static_hw = prev_hw


def trace_to_onnx(model: Twins, spec: ExportSpec) -> "onnx.ModelProto":  # noqa: F821
    """Trace ``model`` into an ONNX ModelProto following ``spec`` (FP32)."""

    batch = 2 if spec.batch.dynamic else spec.batch.min  # 2: a batch of 1 invites specialisation
    sample = torch.randn(batch, 3, *spec.img_size)
    buf = io.BytesIO()
    with export_mode(model, spec), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        # torch notes that strided Slices are not folded; onnxslim folds them afterwards
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        try:
            torch.onnx.export(
                model, (sample,), buf, dynamo=False, opset_version=spec.opset,
                input_names=[INPUT_NAME], output_names=spec.output_names,
                dynamic_axes=spec.dynamic_axes() or None, do_constant_folding=True,
            )
        except torch.jit.TracerWarning as w:
            raise ExportError(f"tracing would freeze a shape-dependent branch: {w}") from None
        except Exception as e:  # the exporter raises many types; all are export failures
            raise ExportError(f"torch.onnx.export failed: {type(e).__name__}: {e}") from e
    return onnx.load_from_string(buf.getvalue())


def trace_plain_onnx(model: torch.nn.Module, hw: tuple[int, int], opset: int = 17) -> "onnx.ModelProto":  # noqa: F821
    """timm's own export recipe (TorchScript exporter, opset 17, dynamic batch), for models
    that are not ours: Swin-T in the benchmark, timm's Twins in the graph comparison."""

    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (torch.randn(2, 3, *hw),), buf, dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[LOGITS_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, LOGITS_NAME: {0: "batch"}})
        except Exception as e:  # the exporter raises many types; all are export failures
            raise ExportError(f"torch.onnx.export failed: {type(e).__name__}: {e}") from e
    return onnx.load_from_string(buf.getvalue())


def ort_session(model: "onnx.ModelProto | str | Path", threads: int | None = None):  # noqa: F821
    """A CPU ONNX Runtime session, with graph optimisations on (as users run it)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    src = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def probe_inputs(spec: ExportSpec, seed: int = 0) -> list[np.ndarray]:
    """Inputs that exercise a graph's contract: opt batch, plus a padded size if dynamic H/W."""
    rng = np.random.default_rng(seed)
    sizes = [spec.img_size]
    if spec.dynamic_hw:
        sizes.append((spec.img_size[0] + 37, spec.img_size[1] + 13))
    b = min(spec.batch.opt, 2) if spec.batch.dynamic else spec.batch.min
    return [rng.standard_normal((b, 3, *hw), dtype=np.float32) for hw in sizes]


def max_output_diff(a: "onnx.ModelProto", b: "onnx.ModelProto", inputs: list[np.ndarray]) -> float:  # noqa: F821
    """Largest |a - b| over all outputs and inputs, relative to max |a| (>= 1)."""
    sa, sb = ort_session(a), ort_session(b)
    worst = 0.0
    for x in inputs:
        for ya, yb in zip(sa.run(None, {INPUT_NAME: x}), sb.run(None, {INPUT_NAME: x})):
            scale = max(1.0, float(np.abs(ya).max()))
            worst = max(worst, float(np.abs(ya.astype(np.float64) - yb).max()) / scale)
    return worst


def simplify(model: "onnx.ModelProto", spec: ExportSpec, info: ExportInfo) -> "onnx.ModelProto":  # noqa: F821
    """onnxslim's constant folding and cleanup, kept only if smaller and proven equal."""
    try:
        import onnxslim
    except ImportError:
        info.simplify_note = "onnxslim not installed; graph kept as exported"
        return model
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            slim = onnxslim.slim(model)
    except Exception as e:  # a simplifier bug must not cost the user the export
        info.simplify_note = f"onnxslim failed ({type(e).__name__}: {e}); graph kept as exported"
        return model
    info.simplifier = f"onnxslim {getattr(onnxslim, '__version__', '?')}"
    diff = max_output_diff(model, slim, probe_inputs(spec))
    info.simplify_max_abs_diff = diff
    if diff > SIMPLIFY_ATOL:
        info.simplify_note = f"simplified graph differs by {diff:.3g}; kept the exported graph"
        return model
    if len(slim.graph.node) >= len(model.graph.node):
        info.simplify_note = "simplification did not shrink the graph; kept the exported graph"
        return model
    info.simplify_note = f"{len(model.graph.node)} -> {len(slim.graph.node)} nodes, proven equal"
    return slim


def pin_fixed_batch(model: "onnx.ModelProto", spec: ExportSpec) -> None:  # noqa: F821
    """State a fixed batch on every output, as it is on the input.

    With dynamic H/W the tracer routes the batch through shape arithmetic, and the output
    comes out with a symbolic first dimension (``Gemmlogits_dim_0``) although the input's
    batch is fixed; readers of the graph (Triton's config check, TensorRT's output
    allocation) would then see a dynamic batch the artifact does not have."""
    if spec.batch.dynamic:
        return
    for out in model.graph.output:
        dims = out.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_value = spec.batch.min


def check_graph(model: "onnx.ModelProto") -> "onnx.ModelProto":  # noqa: F821
    """onnx.checker (full), then the stored shape information recomputed from scratch.

    The exporter's value_info is partly stale: with dynamic H/W it declares symbolic channel
    dimensions where they are fixed (``Transposestage1_dim_1`` for svt_s's 64) and leaves
    LayerNorm inputs without a last dimension. Consumers that read shapes statically
    (TensorRT's parser, OpenVINO, onnx2torch) deserve concrete ones, so value_info is
    cleared and strict shape inference with data propagation rebuilds it.
    """

    try:
        onnx.checker.check_model(model, full_check=True)
        del model.graph.value_info[:]
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"exported graph fails the ONNX checker: {e}") from None


def export_onnx(model: torch.nn.Module, spec: ExportSpec,
                plan: PrecisionPlan = PrecisionPlan()) -> tuple["onnx.ModelProto", ExportInfo]:  # noqa: F821
    """The whole ONNX export of ``spec`` in the plan's graph precision, returned in memory
    (the caller writes it). Models other than ours (the benchmark's Swin-T) are traced
    with timm's recipe instead, then simplified, converted and checked the same way."""

    info = ExportInfo()
    t0 = time.perf_counter()
    if isinstance(model, Twins):
        graph = trace_to_onnx(model, spec)
    else:
        info.exporter = "torch.onnx (TorchScript, dynamo=False), timm's recipe"
        graph = trace_plain_onnx(model, spec.img_size, spec.opset)
    info.export_seconds = round(time.perf_counter() - t0, 2)
    info.nodes_exported = len(graph.graph.node)
    graph = simplify(graph, spec, info)
    if plan.graph == "fp16":
        graph = to_mixed_fp16(graph, keep_io_types=not plan.io_fp16, info=info.fp16)
    pin_fixed_batch(graph, spec)
    graph = check_graph(graph)
    info.nodes_final = len(graph.graph.node)
    return graph, info
