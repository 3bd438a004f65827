"""``twins-inspect MODEL.onnx``: census, I/O, size, roll-free and TensorRT verdicts."""
from __future__ import annotations

import argparse
import json
import sys

from twins_deploy.artifacts import manifest_path
from twins_deploy.cli.common import Parser, run_cli
from twins_deploy.commands import polygraphy_commands
from twins_deploy.errors import ArtifactError
from twins_deploy.exporters.inspect import format_report, inspect_onnx
from twins_deploy.manifest import read_manifest


def build_parser() -> argparse.ArgumentParser:
    p = Parser("twins-inspect", __doc__,
               "Exit codes: 0 when the graph is roll-free and every TensorRT line can parse it, 1 otherwise, "
               "2 when the file is not a readable ONNX model, 130 interrupted by Ctrl-C, 143 by SIGTERM.")
    p.add_argument("onnx", help="path to an .onnx file")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="full tracebacks on errors")
    return p


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)

    report = inspect_onnx(args.onnx)
    commands = _commands(args.onnx)
    if args.json:
        print(json.dumps({**report.to_dict(), "commands": commands}, indent=2))
    else:
        print(format_report(report))
        if commands:
            print("  check it with Polygraphy (shapes and value range from the manifest):")
            print("\n".join(f"    {label}: {line}" for label, line in commands.items()))
    return 0 if report.roll_free and all(v.compatible for v in report.trt) else 1


def _commands(path: str) -> dict[str, str]:
    """Polygraphy lines when a twins-deploy manifest sits beside the file; none otherwise."""

    if not manifest_path(path).is_file():
        return {}
    try:
        manifest = read_manifest(path)
    except ArtifactError as e:
        print(f"warning: {e}", file=sys.stderr)
        return {}
    return polygraphy_commands(path, manifest) if manifest.kind == "onnx" else {}


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
