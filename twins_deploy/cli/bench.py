"""``twins-bench``: throughput of Twins through every route (PyTorch, ONNX Runtime, OpenVINO,
TensorRT), optionally validated, in interleaved rounds, and against timm's own ONNX export;
or (``--serve``) a load test of twins-serve.

Each backend that cannot run here (no GPU, no TensorRT, no onnxruntime-gpu) is skipped
with its reason (for TensorRT, the preflight's: every problem named); the run goes on, and an
out-of-memory batch is reported for its row. Any other failure of a backend (its export or
engine build, opening it, a CUDA error) or of one batch is recorded in its rows as an error,
and the run goes on. The JSON and CSV are rewritten as each row is measured ("complete":
false until the run ends).

Before anything is measured: the output folder and every results file are checked (a folder
or a FIFO where a results file goes is named), and the results of an earlier run with the
same --out and --name are replaced only with --force (as twins-export replaces artifacts);
the run then holds --out (a second run into it is refused, naming this one). The machine's
load is recorded with the results, and a busy machine is warned about (docs/benchmarks.md).

Exit status, after every result is written: 0; 1 when a row failed with an error (each
printed on one line) or, with --validate, a route failed validation (still timed and
recorded); 2 before any work for a results place that cannot be used or earlier results
without --force, or when a results file cannot be written (a full disk); 3 when nothing was
measured (every row skipped or out of memory), or, before any work, when a run of TensorRT
routes only finds TensorRT cannot work here; 130 on Ctrl-C, 143 on SIGTERM, 129 on SIGHUP
(the rows measured until then stay in the JSON and CSV).
"""
from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from twins_deploy.artifacts import output_dir
from twins_deploy.bench.harness import COMPARISONS, BenchConfig
from twins_deploy.bench.machine import busy_warning, int8_cpu_warning
from twins_deploy.bench.report import check_results, check_results_dir, paper_table, rerender, results_table, targets_lines
from twins_deploy.bench.run import partial_rows, row_errors, run_benchmark, validation_failures
from twins_deploy.cli.common import Parser, hw_arg, int_list, number, run_cli
from twins_deploy.engines.routes import ROUTES, routes_help
from twins_deploy.errors import BackendUnavailableError, OptionError, ValidationFailedError, quoted
from twins_deploy.exporters.int8 import calibration_set
from twins_deploy.registry import resolve_name

if TYPE_CHECKING:
    from twins_deploy.bench.serve_load import LoadConfig

EPILOG = """\
examples:
  twins-bench --preset paper                 # Twins-SVT-S, 224, batch 192: PyTorch vs deployed
  twins-bench --preset cpu-compare --out results   # every CPU route, validated, vs timm's ONNX export
  twins-bench --preset onnx-vs-timm --out results  # our ONNX graph vs timm's export, svt_s and pcpvt_s
  twins-bench --model svt_s,pcpvt_s --backends torch,ort-cpu --batch 1,8
  twins-bench --model svt_s --backends torch,trt-fp16 --batch 1,32,192 --compare swin_t --cuda-graphs
  twins-bench --model svt_s --backends ort-cpu,openvino-f32 --threads 2 --rounds 5 --validate --compare timm-onnx
  twins-bench --serve repo --concurrency 1,2,4,8,16 --requests 256   # load-test twins-serve (serving env)

Methodology (as trtexec): fixed shapes, input staged on the device once, warm-up by count
and time, then >= --min-iters iterations and >= --min-time seconds; CUDA events on the GPU,
copies excluded unless --include-copies; TensorRT timed at each batch N on an engine built
for it (profile 1/N/N, as trtexec --shapes=input:Nx3xHxW). --rounds N: every runner opened
first, then timed in N interleaved rounds (order reversed every other round), the median
over rounds reported. Results: <out>/<name>.{json,csv,md,png}, the JSON and CSV rewritten as
each row is measured; --out must lie outside the package's source.
"""

