"""``twins-predict ARTIFACT IMAGE...``: top-5 classes of images from an exported model.

Images are prepared exactly as the manifest beside the artifact says (timm's eval
transform: resize, center crop, mean/std), then run in ONNX Runtime or TensorRT.
"""
from __future__ import annotations

import argparse
import json
import sys

from twins_deploy.cli.common import Parser, number, route_arg, run_cli
from twins_deploy.engines.routes import artifact_routes, routes_help
from twins_deploy.manifest import Manifest
from twins_deploy.predict import predict

EPILOG = """\
examples:
  twins-predict twins_out/svt_s_fp32.onnx photos/cat.jpg photos/dog.png
  twins-predict twins_out/svt_s_fp16.plan photos/ --top-k 3 --json

With seeded random weights (no --weights/--pretrained at export) the classes are
meaningless (a warning says so); export with --pretrained or --weights for real predictions.
Exit codes: 0 ok, 2 bad input (artifact, manifest or image), 3 missing backend,
130 interrupted by Ctrl-C, 143 by SIGTERM.
The same in Python:
  from twins_deploy.predict import predict
  for p in predict("twins_out/svt_s_fp32.onnx", ["cat.jpg"]):
      print(p.image, p.top[0])
"""


def build_parser() -> argparse.ArgumentParser:
    p = Parser("twins-predict", __doc__, EPILOG)
    p.add_argument("artifact", help="an .onnx model or TensorRT .plan written by twins-export (with its manifest)")
    p.add_argument("images", nargs="+", help="image files or folders of images")
    p.add_argument("--top-k", type=number(int, 1, 1000), default=5, help="classes per image (default: %(default)s)")
    p.add_argument("--provider", choices=("cpu", "cuda"), default="cpu",
                   help="device of the default route: cpu runs an .onnx model in ort-cpu, cuda in ort-cuda; "
                        "a .plan always runs in TensorRT (default: %(default)s)")
    routes = artifact_routes()
    p.add_argument("--backend", type=route_arg, choices=routes, metavar="ROUTE",
                   help="the route that runs the artifact, one that runs its kind (default: chosen by "
                        "--provider). Routes: " + routes_help(routes))
    p.add_argument("--json", action="store_true", help="print the predictions as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="full tracebacks on errors")
    return p


def random_weights_warning(manifest: Manifest) -> str | None:
    """One ``warning:`` line when the artifact's weights are not trained ones (its manifest
    says seeded random): its classes and probabilities mean nothing."""
    w = manifest.weights
    if w.source != "random":
        return None
    seed = f" (seed {w.seed})" if w.seed is not None else ""
    return (f"warning: {manifest.artifact} has seeded random weights{seed}, not trained ones: its predicted classes are "
            "meaningless; export with --weights PATH or --pretrained for real predictions")


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)

    def warn(manifest: Manifest) -> None:
        if warning := random_weights_warning(manifest):
            print(warning, file=sys.stderr, flush=True)

    preds = predict(args.artifact, args.images, args.top_k, args.provider, route=args.backend, on_manifest=warn)
    if args.json:
        print(json.dumps([{"image": r.image, "top": [{"class": c, "probability": round(pr, 6), "label": lab}
                                                      for c, pr, lab in r.top]} for r in preds], indent=2))
        return 0
    for r in preds:
        print(r.image)
        for c, pr, lab in r.top:
            print(f"  {pr:7.2%}  {c:4d}  {lab}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
