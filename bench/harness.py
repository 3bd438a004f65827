"""The benchmark loop: every (subject, backend, batch) through one Runner timing loop.

Rows carry timm's benchmark column names where they apply (``infer_samples_per_sec``,
``infer_step_time``, ``infer_batch_size``, ``infer_img_size``, ``param_count``) so results
line up with timm's published CSVs; speedups are against the route table's baseline
(PyTorch eager FP32) at the same batch, and against timm's own ONNX export when it ran
(``--compare timm-onnx``).

With ``rounds`` > 1 every runner is opened first and then timed in interleaved rounds, the
order reversed every other round; a row reports the median of the rounds' throughputs
(each round's value kept in ``rounds_samples_per_sec``), so that a quiet or busy moment on
a shared machine hits every route alike. With ``validate``, each runner is first checked
against the PyTorch FP32 model with the thresholds of the precision its route computes in,
and the verdict goes into its rows; a route that fails is still timed and recorded.
"""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from twins_deploy.artifacts import check_file_stem
from twins_deploy.bench.backends import SWIN, Subject, describe_skip, make_runner, torch_threads
from twins_deploy.bench.timing import Timing, percentile, time_runner
from twins_deploy.bench.timm_baseline import TIMM_ONNX, baseline_of, subject_name
from twins_deploy.engines.routes import ROUTES, get_route
from twins_deploy.engines.runners.base import Runner
from twins_deploy.engines.validation import validate_against_pytorch, validation_cases
from twins_deploy.errors import BackendUnavailableError, OptionError
from twins_deploy.exporters.spec import BatchRange, ExportSpec
from twins_deploy.progress import Steps

COMPARISONS = (SWIN, TIMM_ONNX)  # --compare: subjects measured beside the Twins variants


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
    compare: tuple[str, ...] = ()   # swin_t: timm's Swin-T through the same backends; timm-onnx: timm's export
    rounds: int = 1                 # interleaved rounds; the median over rounds is reported
    validate: bool = False          # check every runner against PyTorch FP32 before timing it
    targets: bool = False           # judge the CPU comparison's targets (--preset cpu-compare)
    out: Path = Path("bench_out")
    name: str = "bench"
    note: str = ""                  # a remark recorded with the results
    command: str = ""               # the command line, recorded with the results
    quiet: bool = False

    def __post_init__(self) -> None:
        unknown = [b for b in self.backends if b not in ROUTES]
        if unknown:
            raise OptionError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(ROUTES)}")
        if not self.models or not self.backends or not self.batches:
            raise OptionError("a benchmark needs at least one model, backend and batch size")
        if any(b < 1 for b in self.batches):
            raise OptionError(f"batch sizes must be >= 1, got {', '.join(map(str, self.batches))}")
        if self.min_iters < 1 or self.warmup < 0 or not self.min_time_s >= 0 or not self.warmup_s >= 0:
            raise OptionError("--min-iters must be >= 1, --warmup >= 0, --min-time and --warmup-time >= 0")
        if self.threads is not None and self.threads < 1:
            raise OptionError(f"--threads must be >= 1, got {self.threads}")
        if self.rounds < 1:
            raise OptionError(f"--rounds must be >= 1, got {self.rounds}")
        unknown = [c for c in self.compare if c not in COMPARISONS]
        if unknown:
            raise OptionError(f"--compare takes {', '.join(COMPARISONS)}, got {', '.join(map(repr, unknown))}")
        check_file_stem(self.name, "--name")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        return d


@dataclass
class Measured:
    """One (subject, backend) of a run: its runner, its verdict, and what each round timed."""

    subject: Subject
    backend: str
    runner: Runner | None = None
    skipped: str | None = None
    validation: dict[str, Any] | None = None
    timings: dict[int, list[Timing]] = field(default_factory=dict)
    peaks: dict[int, float] = field(default_factory=dict)
    failed: dict[int, tuple[str, str]] = field(default_factory=dict)  # batch -> (status, reason)

    def close(self) -> None:
        if self.runner is not None:
            self.runner.deactivate()
            self.runner = None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def _is_oom(e: BaseException) -> bool:
    text = str(e).lower()
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in text or "cudaerrormemoryallocation" in text


