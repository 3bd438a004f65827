"""Assemble a benchmark run: subjects, environment, results on disk."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from twins_deploy.artifacts import check_output_dir, now_iso, tool_versions
from twins_deploy.bench.backends import swin_subject, twins_subject
from twins_deploy.bench.harness import BenchConfig, paper_comparison, run
from twins_deploy.bench.machine import machine_info
from twins_deploy.bench.report import write_all
from twins_deploy.progress import Steps


def run_benchmark(cfg: BenchConfig) -> tuple[list[Path], dict[str, Any]]:
    """Measure every (model, backend, batch) of ``cfg``; write JSON, CSV, markdown and PNG."""
    check_output_dir(cfg.out)  # before any measurement, not when the results are written
    cache = cfg.out / ".artifacts"
    subjects = [twins_subject(m, cfg.img_size, max(cfg.batches), cache) for m in cfg.models]
    if cfg.compare == "swin_t":
        subjects.append(swin_subject(cfg.img_size, max(cfg.batches), cache))
    steps = Steps(len(subjects) * len(cfg.backends), quiet=cfg.quiet)
    rows = run(subjects, cfg, steps)
    result: dict[str, Any] = {
        "title": cfg.name, "created": now_iso(),
        "environment": {"machine": machine_info(), "tools": tool_versions(("tensorrt", "cuda-bindings"))},
        "method": (f"warm-up >= {cfg.warmup} iters and {cfg.warmup_s} s, then >= {cfg.min_iters} iters and "
                   f"{cfg.min_time_s} s; copies {'included' if cfg.include_copies else 'excluded'}; "
                   f"CUDA graphs {'on (TensorRT)' if cfg.cuda_graphs else 'off'}; threads {cfg.threads or 'all'}; "
                   "weights seeded random (non-zero biases)"),
        "config": cfg.to_dict(),
        "rows": rows,
    }
    if "svt_s" in cfg.models and 192 in cfg.batches:
        result["paper"] = paper_comparison(rows)
    return write_all(cfg.out, cfg.name, result), result
