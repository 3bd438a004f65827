"""``python -m twins_deploy.cli.onnx_compare``: our ONNX graph against timm's model exported
with timm's own recipe, on this machine's CPU: export time, node count, file size and ONNX
Runtime throughput (see twins_deploy.bench.onnx_compare)."""
from __future__ import annotations

import sys
from pathlib import Path

from twins_deploy.cli.common import Parser, number, run_cli


def _main(argv: list[str] | None) -> int:
    p = Parser("python -m twins_deploy.cli.onnx_compare", __doc__)
    p.add_argument("--models", default="svt_s,pcpvt_s", help="variants, comma-separated (default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="output folder (default: %(default)s)")
    p.add_argument("--min-time", type=number(float, 0), default=3.0, help="seconds per timed loop")
    p.add_argument("--rounds", type=number(int, 1, 1000), default=3, help="interleaved rounds; the median is reported")
    p.add_argument("-v", "--verbose", action="store_true", help="full tracebacks on errors")
    args = p.parse_args(argv)

    from twins_deploy.artifacts import check_output_dir
    from twins_deploy.bench.onnx_compare import run_onnx_compare, to_markdown, write_results
    from twins_deploy.registry import resolve_name

    models = [resolve_name(m) for m in args.models.split(",") if m.strip()]
    check_output_dir(args.out)
    result = run_onnx_compare(models, args.out, args.min_time, args.rounds)
    for path in write_results(result, args.out):
        print(path)
    print(to_markdown(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
