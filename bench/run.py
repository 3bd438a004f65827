"""Assemble a benchmark run: subjects, environment, results on disk."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twins_deploy.artifacts import now_iso, tool_versions
from twins_deploy.bench.backends import SWIN, Subject, swin_subject, twins_subject
from twins_deploy.bench.harness import BenchConfig, run, step_count
from twins_deploy.bench.machine import machine_info
from twins_deploy.bench.report import check_results_dir, write_all, write_rows
from twins_deploy.bench.targets import PAPER_BATCH, PAPER_MODEL, cpu_targets, paper_comparison
from twins_deploy.bench.timm_baseline import TIMM_ONNX, timm_onnx_subject
from twins_deploy.engines.routes import get_route
from twins_deploy.progress import Steps


def subjects_of(cfg: BenchConfig) -> list[Subject]:
    """The Twins variants, each followed by timm's export of it (``--compare timm-onnx``), then Swin-T."""
    cache, b = cfg.out / ".artifacts", max(cfg.batches)
    subjects = []
    for m in cfg.models:
        subjects.append(twins_subject(m, cfg.img_size, b, cache, calib=cfg.calib))
        if TIMM_ONNX in cfg.compare:
            subjects.append(timm_onnx_subject(m, cfg.img_size, b, cache))
    if SWIN in cfg.compare:
        subjects.append(swin_subject(cfg.img_size, b, cache))
    return subjects


def method(cfg: BenchConfig) -> str:
    rounds = (f"{cfg.rounds} interleaved rounds (order reversed every other round), img/s the median over rounds; "
              if cfg.rounds > 1 else "")
    tuned = [b for b in cfg.backends if get_route(b).tuned_per_batch]
    return (f"warm-up >= {cfg.warmup} iters and {cfg.warmup_s} s, then >= {cfg.min_iters} iters and "
            f"{cfg.min_time_s} s per timed loop; {rounds}copies {'included' if cfg.include_copies else 'excluded'}; "
            f"CUDA graphs {'on (TensorRT)' if cfg.cuda_graphs else 'off'}; threads {cfg.threads or 'all'}"
            + (" (ONNX Runtime spin-waiting off)" if cfg.threads else "")
            + (f"; {', '.join(tuned)}: one engine per measured batch N, profile min 1 / opt N / max N "
               "(as trtexec --shapes=input:Nx3xHxW), each batch timed on its own engine" if tuned else "")
            + ("; each runner validated against PyTorch FP32 with its precision's thresholds at batches "
               f"{', '.join(map(str, sorted(set(cfg.batches))))}" if cfg.validate else "")
            + "; weights seeded random (non-zero biases)")


def run_benchmark(cfg: BenchConfig) -> tuple[list[Path], dict[str, Any]]:
    """Measure every (model, backend, batch) of ``cfg``; write JSON, CSV, markdown and PNG.

    The JSON and CSV are rewritten (atomically) whenever a row is measured, the JSON with
    ``"complete": false`` until the run ends: an interrupted run keeps what it measured."""
    check_results_dir(cfg.out)  # before any measurement, not when the results are written
    subjects = subjects_of(cfg)
    steps = Steps(step_count(subjects, cfg), quiet=cfg.quiet)
    result: dict[str, Any] = {
        "kind": "bench", "title": cfg.name, "created": now_iso(), "complete": False,
        "environment": {"machine": machine_info(),
                        "tools": tool_versions(("openvino", "tensorrt", "cuda-bindings"))},
        "method": method(cfg), "command": cfg.command, "note": cfg.note,
        "config": cfg.to_dict(), "graphs": {}, "rows": [],
    }

    def record(rows: list[dict[str, Any]]) -> None:
        result.update(rows=rows, graphs={s.name: s.graphs for s in subjects if s.graphs})

    def publish(rows: list[dict[str, Any]]) -> None:
        record(rows)
        write_rows(cfg.out, cfg.name, result)

    rows = run(subjects, cfg, steps, publish)
    record(rows)
    result["complete"] = True
    if PAPER_MODEL in cfg.models and PAPER_BATCH in cfg.batches:
        result["paper"] = paper_comparison(rows)
    if cfg.targets:
        result["targets"] = cpu_targets(rows, list(cfg.batches))
    return write_all(cfg.out, cfg.name, result), result


def partial_rows(cfg: BenchConfig) -> int | None:
    """How many rows an interrupted run of ``cfg`` left in its JSON; None when the JSON there
    is not a partial one (absent, or a finished run's)."""
    try:
        result = json.loads((cfg.out / f"{cfg.name}.json").read_text())
    except (OSError, ValueError):
        return None
    return len(result["rows"]) if isinstance(result, dict) and result.get("complete") is False else None


def validation_failures(result: dict[str, Any]) -> list[str]:
    """'model / backend' of every runner that failed its validation."""
    return list(dict.fromkeys(f"{r['model']} / {r['backend']}" for r in result["rows"]
                              if r.get("validation") and not r["validation"]["passed"]))


def row_errors(result: dict[str, Any]) -> list[str]:
    """'model / backend / batch N[,M]: reason' for every row that failed with an error, rows
    that failed alike (a runner that could not open) on one line."""
    failed: dict[tuple[str, str, str], list[str]] = {}
    for r in result["rows"]:
        if r["status"] == "error":
            failed.setdefault((r["model"], r["backend"], r["reason"]), []).append(str(r["infer_batch_size"]))
    return [f"{model} / {backend} / batch {','.join(batches)}: {reason}"
            for (model, backend, reason), batches in failed.items()]