def _row(subject: Subject, backend: str, batch: int, **extra: Any) -> dict[str, Any]:
    return {"model": subject.name, "backend": backend, "infer_batch_size": batch,
            "infer_img_size": f"{subject.img_size[0]}x{subject.img_size[1]}",
            "param_count": subject.param_count or None, "status": "ok", **extra}


def timing_row(subject: Subject, backend: str, rounds: list[Timing], runner_info: dict[str, Any],
               peak_mem_mib: float | None) -> dict[str, Any]:
    """The row of one (subject, backend, batch): throughput is the median over ``rounds`` of
    each round's throughput, latency percentiles are over every timed step of every round."""
    lat = [v for t in rounds for v in t.latency_ms]
    ips = statistics.median(t.images_per_s for t in rounds)
    gflops = (2 * subject.gmacs * ips) if subject.gmacs else None
    return _row(subject, backend, rounds[0].batch,
                precision=runner_info.get("precision") or get_route(backend).precision,
                infer_samples_per_sec=round(ips, 2), infer_step_time=round(statistics.median(lat), 4),
                latency_ms_p90=round(percentile(lat, 90), 4), latency_ms_p99=round(percentile(lat, 99), 4),
                iterations=sum(t.iterations for t in rounds), total_s=round(sum(t.total_s for t in rounds), 4),
                rounds_samples_per_sec=[round(t.images_per_s, 2) for t in rounds], timing_method=rounds[0].method,
                infer_gmacs=subject.gmacs, achieved_gflops=float(f"{gflops:.4g}") if gflops else None,
                peak_memory_mib=peak_mem_mib, runner=runner_info)


def add_speedups(rows: list[dict[str, Any]]) -> None:
    """Per row: ``speedup_vs_torch``, throughput over the table's baseline route (PyTorch eager
    FP32) for the same model and batch; ``speedup_vs_timm_onnx``, over timm's own export of
    the same model (``timm-onnx:<model>``) at the same batch, where that ran."""
    ok = [r for r in rows if r["status"] == "ok"]
    base = {(r["model"], r["infer_batch_size"]): r["infer_samples_per_sec"] for r in ok
            if get_route(r["backend"]).baseline}
    timm = {(r["model"], r["infer_batch_size"]): r["infer_samples_per_sec"] for r in ok if baseline_of(r["model"])}
    for r in rows:
        key = r["infer_batch_size"]
        b = base.get((r["model"], key))
        t = timm.get((subject_name(baseline_of(r["model"]) or r["model"]), key))
        r["speedup_vs_torch"] = round(r["infer_samples_per_sec"] / b, 3) if b and r["status"] == "ok" else None
        r["speedup_vs_timm_onnx"] = round(r["infer_samples_per_sec"] / t, 3) if t and r["status"] == "ok" else None


def validate_runner(subject: Subject, backend: str, runner: Runner, batches: tuple[int, ...]) -> dict[str, Any]:
    """``runner`` against the subject's PyTorch FP32 reference, judged with the thresholds of
    the precision its route computes in; the verdict for its rows. A runner that cannot even
    run the cases fails with the reason (the benchmark goes on). Leaves the runner inactive."""

    precision = get_route(backend).precision
    spec = ExportSpec(model=subject.name, img_size=subject.img_size,
                      batch=BatchRange(1, subject.max_batch, subject.max_batch))
    cases = validation_cases(spec, subject.preprocess, batches=sorted(set(batches)))
    ref = subject.reference()
    try:
        report = validate_against_pytorch(ref, runner, precision, cases)
    except Exception as e:  # a runner that cannot run the cases fails validation, with why
        runner.deactivate()
        return {"passed": False, "judged_as": precision, "summary": f"FAIL: {describe_skip(e)}"[:300],
                "failures": [describe_skip(e)[:300]]}
    d = report.to_dict()
    return {"passed": d["passed"], "judged_as": precision, "summary": d["summary"],
            "max_abs": max((s.max_abs for s in report.stats), default=None),
            "min_cosine": min((s.min_cosine for s in report.stats), default=None),
            "top1_agreement": d["top1_agreement"], "failures": d["failures"],
            "cases": [c for c, _ in cases]}


