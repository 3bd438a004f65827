"""``twins-validate ARTIFACT``: re-validate an ONNX model or engine against PyTorch.

Reads the model, input spec, preprocessing and weights provenance from the manifest
beside the artifact, so a CI job can gate on parity with one command.
"""
from __future__ import annotations

import argparse
import sys

from twins_deploy.artifacts import check_report_path, write_json_atomic
from twins_deploy.cli.common import (
    Parser,
    add_threshold_args,
    int_list,
    number,
    route_arg,
    run_cli,
    thresholds_from_args,
)
from twins_deploy.engines.routes import artifact_routes, routes_help
from twins_deploy.pipeline import revalidate

EPILOG = """\
exit codes: 0 parity holds, 1 a check failed (report still written), 2 bad input,
3 missing backend, 130 interrupted by Ctrl-C, 143 by SIGTERM. Example CI step:
  twins-validate twins_out/svt_s_fp16.onnx --weights ckpt.safetensors --images tests/photos \\
      --report parity.json
the same FP32 ONNX file deployed with OpenVINO on the CPU, in BF16:
  twins-validate twins_out/svt_s_fp32.onnx --backend openvino-bf16 --report parity_bf16.json
"""


def build_parser() -> argparse.ArgumentParser:
    p = Parser("twins-validate", __doc__, EPILOG)
    p.add_argument("artifact", help="an .onnx file or TensorRT engine written by twins-export")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--weights", metavar="PATH",
                   help="the checkpoint the artifact was made with (default: the manifest's path, if present)")
    w.add_argument("--pretrained", action="store_true", help="the artifact was made with --pretrained")
    p.add_argument("--images", metavar="DIR", help="also validate on the photographs in DIR")
    p.add_argument("--batch", type=int_list, metavar="N[,N...]",
                   help="batch sizes to check (default: min, opt and max of the artifact's range)")
    routes = artifact_routes()
    p.add_argument("--backend", type=route_arg, choices=routes, metavar="ROUTE",
                   help="the route that runs the artifact, one that runs its kind (default: the first such "
                        "route on the CPU: ort-cpu for ONNX; a TensorRT plan runs in trt-fp32/trt-fp16); "
                        "judged with the thresholds of what the route computes in. Routes: " + routes_help(routes))
    p.add_argument("--threads", type=number(int, 1, 1024), metavar="N",
                   help="CPU threads of the backend (default: ONNX Runtime's own choice; OpenVINO: "
                        "every core this process may use)")
    add_threshold_args(p)
    p.add_argument("--report", metavar="FILE", help="write the full JSON report here")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.add_argument("-v", "--verbose", action="store_true", help="full tracebacks on errors")
    return p


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.report:
        check_report_path(args.report, args.artifact)  # before the work, not after it
    report = revalidate(args.artifact, args.weights, args.pretrained, args.batch, args.images,
                        thresholds_from_args(args), quiet=args.quiet, route=args.backend,
                        threads=args.threads)
    if args.report:
        write_json_atomic(args.report, report.to_dict())
    print(report.summary())
    for f in report.failures:
        print(f"  {f}")
    return 0 if report.passed else 1


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
