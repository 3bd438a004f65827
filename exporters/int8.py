"""INT8 with explicit Q/DQ: one calibration on the user's images, then the graph each runtime
runs fastest.

The quantizer is ONNX Runtime's (``onnxruntime.quantization.quantize_static``, QDQ format),
chosen on evidence (docs/int8.md): it ships with the ``onnxruntime`` this package already
needs, calibrates on the CPU, keeps the graph at its opset (17: what TensorRT 8.6 parses),
and writes both forms below from one calibration (its calibration cache). NVIDIA's Model
Optimizer wraps this same call for TensorRT but always raises the graph to opset 19 and pins
``onnxruntime-gpu``, which cannot sit beside the CPU ``onnxruntime``; NNCF's ONNX output has
non-zero activation zero points, which TensorRT rejects.

The forms (measured on Twins-SVT-S 224, batch 8, 2 threads, AVX-512 VNNI; docs/int8.md):

* ``s8s8``: signed INT8 activations with zero points 0, per tensor; weights symmetric
  per channel. TensorRT's explicit-quantization rules (symmetric, signed, activation scales
  per tensor) and the form OpenVINO ran fastest (its FP32 graph x2.2-2.5). As NVIDIA's Model
  Optimizer writes it for TensorRT: FP32 weights behind a Q/DQ pair (TensorRT folds it) and
  biases left in FP32 (TensorRT has no INT32 DequantizeLinear).
* ``u8s8``: unsigned activations (asymmetric), signed per-channel weights. ONNX Runtime's
  CPU provider fuses every quantized Conv and MatMul of this form only; on the S8S8 form it
  leaves some in float and runs slower.

Only Conv, MatMul and Gemm are quantized; LayerNorm, Softmax, GELU and the residual adds stay
in FP32 (quantizing the adds as well ran slower in both runtimes, measured). Calibration
takes the ranges (min/max) of every tensor over the images, never random data.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from twins_deploy.errors import ExportError, InputShapeError, OptionError, quoted
from twins_deploy.preprocess import check_images, image_files, preprocess_image
from twins_deploy.progress import quiet_logger
from twins_deploy.registry import Preprocess

QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
CALIB_METHODS = ("minmax", "entropy", "percentile")
DEFAULT_CALIB_METHOD = "minmax"
DEFAULT_CALIB_COUNT = 256  # images used from --calib (evenly spread over the sorted files)
MIN_CALIB_IMAGES = 32      # fewer is refused: ranges from a handful of images clip real ones
RECOMMENDED_CALIB_IMAGES = 128  # fewer is allowed with a warning (NNCF's default is 300)
CALIB_BATCH = 8            # images per calibration run (bounded memory: ranges merge per batch)


@dataclass(frozen=True)
class Int8Form:
    """One Q/DQ layout of the same calibration."""

    name: str
    activations: str        # "int8" (signed) | "uint8"
    symmetric_activations: bool
    for_runtimes: str       # who runs it best, for help texts and the docs
    tensorrt_rules: bool = False  # FP32 weights behind Q/DQ, FP32 biases (Model Optimizer's options)

    def ort_options(self) -> dict[str, Any]:
        """``extra_options`` of ONNX Runtime's quantize_static for this form."""
        extra: dict[str, Any] = {"ActivationSymmetric": self.symmetric_activations, "WeightSymmetric": True}
        if self.tensorrt_rules:
            extra.update(QuantizeBias=False, AddQDQPairToWeight=True, DedicatedQDQPair=False)
        return extra

    def describe(self) -> dict[str, Any]:
        return {"form": self.name, "activations": f"{self.activations} per tensor, "
                + ("symmetric (zero point 0)" if self.symmetric_activations else "asymmetric"),
                "weights": "int8 symmetric per channel (zero point 0)", "for": self.for_runtimes}


