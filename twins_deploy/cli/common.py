"""What every console script shares: argument types and one-line error handling."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from twins_deploy.engines.trt.options import HW_COMPAT_LEVELS, TrtBuildOptions, default_timing_cache
from twins_deploy.errors import TwinsDeployError
from twins_deploy.exporters.spec import BatchRange, parse_hw


def hw_arg(text: str) -> tuple[int, int]:
    try:
        return parse_hw(text)
    except TwinsDeployError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v} must be >= 1")
    return v


def int_list(text: str) -> list[int]:
    return [positive_int(t) for t in text.split(",") if t.strip()]


def add_batch_args(p: argparse.ArgumentParser, defaults: BatchRange = BatchRange()) -> None:
    g = p.add_argument_group("batch (default: dynamic batch)")
    g.add_argument("--batch", type=positive_int, metavar="N",
                   help="fixed batch size N (a static graph); overrides the dynamic range")
    g.add_argument("--min-batch", type=positive_int, default=defaults.min,
                   help="smallest batch of the dynamic range (default: %(default)s)")
    g.add_argument("--opt-batch", type=positive_int, default=defaults.opt,
                   help="batch TensorRT tunes for (default: %(default)s)")
    g.add_argument("--max-batch", type=positive_int, default=defaults.max,
                   help="largest batch of the dynamic range (default: %(default)s)")


def batch_from_args(args: argparse.Namespace) -> BatchRange:
    if args.batch:
        return BatchRange.fixed(args.batch)
    return BatchRange(args.min_batch, args.opt_batch, args.max_batch)


def add_threshold_args(p: argparse.ArgumentParser) -> None:
    """The validation thresholds (defaults per precision live in engines.validation)."""
    p.add_argument("--atol", type=float, help="FP32 max-abs threshold on logits (default: 1e-4)")
    p.add_argument("--min-cosine", type=float, help="FP16 and BF16 cosine threshold (default: 0.999)")
    p.add_argument("--min-top1", type=float,
                   help="FP16 top-1 agreement threshold, 0..1 (default: 0.99; BF16: reported, gated only if given)")


def thresholds_from_args(args: argparse.Namespace) -> dict[str, float | None]:
    return {"atol": args.atol, "min_cosine": args.min_cosine, "min_top1": args.min_top1}


def add_trt_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("TensorRT (--fmt trt)")
    g.add_argument("--workspace", type=float, default=4.0, metavar="GIB",
                   help="builder workspace memory pool in GiB (default: %(default)s)")
    g.add_argument("--opt-level", type=int, default=3, choices=range(6), metavar="0-5",
                   help="builder optimization level; higher builds slower, may run faster (default: %(default)s)")
    g.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=False,
                   help="allow TF32 in FP32 layers (default: off, so FP32 means FP32)")
    g.add_argument("--timing-cache", default=str(default_timing_cache()), metavar="PATH",
                   help="timing cache reused across builds; 'none' to disable (default: %(default)s)")
    g.add_argument("--hw-compat", choices=HW_COMPAT_LEVELS, default="none",
                   help="hardware compatibility level (TensorRT >= 8.6): ampere+ runs on any Ampere or newer GPU")
    g.add_argument("--version-compat", action="store_true",
                   help="version-compatible engine (runs on later TensorRT via the lean runtime)")
    g.add_argument("--min-hw", type=hw_arg, metavar="N|HxW",
                   help="with --dynamic-hw: smallest H/W of the engine profile (default: half the export size)")
    g.add_argument("--max-hw", type=hw_arg, metavar="N|HxW",
                   help="with --dynamic-hw: largest H/W of the engine profile (default: twice the export size)")
    g.add_argument("--weak-fp16", action="store_true",
                   help="TensorRT 8.6-10.x: build the FP32 ONNX with BuilderFlag.FP16 instead of the "
                        "strongly typed FP16 graph (not available on TensorRT 11)")


def trt_options_from_args(args: argparse.Namespace) -> TrtBuildOptions:
    cache = None if str(args.timing_cache).lower() == "none" else args.timing_cache
    return TrtBuildOptions(args.workspace, args.opt_level, args.tf32, cache, args.hw_compat,
                           args.version_compat, args.weak_fp16, args.min_hw, args.max_hw)


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run ``main``; expected failures become one ``error:`` line and their exit code."""
    args = sys.argv[1:] if argv is None else argv
    verbose = "--verbose" in args or "-v" in args
    try:
        return main(argv)
    except TwinsDeployError as e:
        if verbose:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted; no partial artifact was left behind", file=sys.stderr)
        return 130
