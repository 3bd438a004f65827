"""``twins-inspect MODEL.onnx``: census, I/O, size, roll-free and TensorRT verdicts."""
from __future__ import annotations

import argparse
import json
import sys

from twins_deploy.cli.common import run_cli


def _main(argv: list[str] | None) -> int:
    p = argparse.ArgumentParser(
        prog="twins-inspect", description=__doc__,
        epilog="Exit code 0 when the graph is roll-free and every TensorRT line can parse it, 1 otherwise.")
    p.add_argument("onnx", help="path to an .onnx file")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="full tracebacks on errors")
    args = p.parse_args(argv)
    from twins_deploy.exporters.inspect import format_report, inspect_onnx

    report = inspect_onnx(args.onnx)
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return 0 if report.roll_free and all(v.compatible for v in report.trt) else 1


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