FORMS: dict[str, Int8Form] = {f.name: f for f in (
    Int8Form("s8s8", "int8", True, "TensorRT 8.6/10/11 (explicit quantization) and OpenVINO", tensorrt_rules=True),
    Int8Form("u8s8", "uint8", False, "ONNX Runtime on the CPU"),
)}
TRT_FORM = "s8s8"  # TensorRT rejects UINT8 Q/DQ and non-zero zero points


@dataclass(frozen=True)
class CalibrationSet:
    """The images calibration reads: which files, and a hash of their content."""

    folder: str
    files: tuple[Path, ...]
    sha256: str     # over the files' contents, in order: the identity of the calibration
    available: int  # images in the folder

    def to_dict(self) -> dict[str, Any]:
        return {"folder": self.folder, "images": len(self.files), "available": self.available, "sha256": self.sha256}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def calibration_set(folder: str | os.PathLike[str], count: int = DEFAULT_CALIB_COUNT,
                    evaluation: str | os.PathLike[str] | None = None) -> CalibrationSet:
    """The calibration images of ``folder``: ``count`` of them spread evenly over the sorted
    files, each proven to decode. Refuses fewer than :data:`MIN_CALIB_IMAGES` and any image
    whose content is also in the ``evaluation`` folder (``--images``): images a model was
    calibrated on say nothing about its accuracy."""
    if count < MIN_CALIB_IMAGES:
        raise OptionError(f"--calib-count must be >= {MIN_CALIB_IMAGES}, got {count}")
    files = image_files(folder, what="--calib")  # kinds only: nothing opened yet
    if len(files) < MIN_CALIB_IMAGES:
        raise InputShapeError(f"--calib {quoted(str(folder))} has {len(files)} images; calibration needs at least "
                              f"{MIN_CALIB_IMAGES} (recommended >= {RECOMMENDED_CALIB_IMAGES}) representative images")
    picked = files if len(files) <= count else [files[int(i)] for i in np.linspace(0, len(files) - 1, count)]
    check_images(picked)  # each image calibration reads, decoded in full: a bad one fails now, not mid-calibration
    digests = [_sha256(f) for f in picked]
    if evaluation is not None:
        shared = set(digests) & {_sha256(f) for f in image_files(evaluation, what="--images")}
        if shared:
            raise InputShapeError(
                f"{len(shared)} of the {len(picked)} calibration images are also in "
                f"--images {quoted(str(evaluation))}: "
                "calibration and evaluation images must differ (accuracy measured on calibration images "
                "flatters the INT8 model)")
    total = hashlib.sha256("".join(digests).encode()).hexdigest()
    return CalibrationSet(str(folder), tuple(picked), total, len(files))


