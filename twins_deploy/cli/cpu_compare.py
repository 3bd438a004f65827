"""``python -m twins_deploy.cli.cpu_compare``: every CPU route to run Twins (timm's ONNX export
in ONNX Runtime, ours in ONNX Runtime and in OpenVINO FP32/BF16, PyTorch eager), validated and
timed in one interleaved run; results as JSON and markdown (see twins_deploy.bench.cpu_compare)."""
from __future__ import annotations

import sys
from pathlib import Path

from twins_deploy.cli.common import Parser, hw_arg, int_list, number, run_cli


def _main(argv: list[str] | None) -> int:
    p = Parser("python -m twins_deploy.cli.cpu_compare", __doc__)
    p.add_argument("--model", default="svt_s", help="variant (default: %(default)s)")
    p.add_argument("--batch", type=int_list, default=[1, 8], metavar="N[,N...]", help="batch sizes (default: 1,8)")
    p.add_argument("--img-size", type=hw_arg, default=(224, 224), metavar="N|HxW", help="input size (default: 224)")
    p.add_argument("--threads", type=number(int, 1, 1024), default=2, help="threads per route (default: %(default)s)")
    p.add_argument("--rounds", type=number(int, 1, 1000), default=5, help="interleaved rounds (default: %(default)s)")
    p.add_argument("--min-time", type=number(float, 0), default=3.0,
                   help="seconds per timed loop (default: %(default)s)")
    p.add_argument("--min-iters", type=number(int, 1), default=10,
                   help="iterations per timed loop (default: %(default)s)")
    p.add_argument("--note", default="", help="a remark recorded with the results (e.g. 'machine shared')")
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="output folder (default: %(default)s)")
    p.add_argument("--name", default="cpu_compare", help="file stem of the results (default: %(default)s)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.add_argument("-v", "--verbose", action="store_true", help="full tracebacks on errors")
    args = p.parse_args(argv)

    from twins_deploy.artifacts import check_file_stem, check_output_dir
    from twins_deploy.bench.cpu_compare import run_comparison, to_markdown, write_results
    from twins_deploy.registry import resolve_name

    check_file_stem(args.name, "--name")
    check_output_dir(args.out)
    result = run_comparison(resolve_name(args.model), tuple(args.batch), tuple(args.img_size), args.threads,
                            args.rounds, args.min_time, args.min_iters, args.note,
                            None if args.quiet else (lambda s: print(s, flush=True)))
    for path in write_results(result, args.out, args.name):
        print(path)
    print(to_markdown(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
