"""``twins-export``: a Twins model -> validated ONNX (and TensorRT engine) + manifest."""
from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from twins_deploy.bench.machine import int8_cpu_warning
from twins_deploy.cli.common import (
    Parser,
    add_batch_args,
    add_threshold_args,
    add_trt_args,
    batch_from_args,
    hw_arg,
    int_list,
    number,
    positive_int,
    run_cli,
    thresholds_from_args,
    trt_options_from_args,
)
from twins_deploy.exporters.spec import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, ExportSpec
from twins_deploy.exporters.int8 import (
    CALIB_METHODS,
    DEFAULT_CALIB_COUNT,
    DEFAULT_CALIB_METHOD,
    MIN_CALIB_IMAGES,
    RECOMMENDED_CALIB_IMAGES,
)
from twins_deploy.pipeline import ArtifactRequest, CalibRequest, WeightsRequest, make_artifacts
from twins_deploy.precision import PRECISIONS
from twins_deploy.progress import Steps
from twins_deploy.registry import list_models, resolve_name
from twins_deploy.serving.triton_repo import DEFAULT_QUEUE_DELAY_US, DEVICES, TritonRepoOptions

EPILOG = """\
examples:
  twins-export --model svt_s                      # FP32 ONNX, dynamic batch 1..32, validated
  twins-export --model svt_s --precision fp16     # mixed FP16 ONNX (LayerNorm in FP32)
  twins-export --model svt_s --fmt trt --precision fp16   # + TensorRT engine (GPU + TensorRT)
  twins-export --model svt_s --weights w.safetensors --precision int8 --calib calib_images/ --images eval_images/
                                                  # INT8 Q/DQ graphs: -s8s8 (TensorRT, OpenVINO), -u8s8 (ONNX Runtime)
  twins-export --model pcpvt_b --weights twins_pcpvt_base.safetensors --images photos/
  twins-export --model svt_s --features --dynamic-hw --img-size 512   # detection backbone
  twins-export --model svt_s --triton-repo repo   # + repo/svt_s_fp32/{config.pbtxt,1/model.onnx}; twins-serve repo

Outputs land in --out-dir as <model>_<precision>[...].onnx with <file>.json beside it (the
manifest: weights and their sha256, input spec, preprocessing, tool versions, validation).
Without --weights/--pretrained the model gets seeded random weights, labelled as such:
fine for parity and speed, meaningless for accuracy. An artifact already in --out-dir
that was made from the same inputs (and validated as this run would validate it) is reused;
one that differs is refused unless --force (which re-exports). Exit codes: 0 ok,
1 validation failed (report kept), 2 bad input, 3 missing backend (TensorRT, GPU),
130 interrupted by Ctrl-C, 143 by SIGTERM (128 + the signal number for other signals);
an interrupted run leaves nothing half-written.
"""


def build_parser() -> argparse.ArgumentParser:
    p = Parser("twins-export", __doc__, EPILOG)
    p.add_argument("--model", required=True,
                   help=f"variant: {', '.join(list_models())}, or a timm name such as twins_svt_small")
    p.add_argument("--fmt", choices=("onnx", "trt"), default="onnx",
                   help="onnx: ONNX model; trt: ONNX model then a TensorRT engine (default: %(default)s)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp16 writes a mixed FP16 ONNX (LayerNorm FP32, FP32 I/O); int8 quantizes the FP32 graph "
                        "with explicit Q/DQ after calibrating on --calib images (default: %(default)s)")
    p.add_argument("--io-fp16", action="store_true", help="with fp16: make the graph's input/outputs FP16 too")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--weights", metavar="PATH",
                   help="checkpoint (.safetensors/.pth/.pt/.bin; timm, official or wrapped)")
    w.add_argument("--pretrained", action="store_true",
                   help="download timm's ImageNet weights (timm/<name>.in1k) via huggingface_hub")
    p.add_argument("--num-classes", type=number(int, 1, 100_000), default=1000,
                   help="classifier size, >= 1 (default: %(default)s; --features for backbone outputs)")
    p.add_argument("--reset-head", action="store_true",
                   help="accept a checkpoint whose head has another number of classes; re-initialise the head")
    p.add_argument("--seed", type=number(int, 0, 2**32 - 1), default=0,
                   help="seed of the random weights used without --weights, 0..2^32-1 (default: %(default)s)")
    p.add_argument("--img-size", type=hw_arg, default=(224, 224), metavar="N|HxW",
                   help="export image size (default: 224)")
    add_batch_args(p)
    p.add_argument("--dynamic-hw", action="store_true",
                   help="make H and W dynamic too (window pads computed in the graph)")
    p.add_argument("--features", action="store_true",
                   help="backbone mode: outputs stage1..stage4 NCHW maps (strides 4/8/16/32) instead of logits")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset, {MIN_OPSET}..{MAX_OPSET} (default: %(default)s, the newest TensorRT 8.6 parses)")
    p.add_argument("--out-dir", type=Path, default=Path("twins_out"), help="output directory (default: %(default)s)")
    p.add_argument("--images", metavar="DIR", help="also validate on the photographs in DIR (jpg/png/...)")
    p.add_argument("--no-validate", action="store_true", help="skip validation against PyTorch")
    add_threshold_args(p)
    add_calib_args(p)
    p.add_argument("--force", action="store_true", help="overwrite existing artifacts")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.add_argument("-v", "--verbose", action="store_true", help="full tracebacks on errors")
    add_trt_args(p)
    add_triton_args(p)
    return p