def _open(m: Measured, cfg: BenchConfig, steps: Steps) -> None:
    """Open (and with ``cfg.validate`` validate) ``m``'s runner, or record why it cannot run here."""
    try:
        runner = make_runner(m.backend, m.subject, cuda_graphs=cfg.cuda_graphs, threads=cfg.threads)
        runner.activate()
    except (BackendUnavailableError, ImportError, RuntimeError) as e:
        m.skipped = describe_skip(e)
        steps.note(f"skipped: {m.skipped}")
        return
    if cfg.validate:
        m.validation = validate_runner(m.subject, m.backend, runner, cfg.batches)
        steps.note(f"validation: {m.validation['summary']}")
        runner.activate()  # validation leaves it inactive
    m.runner = runner


def _time(m: Measured, batch: int, cfg: BenchConfig, steps: Steps, label: str = "") -> None:
    """One timed loop of ``m`` at ``batch``; a failure is recorded for the row, and that batch
    is not timed again in later rounds."""
    if m.runner is None or batch in m.failed:
        return
    x = np.random.default_rng(batch).standard_normal((batch, 3, *m.subject.img_size), dtype=np.float32)
    on_gpu = m.runner.device == "cuda" and torch.cuda.is_available()
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    try:
        t = time_runner(m.runner, x, warmup=cfg.warmup, warmup_s=cfg.warmup_s, min_iters=cfg.min_iters,
                        min_time_s=cfg.min_time_s, include_copies=cfg.include_copies)
    except Exception as e:  # a failure at one batch size is a result, not the end of the run
        status = "oom" if _is_oom(e) else "error"
        reason = describe_skip(e).strip().splitlines()[0][:300]
        steps.note(f"{label}batch {batch}: {status}: {reason}")
        m.failed[batch] = (status, reason)
        return
    m.timings.setdefault(batch, []).append(t)
    if on_gpu and get_route(m.backend).runs_model:
        m.peaks[batch] = max(m.peaks.get(batch, 0.0), round(torch.cuda.max_memory_allocated() / 2**20, 1))
    steps.note(f"{label}batch {batch}: {t.images_per_s:.1f} img/s, median {statistics.median(t.latency_ms):.2f} ms")


def _rows(m: Measured, batches: tuple[int, ...], info: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for b in batches:
        if m.skipped is not None:
            row = _row(m.subject, m.backend, b, status="skipped", reason=m.skipped)
        elif b in m.failed:
            row = _row(m.subject, m.backend, b, status=m.failed[b][0], reason=m.failed[b][1])
        else:
            row = timing_row(m.subject, m.backend, m.timings[b], info, m.peaks.get(b))
        if m.validation is not None:
            row["validation"] = m.validation
        rows.append(row)
    return rows


def pairs(subjects: list[Subject], cfg: BenchConfig) -> list[Measured]:
    """Every (subject, backend) of the run, in order."""
    return [Measured(s, b) for s in subjects for b in s.backends(cfg.backends)]


def run(subjects: list[Subject], cfg: BenchConfig, steps: Steps) -> list[dict[str, Any]]:
    """Measure every (subject, backend, batch). One round: each runner is opened, timed at
    every batch and closed before the next opens. More: all are opened, then timed in
    interleaved rounds (order reversed every other round), then closed."""
    rows: list[dict[str, Any]] = []
    todo = pairs(subjects, cfg)
    with torch_threads(cfg.threads):
        for s in subjects:
            s.model()
        try:
            for m in todo:
                with steps.step(f"{m.subject.name} / {m.backend}"):
                    _open(m, cfg, steps)
                    if cfg.rounds == 1:
                        try:
                            for b in cfg.batches:
                                _time(m, b, cfg, steps)
                            rows += _rows(m, cfg.batches, m.runner.describe() if m.runner else {})
                        finally:
                            m.close()
            if cfg.rounds > 1:
                live = [m for m in todo if m.runner is not None]
                for i in range(cfg.rounds):
                    with steps.step(f"round {i + 1}/{cfg.rounds}"):
                        for m in live if i % 2 == 0 else live[::-1]:
                            for b in cfg.batches:
                                _time(m, b, cfg, steps, f"{m.subject.name} / {m.backend} ")
                rows = [r for m in todo for r in _rows(m, cfg.batches, m.runner.describe() if m.runner else {})]
        finally:
            for m in todo:
                m.close()
    add_speedups(rows)
    return rows


def step_count(subjects: list[Subject], cfg: BenchConfig) -> int:
    """The progress steps :func:`run` announces."""
    return len(pairs(subjects, cfg)) + (cfg.rounds if cfg.rounds > 1 else 0)
