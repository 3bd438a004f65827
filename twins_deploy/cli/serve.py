"""``twins-serve``: serve Triton model repository entries (or artifacts) with Triton Inference Server."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from twins_deploy.cli.common import Parser, number, positive_int, run_cli

EPILOG = """\
examples:
  twins-export --model svt_s --triton-repo repo && twins-serve repo    # every model in repo
  twins-serve repo/svt_s_fp32 --instances 2 --max-batch 16
  twins-serve twins_out/svt_s_fp32.onnx                                # an artifact, as svt_s_fp32

Requests (preprocessing stays with the client): input "input", NCHW, FP32 (FP16 for --io-fp16
exports), already resized, cropped and normalised as the manifest's "preprocess" says;
output "logits" [batch, classes] or "stage1".."stage4" for backbones. Any tritonclient
(HTTP on --http-port, gRPC on --grpc-port) or Triton's perf_analyzer works. Runs the
tritonserver bundled with nvidia-pytriton (python backend), each model executed by the
twins-deploy Runner for its artifact. Needs the serving environment (numpy<2 with
nvidia-pytriton): make serve-env, then .venv-serve/bin/twins-serve ...
An artifact whose sha256 is not the one its manifest records is refused (exit 2).

Stops within seconds on Ctrl-C, SIGTERM or SIGHUP, also under load: tritonserver gets
2 s for open connections and in-flight requests, what is left of it after 5 s (or at a
second signal) is killed, and the shared-memory regions its backends made are removed from
/dev/shm; the last line says how many ("freed N shared-memory regions (X MiB)").

exit codes:
  0    stopped on request (Ctrl-C, SIGTERM or SIGHUP) once ready, everything removed
  2    bad input: a target, an option, a port in use, an artifact that fails its manifest
  3    not the serving environment; the server failed to start or died; or something of it
       could not be removed (the last line names it)
  130  Ctrl-C (SIGINT) before the server was ready (129 SIGHUP); nothing left running
  143  SIGTERM before the server was ready; nothing left running
"""


port = number(int, 1, 65535)


def build_parser() -> argparse.ArgumentParser:
    p = Parser("twins-serve", __doc__, EPILOG)
    p.add_argument("targets", nargs="+", type=Path, metavar="REPO|ENTRY|ARTIFACT",
                   help="a Triton model repository (every entry), one entry folder, or an .onnx/.plan artifact")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s; 0.0.0.0 exposes the server to the network)")
    p.add_argument("--http-port", type=port, default=8000, help="HTTP/REST port (default: %(default)s)")
    p.add_argument("--grpc-port", type=port, default=8001, help="gRPC port (default: %(default)s)")
    p.add_argument("--metrics-port", type=port, default=8002, help="Prometheus metrics port (default: %(default)s)")
    p.add_argument("--instances", type=positive_int, metavar="N",
                   help="model instances, each with its own Runner (default: the config's instance_group count)")
    p.add_argument("--max-batch", type=positive_int, metavar="N",
                   help="largest batch an execution gets, at most the config's max_batch_size; "
                        "1 serves one request per execution (default: the config's)")
    p.add_argument("--queue-delay-us", type=number(int, 0, 10_000_000), metavar="US",
                   help="dynamic batching's max queue delay in microseconds (default: the config's)")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="ONNX Runtime threads per instance (default: all cores, divided among instances)")
    p.add_argument("--workspace", type=Path, metavar="DIR",
                   help="where the temporary server workspace is made (default: the system's temp dir); "
                        "it is removed on exit")
    p.add_argument("--allow-hash-mismatch", action="store_true",
                   help="serve an ONNX file whose sha256 differs from its manifest's, with a warning, instead of "
                        "refusing it (a TensorRT plan is refused either way)")
    p.add_argument("-v", "--verbose", action="store_true", help="server logs on the console; tracebacks on errors")
    return p


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    from twins_deploy.serving.server import ServeOptions, check_environment, main_entry

    # first, before any work: main environments have twins-serve installed too (numpy 2)
    again = shlex.join(["twins-serve", *argv])
    check_environment(again if len(again) <= 160 else "twins-serve ...")
    opts = ServeOptions(host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                        metrics_port=args.metrics_port, instances=args.instances, max_batch=args.max_batch,
                        queue_delay_us=args.queue_delay_us, threads=args.threads, workspace=args.workspace,
                        verbose=args.verbose, allow_hash_mismatch=args.allow_hash_mismatch)
    return main_entry(args.targets, opts)


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
