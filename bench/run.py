"""Assemble a benchmark run: subjects, environment, results on disk.

Everything about where the results go is checked before any measurement; the run then holds
its output folder (:func:`twins_deploy.artifacts.output_dir`: another run into the same
folder is refused, naming this one), records the machine's load beside its rows, and writes
each results file atomically."""
from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twins_deploy.artifacts import now_iso, output_dir, tool_versions
from twins_deploy.bench.backends import SWIN, Subject, swin_subject, twins_subject
from twins_deploy.bench.harness import BenchConfig, run
from twins_deploy.bench.machine import busy_reasons, busy_warning, load_end, load_start, machine_info, public
from twins_deploy.bench.report import MAX_RESULT_BYTES, check_results, check_results_dir, write_all, write_rows
from twins_deploy.errors import ArtifactError, quoted
from twins_deploy.bench.targets import PAPER_BATCH, PAPER_MODEL, cpu_targets, paper_comparison
from twins_deploy.bench.timm_baseline import TIMM_ONNX, timm_onnx_subject
from twins_deploy.engines.routes import get_route


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

    Before any measurement: the output folder (writable, outside the package), each results
    file (absent or a file; an earlier run's only with ``cfg.force``), a busy machine warned
    about. The JSON and CSV are rewritten (atomically) whenever a row is measured, the JSON
    with ``"complete": false`` until the run ends: an interrupted run keeps what it measured.
    A results file that cannot be written (a full disk, a refused write) stops the run with
    one line (:class:`ArtifactError`); what was written before stays whole."""
    check_results_dir(cfg.out)  # before any measurement, not when the results are written
    check_results(cfg.out, cfg.name, cfg.force)
    subjects = subjects_of(cfg)
    load = load_start()
    with output_dir(cfg.out, option="--out"):  # held to the end: a second run into --out is refused, naming this one
        earlier = check_results(cfg.out, cfg.name, cfg.force)  # again, held: a run may have ended meanwhile
        if earlier:
            print(f"note: replacing the results of an earlier run (--force): {', '.join(str(p) for p in earlier)}",
                  file=sys.stderr, flush=True)
        reasons = busy_reasons(load)
        if reasons:
            print(busy_warning(reasons), file=sys.stderr, flush=True)
        result: dict[str, Any] = {
            "kind": "bench", "title": cfg.name, "created": now_iso(), "complete": False,
            "environment": {"machine": machine_info(), "load": public(load),
                            "tools": tool_versions(("openvino", "tensorrt", "cuda-bindings"))},
            "method": method(cfg), "command": cfg.command, "note": cfg.note,
            "config": cfg.to_dict(), "graphs": {}, "rows": [],
        }

        def record(rows: list[dict[str, Any]]) -> None:
            result.update(rows=rows, graphs={s.name: s.graphs for s in subjects if s.graphs})

        def publish(rows: list[dict[str, Any]]) -> None:
            record(rows)
            _writing(cfg, rows, lambda: write_rows(cfg.out, cfg.name, result))

        rows = run(subjects, cfg, publish)
        record(rows)
        result["complete"] = True
        result["environment"]["load"] = load_end(load)
        if PAPER_MODEL in cfg.models and PAPER_BATCH in cfg.batches:
            result["paper"] = paper_comparison(rows)
        if cfg.targets:
            result["targets"] = cpu_targets(rows, list(cfg.batches))
        paths = _writing(cfg, rows, lambda: write_all(cfg.out, cfg.name, result))
    return paths, result


def _writing(cfg: BenchConfig, rows: list[dict[str, Any]], write: Callable[[], Any]) -> Any:
    """``write()``, what the machine refuses (a full disk, no permission, a read-only place)
    turned into one line that says what was measured and what is on disk."""
    try:
        return write()
    except OSError as e:
        where = f" ({quoted(str(e.filename), 160)})" if e.filename else ""
        raise ArtifactError(f"cannot write the benchmark results into {quoted(str(cfg.out))}: {e.strerror or e}{where}; "
                            f"the run stopped after {len(rows)} row(s); each results file on disk is whole, "
                            "as last written") from None


def partial_rows(cfg: BenchConfig) -> int | None:
    """How many rows an interrupted run of ``cfg`` left in its JSON; None when the JSON there
    is not a partial one (absent, or a finished run's)."""
    path = cfg.out / f"{cfg.name}.json"
    try:
        if not path.is_file() or path.stat().st_size > MAX_RESULT_BYTES:
            return None
        result = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(result, dict) or result.get("complete") is not False or not isinstance(result.get("rows"), list):
        return None
    return len(result["rows"])


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
