"""The benchmark loop: every (subject, backend, batch) through one Runner timing loop.

Rows carry timm's benchmark column names where they apply (``infer_samples_per_sec``,
``infer_step_time``, ``infer_batch_size``, ``infer_img_size``, ``param_count``) so results
line up with timm's published CSVs; speedups are against PyTorch eager FP32 (``torch``)
at the same batch.
"""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from twins_deploy.artifacts import check_file_stem
from twins_deploy.bench.backends import BASELINE, PRECISION, Subject, describe_skip, make_runner, torch_threads
from twins_deploy.bench.timing import Timing, time_runner
from twins_deploy.errors import BackendUnavailableError, OptionError
from twins_deploy.progress import Steps

PAPER_SPEEDUP = 1.7  # Twins-SVT-S through TensorRT vs PyTorch, as the paper reports


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run: what to measure, how long, and where the results go."""

    models: tuple[str, ...]
    backends: tuple[str, ...]
    batches: tuple[int, ...]
    img_size: tuple[int, int] = (224, 224)
    warmup: int = 3
    warmup_s: float = 0.2
    min_iters: int = 10
    min_time_s: float = 3.0
    include_copies: bool = False
    cuda_graphs: bool = False
    threads: int | None = None
    compare: str | None = None      # "swin_t": timm's Swin-T through the same backends
    out: Path = Path("bench_out")
    name: str = "bench"
    quiet: bool = False

    def __post_init__(self) -> None:
        from twins_deploy.bench.backends import BACKENDS

        unknown = [b for b in self.backends if b not in BACKENDS]
        if unknown:
            raise OptionError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
        if not self.models or not self.backends or not self.batches:
            raise OptionError("a benchmark needs at least one model, backend and batch size")
        if any(b < 1 for b in self.batches):
            raise OptionError(f"batch sizes must be >= 1, got {', '.join(map(str, self.batches))}")
        if self.min_iters < 1 or self.warmup < 0 or not self.min_time_s >= 0 or not self.warmup_s >= 0:
            raise OptionError("--min-iters must be >= 1, --warmup >= 0, --min-time and --warmup-time >= 0")
        if self.threads is not None and self.threads < 1:
            raise OptionError(f"--threads must be >= 1, got {self.threads}")
        if self.compare not in (None, "swin_t"):
            raise OptionError(f"--compare takes swin_t, got {self.compare!r}")
        check_file_stem(self.name, "--name")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        return d


def _is_oom(e: BaseException) -> bool:
    text = str(e).lower()
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in text or "cudaerrormemoryallocation" in text


def _row(subject: Subject, backend: str, batch: int, **extra: Any) -> dict[str, Any]:
    return {"model": subject.name, "backend": backend, "infer_batch_size": batch,
            "infer_img_size": f"{subject.img_size[0]}x{subject.img_size[1]}",
            "param_count": subject.param_count or None, "status": "ok", **extra}


def timing_row(subject: Subject, backend: str, t: Timing, runner_info: dict[str, Any],
               peak_mem_mib: float | None) -> dict[str, Any]:
    s = t.summary()
    gflops = (2 * subject.gmacs * t.images_per_s) if subject.gmacs else None
    return _row(subject, backend, t.batch, precision=runner_info.get("precision") or PRECISION.get(backend),
                infer_samples_per_sec=round(t.images_per_s, 2),
                infer_step_time=round(statistics.median(t.latency_ms), 4),
                latency_ms_p90=s["latency_ms_p90"], latency_ms_p99=s["latency_ms_p99"],
                iterations=t.iterations, total_s=s["total_s"], timing_method=t.method,
                infer_gmacs=subject.gmacs, achieved_gflops=float(f"{gflops:.4g}") if gflops else None,
                peak_memory_mib=peak_mem_mib, runner=runner_info)


def add_speedups(rows: list[dict[str, Any]]) -> None:
    """``speedup_vs_torch`` per row: throughput over PyTorch eager FP32 at the same batch."""
    base = {(r["model"], r["infer_batch_size"]): r["infer_samples_per_sec"]
            for r in rows if r["backend"] == BASELINE and r["status"] == "ok"}
    for r in rows:
        b = base.get((r["model"], r["infer_batch_size"]))
        r["speedup_vs_torch"] = round(r["infer_samples_per_sec"] / b, 3) if b and r["status"] == "ok" else None


def run(subjects: list[Subject], cfg: BenchConfig, steps: Steps) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with torch_threads(cfg.threads):
        for subject in subjects:
            subject.model()
            for backend in cfg.backends:
                with steps.step(f"{subject.name} / {backend}"):
                    try:
                        runner = make_runner(backend, subject, cuda_graphs=cfg.cuda_graphs, threads=cfg.threads,
                                             quiet=cfg.quiet)
                        runner.activate()
                    except (BackendUnavailableError, ImportError, RuntimeError) as e:
                        reason = describe_skip(e)
                        steps.note(f"skipped: {reason}")
                        rows += [_row(subject, backend, b, status="skipped", reason=reason) for b in cfg.batches]
                        continue
                    try:
                        for b in cfg.batches:
                            rows.append(_measure(subject, backend, runner, b, cfg, steps))
                    finally:
                        runner.deactivate()
                        if torch.cuda.is_available():
                            torch.cuda.empty_cache()
    add_speedups(rows)
    return rows


def _measure(subject: Subject, backend: str, runner: Any, batch: int, cfg: BenchConfig, steps: Steps) -> dict[str, Any]:
    x = np.random.default_rng(batch).standard_normal((batch, 3, *subject.img_size), dtype=np.float32)
    on_gpu = runner.device == "cuda" and torch.cuda.is_available()
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    try:
        t = time_runner(runner, x, warmup=cfg.warmup, warmup_s=cfg.warmup_s, min_iters=cfg.min_iters,
                        min_time_s=cfg.min_time_s, include_copies=cfg.include_copies)
    except Exception as e:  # a failure at one batch size is a result, not the end of the run
        status = "oom" if _is_oom(e) else "error"
        reason = describe_skip(e).strip().splitlines()[0][:300]
        steps.note(f"batch {batch}: {status}: {reason}")
        return _row(subject, backend, batch, status=status, reason=reason)
    peak = round(torch.cuda.max_memory_allocated() / 2**20, 1) if on_gpu and backend.startswith("torch") else None
    steps.note(f"batch {batch}: {t.images_per_s:.1f} img/s, median {statistics.median(t.latency_ms):.2f} ms")
    return timing_row(subject, backend, t, runner.describe(), peak)


def paper_comparison(rows: list[dict[str, Any]], model: str = "svt_s", batch: int = 192) -> list[dict[str, Any]]:
    """Measured speedups of every deployed backend for the paper's setting, beside its 1.7x."""
    out = []
    for r in rows:
        if r["model"] == model and r["infer_batch_size"] == batch and r["backend"] != BASELINE:
            out.append({"backend": r["backend"], "measured_speedup": r.get("speedup_vs_torch"),
                        "paper_speedup": PAPER_SPEEDUP, "status": r["status"], "reason": r.get("reason")})
    return out