PRESETS = {  # defaults for the flags below; what the user types wins
    "paper": dict(model="svt_s", backends="torch,torch-fp16,torch-compile,ort-cpu,ort-cuda,trt-fp32,trt-fp16",
                  batch=[192], img_size=(224, 224)),
    # every CPU route, validated, timed interleaved against timm's ONNX export; the targets judged
    "cpu-compare": dict(model="svt_s", backends="torch,ort-cpu,openvino-f32,openvino-bf16", batch=[1, 8],
                        img_size=(224, 224), threads=2, rounds=5, validate=True, compare=["timm-onnx"],
                        targets=True, name="cpu_compare"),
    # the INT8 routes beside their FP32 graphs, validated, against timm's ONNX export (needs --calib DIR)
    "int8-compare": dict(model="svt_s", backends="ort-cpu,ort-int8,openvino-f32,openvino-int8", batch=[8],
                         img_size=(224, 224), threads=2, rounds=3, validate=True, compare=["timm-onnx"],
                         targets=True, name="int8_cpu"),
    # our ONNX graph vs timm's export of the same model, in ONNX Runtime, beside PyTorch eager
    "onnx-vs-timm": dict(model="svt_s,pcpvt_s", backends="torch,ort-cpu", batch=[1, 8], img_size=(224, 224),
                         threads=2, rounds=3, compare=["timm-onnx"], name="onnx_vs_timm_cpu"),
}
PRESET_HELP = ("'paper': svt_s, 224, batch 192, all backends; 'cpu-compare': svt_s, 224, batch 1,8, every CPU "
               "route, 2 threads, 5 rounds, --validate, --compare timm-onnx, the targets judged (best validated "
               "route >= 2x timm's ONNX export at batch 8, best FP32 route >= 1.3x), name cpu_compare; 'int8-compare': "
               "svt_s, 224, batch 8, ort-cpu,ort-int8,openvino-f32,openvino-int8, 2 threads, 3 rounds, --validate, "
               "--compare timm-onnx, best validated INT8 route >= 2.5x timm's export (needs --calib DIR), "
               "name int8_cpu; "
               "'onnx-vs-timm': svt_s,pcpvt_s, 224, batch 1,8, torch and ort-cpu, 2 threads, 3 rounds, "
               "--compare timm-onnx, name onnx_vs_timm_cpu")


def compare_list(text: str) -> list[str]:
    values = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [v for v in values if v not in COMPARISONS]
    if not values or unknown:
        raise argparse.ArgumentTypeError(f"{quoted(text)}: --compare takes {', '.join(COMPARISONS)} (comma-separated)")
    return values