class _Reader:
    """ONNX Runtime's CalibrationDataReader over the calibration images, one batch an item
    (preprocessed exactly as validation and twins-predict prepare images). It has the length
    and ``set_range`` of ORT's strided calibration: ranges are merged after every item, so
    memory holds one batch's tensors, not every image's (ORT's ``CalibMaxIntermediateOutputs``
    drops the collected tensors without merging them, onnxruntime 1.32)."""

    def __init__(self, calib: CalibrationSet, input_name: str, hw: tuple[int, int], pre: Preprocess,
                 batch: int) -> None:
        self.calib, self.input_name, self.hw, self.pre, self.batch = calib, input_name, hw, pre, batch
        self.items = -(-len(calib.files) // batch)
        self.position, self.end = 0, self.items

    def __len__(self) -> int:
        return self.items

    def set_range(self, start_index: int, end_index: int) -> None:
        self.position, self.end = start_index, min(end_index, self.items)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= self.end:
            return None
        files = self.calib.files[self.position * self.batch:(self.position + 1) * self.batch]
        self.position += 1
        x = np.concatenate([preprocess_image(f, self.hw, self.pre) for f in files])
        if len(x) < self.batch:  # a fixed-batch graph takes only full batches: fill with the first images
            x = np.concatenate([x, np.resize(x, (self.batch - len(x), *x.shape[1:]))])
        return {self.input_name: x}


@dataclass
class Calibration:
    """One calibration of one FP32 graph: the graph prepared for quantization and the tensor
    ranges, both in a private folder, from which every form is written."""

    workdir: Path
    prepared: Path
    cache: Path
    method: str
    calib: CalibrationSet

    def to_dict(self) -> dict[str, Any]:
        return {**self.calib.to_dict(), "method": self.method}


def _ort_method(method: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    if method not in CALIB_METHODS:
        raise OptionError(f"calibration method must be one of {', '.join(CALIB_METHODS)}, got {quoted(method)}")
    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[method]


@contextlib.contextmanager
def calibrated(fp32_onnx: Path, calib: CalibrationSet, pre: Preprocess, hw: tuple[int, int], batch: int | None,
               method: str = DEFAULT_CALIB_METHOD) -> Iterator[Calibration]:
    """Prepare ``fp32_onnx`` (ONNX Runtime's pre-processing: shape inference, so every tensor
    gets a range) and calibrate it once on ``calib``; the folder is removed on exit.
    ``batch``: the graph's fixed batch, or None when the batch is dynamic."""
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="twins-int8-") as tmp:
        work = Path(tmp)
        prepared, cache = work / "prepared.onnx", work / "ranges.json"
        try:
            with quiet_logger():  # ONNX Runtime's quantizer logs every choice through the root logger
                quant_pre_process(str(fp32_onnx), str(prepared))
                # the ranges are what is kept (the cache); the graph this first call writes is not
                quantize_static(str(prepared), str(work / "first.onnx"),
                                _Reader(calib, _input_name(prepared), hw, pre, batch or CALIB_BATCH),
                                op_types_to_quantize=list(QUANTIZED_OPS), calibrate_method=_ort_method(method),
                                calibration_cache_path=str(cache),
                                extra_options={"CalibStridedMinMax": 1})
        except (ValueError, RuntimeError, KeyError, TypeError) as e:  # ONNX Runtime's own refusals
            raise ExportError(f"INT8 calibration failed in ONNX Runtime's quantizer: {type(e).__name__}: {e}") from e
        yield Calibration(work, prepared, cache, method, calib)


def _input_name(path: Path) -> str:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    return next(i.name for i in model.graph.input if i.name not in inits)


def quantize(calibration: Calibration, form: str, out: Path) -> dict[str, Any]:
    """Write the ``form`` Q/DQ graph of ``calibration`` to ``out``; what the manifest records."""
    import onnxruntime
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    f = FORMS[form]
    try:
        with quiet_logger():  # ONNX Runtime's quantizer logs every choice through the root logger
            quantize_static(str(calibration.prepared), str(out), None, quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True, reduce_range=False,
                            activation_type=QuantType.QInt8 if f.activations == "int8" else QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=_ort_method(calibration.method),
                            calibration_cache_path=str(calibration.cache), extra_options=f.ort_options())
    except (ValueError, RuntimeError, KeyError, TypeError) as e:
        raise ExportError(f"INT8 quantization ({form}) failed in ONNX Runtime's quantizer: {type(e).__name__}: {e}") from e
    return {**f.describe(), "ops": list(QUANTIZED_OPS), "quantizer": "onnxruntime.quantization.quantize_static (QDQ)",
            "quantizer_version": onnxruntime.__version__, "calibration": calibration.to_dict()}


def qdq_facts(model: Any) -> dict[str, Any]:
    """What a Q/DQ graph holds, read from the graph itself (for the manifest and the checks
    TensorRT's rules need): Q/DQ counts, zero-point and scale types, activation types."""
    from onnx import TensorProto, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    zp_types, nonzero = set(), 0
    for n in q + dq:
        if len(n.input) > 2 and n.input[2] in inits:
            zp = inits[n.input[2]]
            zp_types.add(TensorProto.DataType.Name(zp.data_type))
            nonzero += int(np.any(numpy_helper.to_array(zp) != 0))
    return {"quantize_nodes": len(q), "dequantize_nodes": len(dq), "zero_point_types": sorted(zp_types),
            "nonzero_zero_points": nonzero}

