"""Assemble a benchmark run: subjects, config, environment, results on disk."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from twins_deploy.artifacts import now_iso, tool_versions
from twins_deploy.bench.backends import swin_subject, twins_subject
from twins_deploy.bench.harness import BenchConfig, paper_comparison, run
from twins_deploy.bench.machine import machine_info
from twins_deploy.bench.report import write_all
from twins_deploy.progress import Steps


def run_benchmark(models: list[str], backends: list[str], batches: list[int], args: argparse.Namespace,
                  name: str) -> tuple[list[Path], dict[str, Any]]:
    cache = args.out / ".artifacts"
    hw = tuple(args.img_size)
    subjects = [twins_subject(m, hw, max(batches), cache) for m in models]
    if args.compare == "swin_t":
        subjects.append(swin_subject(hw, max(batches), cache))
    cfg = BenchConfig(backends, batches, warmup=args.warmup, warmup_s=args.warmup_time, min_iters=args.min_iters,
                      min_time_s=args.min_time, include_copies=args.include_copies, cuda_graphs=args.cuda_graphs,
                      threads=args.threads)
    steps = Steps(len(subjects) * len(backends), quiet=args.quiet)
    rows = run(subjects, cfg, steps)
    result: dict[str, Any] = {
        "title": name, "created": now_iso(),
        "environment": {"machine": machine_info(), "tools": tool_versions(("tensorrt", "cuda-bindings"))},
        "method": (f"warm-up >= {cfg.warmup} iters and {cfg.warmup_s} s, then >= {cfg.min_iters} iters and "
                   f"{cfg.min_time_s} s; copies {'included' if cfg.include_copies else 'excluded'}; "
                   f"CUDA graphs {'on (TensorRT)' if cfg.cuda_graphs else 'off'}; threads {cfg.threads or 'all'}; "
                   "weights seeded random (non-zero biases)"),
        "config": {**cfg.__dict__, "img_size": list(hw)},
        "rows": rows,
    }
    if "svt_s" in models and 192 in batches:
        result["paper"] = paper_comparison(rows)
    return write_all(args.out, name, result), result
