"""Mixed FP16 ONNX: the precision lives in the graph, as TensorRT 11 requires.

TensorRT 11 removed weak typing (``BuilderFlag.FP16``); a strongly typed network runs
exactly the types written in the ONNX file. So the FP16 artifact is an ONNX graph whose
weights and activations are FP16 except LayerNormalization, which computes in FP32
(FP16 LayerNorm after attention overflows: NVIDIA/TensorRT#2564), with FP32 graph
inputs/outputs by default so callers feed the same tensors as for FP32.

The conversion is onnxconverter-common's, a small pure-Python package, so FP16 graphs
are made on CPU-only machines (ModelOpt AutoCast pulls onnxruntime-gpu and cupy).
"""
from __future__ import annotations

import warnings
from collections import Counter
from typing import Any

from twins_deploy.errors import ExportError

FP32_OPS = ("LayerNormalization",)
FP16_MAX = 65504.0


def to_mixed_fp16(model: "onnx.ModelProto", keep_io_types: bool = True,  # noqa: F821
                  info: dict[str, Any] | None = None) -> "onnx.ModelProto":  # noqa: F821
    """Convert an FP32 graph to FP16 with :data:`FP32_OPS` kept in FP32."""
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise ExportError(
            "FP16 export needs onnxconverter-common: pip install onnxconverter-common"
        ) from None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = float16.convert_float_to_float16(
            model, keep_io_types=keep_io_types, op_block_list=list(FP32_OPS),
            min_positive_val=1e-7, max_finite_val=FP16_MAX,
        )
    ops = Counter(n.op_type for n in out.graph.node)
    if info is not None:
        info.update(
            converter="onnxconverter-common float16",
            fp32_ops=list(FP32_OPS),
            io="fp32" if keep_io_types else "fp16",
            cast_nodes=ops.get("Cast", 0),
            values_clamped_or_flushed=sum("truncated" in str(w.message) for w in caught),
        )
    return out
