"""What the TensorRT ONNX parser accepts, per major version, as data.

From onnx-tensorrt ``docs/operators.md`` (github.com/onnx/onnx-tensorrt, branches 8.6-GA,
10.1 and 10.15) and NVIDIA's ONNX opset guide for 11.x (docs.nvidia.com/deeplearning/
tensorrt/latest/reference/onnx-opset-guide.html). Ops not listed
for a version are reported as unsupported there; constraints that depend on a node's
inputs (e.g. Pad's ``axes`` must be constant) are checked in :mod:`inspect`. Each line's
opset cap is the documented one of its newest release (8.6: 17, onnx-tensorrt 8.6-GA
operators.md; 10.x: 24, "TensorRT 10.15 supports ... opset 9 to opset 24"; 11.x: 25, the
ONNX opset guide and the 11.5 release notes), with the older releases' caps in the note.
"""
from __future__ import annotations

from dataclasses import dataclass

# Default-domain ops every version from 8.6 parses (the union Twins/ViT graphs draw on,
# plus the common rest of the operator list).
_COMMON = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
Cast Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum
DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten
Floor GRU Gather GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
Greater GreaterOrEqual GridSample HardSigmoid HardSwish Hardmax Identity If
InstanceNormalization IsInf IsNaN LRN LSTM LayerNormalization LeakyRelu Less LessOrEqual
Log LogSoftmax Loop LpNormalization LpPool MatMul Max MaxPool Mean
MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or
PRelu Pad Pow QuantizeLinear RNN RandomNormal RandomNormalLike RandomUniform
RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp
ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize
ReverseSequence RoiAlign Round Scan ScatterElements ScatterND Selu Shape Shrink Sigmoid
Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum
Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())


@dataclass(frozen=True)
class TrtParserProfile:
    """One TensorRT line's ONNX parser: opset range and operator set."""

    label: str
    min_opset: int
    max_opset: int
    ops: frozenset[str]
    note: str = ""


PROFILES: tuple[TrtParserProfile, ...] = (
    TrtParserProfile("8.6", 9, 17, _COMMON,
                     "opset <= 17; no Gelu (opset 20); Einsum without ellipsis/broadcast"),
    TrtParserProfile("10.x", 9, 24, _COMMON | {"Gelu", "GroupNormalization", "DeformConv"},
                     "opset 9-24 on 10.15 and later (9-20 on 10.0-10.14); Attention (opset 23) from 10.14"),
    TrtParserProfile("11.x", 9, 24, _COMMON | {"Gelu", "GroupNormalization", "DeformConv",
                                                "Attention", "RMSNormalization"},
                     "opset 9-25 (NVIDIA's ONNX opset guide; opset 25 from 11.5); strongly typed: precision "
                     "comes from the graph"),
)
