"""What an export produces, as data: shapes, dynamic axes, names.

One :class:`ExportSpec` travels from the CLI through export, engine build and
validation, and is written into the manifest, so a later ``twins-validate`` or engine
build rebuilds exactly the same input contract. Precision is not part of it: it is
resolved once per export into a :class:`twins_deploy.precision.PrecisionPlan`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from twins_deploy.errors import InputShapeError, quoted
from twins_deploy.registry import MIN_IMAGE_SIDE

# A bound against typos (22400 for 224): stage-1 global attention scores (H/4*W/4) x (H/32*W/32)
# per head and image, 1.7e10 of them (69 GB in FP32) at 4096x4096 already.
MAX_IMAGE_SIDE = 4096
# Batch sizes beyond any GPU's memory for Twins at 224; catches typos such as 10000. One bound
# for the CLI's options and for every manifest read back.
MAX_BATCH = 4096
# Classifier widths: the largest public label sets (ImageNet-21k's 21,843, iNaturalist's 10,000)
# fit with room; 10**9 (a hostile manifest) would ask for a 512 x 10**9 head.
MAX_CLASSES = 100_000
# Elements of the input tensor at the largest batch: 2**31 - 1 is the largest volume a tensor
# has in TensorRT's and many ONNX Runtime kernels' int32 indexing, and 8 GiB of FP32 input
# before Twins' activations (several times larger) is beyond what one GPU holds anyway.
MAX_INPUT_ELEMENTS = 2**31 - 1

INPUT_NAME = "input"
LOGITS_NAME = "logits"
FEATURE_NAMES = ("stage1", "stage2", "stage3", "stage4")
# Opset 17: LayerNormalization is one node (TensorRT's INormalizationLayer, FP32-safe in
# FP16 engines) and it is the newest opset TensorRT 8.6's parser accepts.
DEFAULT_OPSET = 17
MIN_OPSET = 17
# The TorchScript exporter's newest opset; every TensorRT line's parser takes it except 8.6
# (17, see trt_ops.PROFILES: 10.x parses up to 24, 11.x up to 25).
MAX_OPSET = 20


def parse_hw(text: str | int) -> tuple[int, int]:
    """``224`` or ``256x320`` -> (H, W), refusing sizes the model cannot take."""
    s = str(text).lower().replace(" ", "")
    try:
        parts = [int(v) for v in s.split("x")] if "x" in s else [int(s), int(s)]
    except ValueError:
        raise InputShapeError(f"image size {quoted(text)} is not N or HxW (e.g. 224 or 256x320)") from None
    if len(parts) != 2:
        raise InputShapeError(f"image size {quoted(text)} is not N or HxW (e.g. 224 or 256x320)")
    return check_hw(*parts)


def check_hw(h: int, w: int) -> tuple[int, int]:
    """(H, W) as the model can take them: whole numbers within the sizes Twins supports."""
    if type(h) is not int or type(w) is not int:
        raise InputShapeError(f"image size must be two whole numbers, got {quoted(h, 60)}x{quoted(w, 60)}")
    if h < MIN_IMAGE_SIDE or w < MIN_IMAGE_SIDE:
        raise InputShapeError(
            f"image size {h}x{w} is impossible for Twins: H and W must be >= {MIN_IMAGE_SIDE}"
        )
    if h > MAX_IMAGE_SIDE or w > MAX_IMAGE_SIDE:
        raise InputShapeError(f"image size {h}x{w} is larger than {MAX_IMAGE_SIDE} on a side; "
                              "global attention at that size cannot fit in memory")
    return h, w


@dataclass(frozen=True)
class BatchRange:
    """Batch sizes an artifact accepts: fixed when min == opt == max."""

    min: int = 1
    opt: int = 8
    max: int = 32

    def __post_init__(self) -> None:
        if not all(type(v) is int for v in (self.min, self.opt, self.max)):
            raise InputShapeError(f"batch sizes must be whole numbers, got min={quoted(self.min, 60)} "
                                  f"opt={quoted(self.opt, 60)} max={quoted(self.max, 60)}")
        if not (1 <= self.min <= self.opt <= self.max):
            raise InputShapeError(
                f"batch range must satisfy 1 <= min <= opt <= max, got "
                f"min={self.min} opt={self.opt} max={self.max}"
            )
        if self.max > MAX_BATCH:
            raise InputShapeError(f"batch {self.max} is larger than {MAX_BATCH}, beyond any GPU's memory for Twins")

    @property
    def dynamic(self) -> bool:
        return self.min != self.max

    @classmethod
    def fixed(cls, n: int) -> BatchRange:
        return cls(n, n, n)

    def validation_batches(self) -> list[int]:
        """Batches to validate at: both ends of the range and the optimum."""
        return sorted({self.min, self.opt, self.max})

    def contains(self, n: int) -> bool:
        return self.min <= n <= self.max


@dataclass(frozen=True)
class ExportSpec:
    """The input/output contract of one export: model, sizes, batch range, outputs, opset."""

    model: str
    img_size: tuple[int, int] = (224, 224)
    batch: BatchRange = field(default_factory=BatchRange)
    dynamic_hw: bool = False
    features: bool = False
    opset: int = DEFAULT_OPSET

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise InputShapeError(f"model must be a name, got {quoted(self.model)}")
        if not (isinstance(self.img_size, tuple) and len(self.img_size) == 2):
            raise InputShapeError(f"image size must be (H, W), got {quoted(self.img_size)}")
        h, w = check_hw(*self.img_size)
        if not isinstance(self.batch, BatchRange):
            raise InputShapeError(f"batch must be a BatchRange, got {quoted(self.batch)}")
        if self.batch.max * 3 * h * w > MAX_INPUT_ELEMENTS:
            raise InputShapeError(
                f"an input of {self.batch.max}x3x{h}x{w} (batch max x image) has {self.batch.max * 3 * h * w:,} "
                f"elements, more than a tensor can hold ({MAX_INPUT_ELEMENTS:,}); lower the batch or the image size")
        if type(self.opset) is not int or not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise InputShapeError(
                f"opset {self.opset} is outside {MIN_OPSET}..{MAX_OPSET} (17 is the widest "
                "TensorRT support: 8.6 stops at 17)"
            )

    @property
    def output_names(self) -> list[str]:
        return list(FEATURE_NAMES) if self.features else [LOGITS_NAME]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        axes: dict[str, dict[int, str]] = {}
        inp: dict[int, str] = {}
        if self.batch.dynamic:
            inp[0] = "batch"
        if self.dynamic_hw:
            inp[2], inp[3] = "height", "width"
        if inp:
            axes[INPUT_NAME] = inp
        for name in self.output_names:
            out = {0: "batch"} if self.batch.dynamic else {}
            if self.dynamic_hw and self.features:
                out.update({2: f"{name}_h", 3: f"{name}_w"})
            if out:
                axes[name] = out
        return axes

    def stem(self, precision: str, io_fp16: bool = False) -> str:
        """File stem: ``svt_s_fp16``, plus suffixes for anything non-default."""
        parts = [self.model, precision]
        if self.features:
            parts.append("features")
        if self.img_size != (224, 224):
            parts.append(f"{self.img_size[0]}x{self.img_size[1]}")
        if self.dynamic_hw:
            parts.append("dynhw")
        if not self.batch.dynamic:
            parts.append(f"b{self.batch.min}")
        if io_fp16:
            parts.append("iofp16")
        return "_".join(parts)

    def input_shape(self) -> list[int | str]:
        return [
            "batch" if self.batch.dynamic else self.batch.min, 3,
            "height" if self.dynamic_hw else self.img_size[0],
            "width" if self.dynamic_hw else self.img_size[1],
        ]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["img_size"] = list(self.img_size)
        return d