def build_parser() -> argparse.ArgumentParser:

    p = Parser("twins-bench", __doc__, EPILOG)
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="a named comparison: defaults for the flags below, each overridden by the flag if you "
                        f"give it; {PRESET_HELP}")
    p.add_argument("--model", default="svt_s", help="comma-separated variants (default: %(default)s)")
    p.add_argument("--backends", default="torch,ort-cpu",
                   help=f"comma-separated routes, from: {routes_help(list(ROUTES))} (default: %(default)s)")
    p.add_argument("--batch", type=int_list, default=[1, 8], metavar="N[,N...]",
                   help="comma-separated batch sizes (default: 1,8)")
    p.add_argument("--img-size", type=hw_arg, default=(224, 224), metavar="N|HxW", help="image size (default: 224)")
    p.add_argument("--min-time", type=number(float, 0, 3600), default=3.0,
                   help="seconds per timed loop, at least (default: %(default)s)")
    p.add_argument("--min-iters", type=number(int, 1, 100_000), default=10,
                   help="iterations per timed loop, at least (default: %(default)s)")
    p.add_argument("--warmup", type=number(int, 0, 100_000), default=3,
                   help="warm-up iterations, at least (default: %(default)s)")
    p.add_argument("--warmup-time", type=number(float, 0, 3600), default=0.2,
                   help="warm-up seconds, at least (default: %(default)s)")
    p.add_argument("--include-copies", action="store_true", help="time host<->device copies too")
    p.add_argument("--cuda-graphs", action="store_true", help="replay TensorRT inferences from a CUDA graph")
    p.add_argument("--threads", type=number(int, 1, 1024), help="CPU threads per runner (PyTorch, ONNX Runtime with spin-waiting off, OpenVINO; default: all)")
    p.add_argument("--rounds", type=number(int, 1, 1000), default=1,
                   help="open every runner first, then time them in N interleaved rounds (order reversed every "
                        "other round) and report the median over rounds (default: %(default)s)")
    p.add_argument("--validate", action=argparse.BooleanOptionalAction, default=False,
                   help="check each runner against the PyTorch FP32 model, with the thresholds of the precision "
                        "its route computes in, and record the verdict in its rows; a failing route is still "
                        "timed, and the command exits 1 after writing the results")
    p.add_argument("--calib", metavar="DIR",
                   help="images the INT8 routes (ort-int8, openvino-int8, trt-int8) are calibrated on "
                        "(twins-export --calib); the INT8 rows need it")
    p.add_argument("--compare", type=compare_list, default=[], metavar="WHAT[,WHAT]",
                   help="also measure: swin_t, timm's Swin-T through the same backends; timm-onnx, timm's own "
                        "ONNX export of each --model (timm's model, the same weights, timm's recipe) in "
                        "ONNX Runtime on the CPU, the baseline of the speedup_vs_timm_onnx column")
    p.add_argument("--out", type=Path, default=Path("bench_out"),
                   help="output directory, outside the package's source (default: %(default)s)")
    p.add_argument("--name", help="file stem of the results (default: the preset's, or derived from the run)")
    p.add_argument("--force", action="store_true",
                   help="replace the results of an earlier run with the same --out and --name (without it, such "
                        "results are refused before anything is measured)")
    p.add_argument("--note", default="", help="a remark recorded with the results (e.g. 'machine otherwise idle')")
    p.add_argument("--rerender", metavar="JSON", type=Path,
                   help="measure nothing: rewrite the markdown table and chart of a recorded run from its JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.add_argument("-v", "--verbose", action="store_true", help="full tracebacks on errors")
    g = p.add_argument_group(
        "serving load test (--serve; run it where twins-serve runs: numpy<2, pip install 'twins-deploy[serve]')")
    g.add_argument("--serve", type=Path, metavar="REPO|ENTRY|ARTIFACT",
                   help="instead of timing Runners, start twins-serve on localhost for this target and send it a "
                        "fixed number of requests per concurrency level, with dynamic batching and batch-1 serving")
    g.add_argument("--serve-model", metavar="NAME", help="the served model to load (default: the only one)")
    g.add_argument("--concurrency", type=int_list, default=[1, 2, 4, 8, 16], metavar="N[,N...]",
                   help="client threads per level (default: 1,2,4,8,16)")
    g.add_argument("--requests", type=number(int, 1, 1_000_000), default=256, metavar="N",
                   help="single-image requests per level and serving mode (default: %(default)s)")
    g.add_argument("--protocol", choices=("grpc", "http"), default="grpc",
                   help="client protocol (default: %(default)s)")
    g.add_argument("--serve-modes", default="dynamic,batch1", metavar="MODE[,MODE]",
                   help="dynamic: the repository's dynamic batching; batch1: --max-batch 1 (default: %(default)s)")
    g.add_argument("--instances", type=number(int, 1, 64), metavar="N",
                   help="twins-serve --instances (default: the config's)")
    p.set_defaults(targets=False)  # set by --preset cpu-compare only
    return p


def load_config_from_args(args: argparse.Namespace, argv: list[str] | None) -> LoadConfig:
    from twins_deploy.bench.serve_load import LoadConfig

    modes = tuple(m.strip() for m in args.serve_modes.split(",") if m.strip())
    return LoadConfig(target=args.serve, model=args.serve_model, concurrency=tuple(args.concurrency),
                      requests=args.requests, protocol=args.protocol, modes=modes, instances=args.instances,
                      threads=args.threads, out=args.out, name=args.name or "serve_load", quiet=args.quiet,
                      command=command_line(argv))


def _serve_main(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None) -> int:
    from twins_deploy.bench.serve_load import SERVE_COMMAND, run_load_test
    from twins_deploy.serving.server import check_environment

    try:
        cfg = load_config_from_args(args, argv)
    except OptionError as e:
        parser.error(str(e))
    check_environment(SERVE_COMMAND)  # an environment that cannot serve is the first thing to say (exit 3)
    check_results_dir(cfg.out)  # where the results go, before any server starts
    check_results(cfg.out, cfg.name, args.force, cache=False)
    with output_dir(cfg.out, option="--out"):  # held while the test runs: a second run into --out is refused
        check_results(cfg.out, cfg.name, args.force, cache=False)
        paths, result = run_load_test(cfg)
    for p in paths:
        print(p)
    for g in result["gains"]:
        print(f"concurrency {g['concurrency']}: dynamic batching {g['dynamic_ips']} img/s vs batch-1 "
              f"{g['batch1_ips']} img/s ({g['gain']}x)")
    return 0


def command_line(argv: list[str] | None) -> str:
    """The command as typed, recorded with the results."""
    return shlex.join(["twins-bench", *(sys.argv[1:] if argv is None else argv)])


def config_from_args(args: argparse.Namespace, argv: list[str] | None = None) -> BenchConfig:

    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    models = tuple(resolve_name(m) for m in args.model.split(",") if m.strip())
    name = args.name or args.preset or re.sub(r"[^A-Za-z0-9_.-]", "_", "_".join(models) + "_" + "-".join(backends))
    return BenchConfig(models=models, backends=backends, batches=tuple(args.batch), img_size=tuple(args.img_size),
                       warmup=args.warmup, warmup_s=args.warmup_time, min_iters=args.min_iters,
                       min_time_s=args.min_time, include_copies=args.include_copies, cuda_graphs=args.cuda_graphs,
                       threads=args.threads, compare=tuple(dict.fromkeys(args.compare)), rounds=args.rounds,
                       validate=args.validate, targets=args.targets, out=args.out, name=name, note=args.note,
                       command=command_line(argv), quiet=args.quiet, calib=args.calib, force=args.force)


def parse_args(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """A preset supplies defaults; every flag the user typed wins over it."""
    parser = build_parser()
    known, _ = parser.parse_known_args(argv)
    if known.preset:
        parser.set_defaults(**PRESETS[known.preset])
    return parser, parser.parse_args(argv)


def _main(argv: list[str] | None) -> int:
    parser, args = parse_args(argv)
    if args.rerender:

        print("\n".join(str(p) for p in rerender(args.rerender)))
        return 0
    if args.serve is not None:
        return _serve_main(parser, args, argv)
    try:
        cfg = config_from_args(args, argv)
    except OptionError as e:
        parser.error(str(e))
    if cfg.calib is not None:  # its images proven usable before any work (exit 2)
        calibration_set(cfg.calib)
        warning = int8_cpu_warning()
        if warning:
            print(warning, file=sys.stderr, flush=True)
    return _bench_main(cfg)


def _bench_main(cfg: BenchConfig) -> int:
    """Run the benchmark, print its tables, and say (one line each) what failed."""
    try:
        paths, result = run_benchmark(cfg)
    except KeyboardInterrupt:
        kept = partial_rows(cfg)
        if kept is not None:
            print(f"the {kept} row(s) measured before the interruption are in {cfg.out / cfg.name}.json "
                  "and .csv (\"complete\": false)", file=sys.stderr)
        raise
    print("\n".join(results_table(result["rows"])))
    if result.get("paper"):
        print("\nthe paper's setting (Twins-SVT-S, 224x224, batch 192):")
        print("\n".join(paper_table(result["paper"])))
    if result.get("targets"):
        print(f"\ntargets (batch {result['targets']['batch']}, against timm's ONNX export in ONNX Runtime):")
        print("\n".join(targets_lines(result["targets"])))
    print("\nresults: " + ", ".join(str(p) for p in paths))
    load = result["environment"].get("load") or {}
    if load.get("busy"):  # said again here, beside the numbers it concerns
        print(busy_warning(load["busy_reasons"]), file=sys.stderr, flush=True)
    errors = row_errors(result)
    for line in errors:
        print(f"failed: {line}", file=sys.stderr)
    failed = validation_failures(result)
    if failed:
        raise ValidationFailedError(f"validation failed for {', '.join(failed)} (timed and recorded anyway; "
                                    f"the reasons are in {paths[0]})")
    if errors:
        print(f"error: {len(errors)} failure(s) above; every other row was measured and written to {paths[0]}",
              file=sys.stderr)
        return 1
    if not any(r["status"] == "ok" for r in result["rows"]):
        raise BackendUnavailableError(f"nothing was measured: every row was skipped or ran out of memory "
                                      f"(the reasons are in {paths[0]})")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