def add_calib_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("INT8 calibration (--precision int8)")
    g.add_argument("--calib", metavar="DIR",
                   help=f"images to calibrate INT8 on (representative of what the model will see, preprocessed "
                        f"like validation); at least {MIN_CALIB_IMAGES}, >= {RECOMMENDED_CALIB_IMAGES} recommended; "
                        "never the --images that judge it")
    g.add_argument("--calib-count", type=number(int, MIN_CALIB_IMAGES, 100_000), default=DEFAULT_CALIB_COUNT,
                   metavar="N", help="use N of the images, spread evenly over the sorted files (default: %(default)s)")
    g.add_argument("--calib-method", choices=CALIB_METHODS, default=DEFAULT_CALIB_METHOD,
                   help="how each tensor's range is taken from the images (default: %(default)s)")


def calib_from_args(args: argparse.Namespace) -> CalibRequest | None:
    if args.calib is None:
        return None
    return CalibRequest(args.calib, args.calib_count, args.calib_method)


def add_triton_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Triton Inference Server model repository (--triton-repo)")
    g.add_argument("--triton-repo", type=Path, metavar="REPO",
                   help="also write REPO/<name>/config.pbtxt and REPO/<name>/1/model.onnx|model.plan (+ manifest)")
    g.add_argument("--triton-name", metavar="NAME", help="model name in the repository (default: the artifact's stem)")
    g.add_argument("--triton-instances", type=positive_int, default=1, metavar="N",
                   help="instance_group count (default: %(default)s)")
    g.add_argument("--triton-device", choices=DEVICES, default="auto",
                   help="instance kind: plans always run on the GPU; ONNX on the CPU unless 'gpu' (default: %(default)s)")
    g.add_argument("--triton-preferred-batch", type=int_list, metavar="N[,N...]",
                   help="dynamic batching's preferred batch sizes (default: the batch range's opt and max)")
    g.add_argument("--triton-queue-delay-us", type=number(int, 0, 10_000_000), default=DEFAULT_QUEUE_DELAY_US,
                   metavar="US",
                   help="dynamic batching's max queue delay in microseconds (default: %(default)s)")
    g.add_argument("--triton-ort-trt", action="store_true",
                   help="ONNX on a GPU: run through ONNX Runtime's TensorRT execution accelerator")


def triton_options_from_args(args: argparse.Namespace) -> TritonRepoOptions | None:
    if args.triton_repo is None:
        return None
    return TritonRepoOptions(
        repo=args.triton_repo, name=args.triton_name, instances=args.triton_instances, device=args.triton_device,
        preferred_batch=tuple(args.triton_preferred_batch) if args.triton_preferred_batch else None,
        queue_delay_us=args.triton_queue_delay_us, ort_trt=args.triton_ort_trt)


def request_from_args(args: argparse.Namespace) -> ArtifactRequest:
    spec = ExportSpec(model=resolve_name(args.model), img_size=args.img_size, batch=batch_from_args(args),
                      dynamic_hw=args.dynamic_hw, features=args.features, opset=args.opset)
    return ArtifactRequest(
        spec=spec, precision=args.precision, io_fp16=args.io_fp16, fmt=args.fmt,
        trt=trt_options_from_args(args),
        weights=WeightsRequest(args.weights, args.pretrained, args.reset_head, args.num_classes, args.seed),
        out_dir=args.out_dir, on_existing="overwrite" if args.force else "refuse",
        validate=not args.no_validate, images=args.images, thresholds=thresholds_from_args(args),
        triton=triton_options_from_args(args), calib=calib_from_args(args),
    )


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        req = request_from_args(args)
    except ValueError as e:  # spec and option constraints (opset, batch range, workspace)
        parser.error(str(e))
    if req.precision == "int8":
        warning = int8_cpu_warning()
        if warning:
            print(warning, file=sys.stderr, flush=True)
    arts = make_artifacts(req, progress=functools.partial(Steps, quiet=args.quiet))
    final = arts.final
    val = final.manifest.validation
    status = "not validated" if val is None else val["summary"]
    print(f"{final.path}\n{final.path}.json")
    if arts.triton_entry is not None:
        print(f"{arts.triton_entry}/")
    print(status)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
