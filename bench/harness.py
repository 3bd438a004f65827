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

Rows are independent: whatever fails for one runner (its artifact's export or engine build,
opening it, validating it) or at one batch becomes the status and reason of those rows, and
the run goes on; only Ctrl-C ends it early. A route tuned per batch (TensorRT) is timed at
each batch on an artifact made for that batch, as trtexec times the one shape it built for.
"""
from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from twins_deploy.artifacts import check_file_stem
from twins_deploy.bench.backends import (
    SWIN,
    Subject,
    describe_error,
    make_runner,
    tensorrt_problem,
    torch_threads,
)
from twins_deploy.bench.timing import Timing, percentile, time_runner
from twins_deploy.bench.timm_baseline import TIMM_ONNX, baseline_of, subject_name
from twins_deploy.engines.routes import ROUTES, TENSORRT, get_route
from twins_deploy.engines.runners.base import Runner
from twins_deploy.engines.validation import validate_against_pytorch, validation_cases
from twins_deploy.errors import BackendUnavailableError, OptionError
from twins_deploy.exporters.spec import BatchRange, ExportSpec
from twins_deploy.progress import Steps
from twins_deploy.registry import get_config

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
    calib: str | None = None        # images the INT8 routes are calibrated on
    targets: bool = False           # judge the CPU comparison's targets (--preset cpu-compare)
    out: Path = Path("bench_out")
    name: str = "bench"
    note: str = ""                  # a remark recorded with the results
    command: str = ""               # the command line, recorded with the results
    quiet: bool = False
    force: bool = False             # replace the results of an earlier run of the same --out and --name

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
        no_timm = [m for m in self.models if get_config(m).timm_name is None] if TIMM_ONNX in self.compare else []
        if no_timm:
            raise OptionError(f"--compare {TIMM_ONNX}: {', '.join(no_timm)} has no timm counterpart to export")
        int8 = [b for b in self.backends if get_route(b).precision == "int8"]
        if int8 and self.calib is None:
            raise OptionError(f"{', '.join(int8)} run INT8 graphs, calibrated on images: pass --calib DIR "
                              "(never random data)")
        if self.calib is not None and not int8:
            raise OptionError("--calib calibrates the INT8 routes; none is among --backends")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        return d


@dataclass
class Measured:
    """One runner of a run: a (subject, backend) timed at ``batches``, each round's timings,
    its verdict, and for each batch that could not be timed, (status, reason). A route tuned
    per batch has one per batch, its artifact made for that batch (``tuned_for``)."""

    subject: Subject
    backend: str
    batches: tuple[int, ...]
    tuned_for: int | None = None
    runner: Runner | None = None
    info: dict[str, Any] = field(default_factory=dict)  # the runner's description, after its last timing
    validation: dict[str, Any] | None = None
    timings: dict[int, list[Timing]] = field(default_factory=dict)
    peaks: dict[int, float] = field(default_factory=dict)
    failed: dict[int, tuple[str, str]] = field(default_factory=dict)  # batch -> (status, reason)
    close_error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.subject.name} / {self.backend}" + (f" (tuned for batch {self.tuned_for})"
                                                          if self.tuned_for else "")

    def close(self) -> None:
        """Deactivate the runner; a failure (a CUDA error freeing its memory) is recorded, so
        that its rows say so and the next runner still runs."""
        runner, self.runner = self.runner, None
        if runner is None:
            return
        try:
            runner.deactivate()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception as e:
            self.close_error = describe_error(e)[:300]


def failure(e: Exception) -> tuple[str, str]:
    """(status, reason) of a row that could not be timed: "skipped" when the backend cannot
    run here (missing software or hardware), "oom" when the device ran out of memory, else "error"."""
    text = str(e).lower()
    if isinstance(e, (BackendUnavailableError, ImportError)):
        status = "skipped"
    elif isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in text or "cudaerrormemoryallocation" in text:
        status = "oom"
    else:
        status = "error"
    return status, describe_error(e)[:300]


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
    """``runner`` against the subject's PyTorch FP32 reference at ``batches``, judged with the
    thresholds of the precision its route computes in; the verdict for its rows. A runner that
    cannot even run the cases fails with the reason (the benchmark goes on). Leaves the runner inactive."""

    precision = get_route(backend).precision
    b = max(batches)
    spec = ExportSpec(model=subject.name, img_size=subject.img_size, batch=BatchRange(1, b, b))
    cases = validation_cases(spec, subject.preprocess, batches=sorted(set(batches)))
    ref = subject.reference()
    try:
        report = validate_against_pytorch(ref, runner, precision, cases)
    except Exception as e:  # a runner that cannot run the cases fails validation, with why
        runner.deactivate()
        return {"passed": False, "judged_as": precision, "summary": f"FAIL: {describe_error(e)}"[:300],
                "failures": [describe_error(e)[:300]]}
    d = report.to_dict()
    return {"passed": d["passed"], "judged_as": precision, "summary": d["summary"],
            "max_abs": max((s.max_abs for s in report.stats), default=None),
            "min_cosine": min((s.min_cosine for s in report.stats), default=None),
            "top1_agreement": d["top1_agreement"], "failures": d["failures"],
            "cases": [c for c, _ in cases]}


def _open(m: Measured, cfg: BenchConfig, steps: Steps, unavailable: BackendUnavailableError | None = None) -> None:
    """Open (and with ``cfg.validate`` validate) ``m``'s runner; any failure (a backend missing
    here, a failed export or engine build, a refused plan, a CUDA error) becomes the result of
    its rows, and the run goes on. ``unavailable``: why the runner cannot run here, found before
    (the TensorRT preflight), for its rows without trying."""
    try:
        if unavailable is not None:
            raise unavailable
        m.runner = make_runner(m.backend, m.subject, tuned_for=m.tuned_for, cuda_graphs=cfg.cuda_graphs,
                               threads=cfg.threads)
        m.runner.activate()
        if cfg.validate:
            m.validation = validate_runner(m.subject, m.backend, m.runner, m.batches)
            steps.note(f"validation: {m.validation['summary']}")
            m.runner.activate()  # validation leaves it inactive
    except Exception as e:  # Ctrl-C (not an Exception) still ends the run
        status, reason = failure(e)
        m.failed = dict.fromkeys(m.batches, (status, reason))
        steps.note(f"{status}: {reason}")
        m.close()


def _time(m: Measured, batch: int, cfg: BenchConfig, steps: Steps, label: str = "") -> None:
    """One timed loop of ``m`` at ``batch``; a failure is recorded for the row, and that batch
    is not timed again in later rounds."""
    if m.runner is None or batch in m.failed:
        return
    try:
        x = np.random.default_rng(batch).standard_normal((batch, 3, *m.subject.img_size), dtype=np.float32)
        on_gpu = m.runner.device == "cuda" and torch.cuda.is_available()
        if on_gpu:
            torch.cuda.reset_peak_memory_stats()
        t = time_runner(m.runner, x, warmup=cfg.warmup, warmup_s=cfg.warmup_s, min_iters=cfg.min_iters,
                        min_time_s=cfg.min_time_s, include_copies=cfg.include_copies)
        m.info = m.runner.describe()
        if on_gpu and get_route(m.backend).runs_model:
            m.peaks[batch] = max(m.peaks.get(batch, 0.0), round(torch.cuda.max_memory_allocated() / 2**20, 1))
    except Exception as e:  # a failure at one batch size is a result, not the end of the run
        m.failed[batch] = failure(e)
        steps.note(f"{label}batch {batch}: {': '.join(m.failed[batch])}")
        return
    m.timings.setdefault(batch, []).append(t)
    steps.note(f"{label}batch {batch}: {t.images_per_s:.1f} img/s, median {statistics.median(t.latency_ms):.2f} ms")


def _rows(m: Measured) -> list[dict[str, Any]]:
    """The rows of ``m``'s batches that have a result so far (timed, or failed)."""
    rows = []
    for b in m.batches:
        if b in m.failed:
            row = _row(m.subject, m.backend, b, status=m.failed[b][0], reason=m.failed[b][1])
        elif b in m.timings:
            row = timing_row(m.subject, m.backend, m.timings[b], m.info, m.peaks.get(b))
            if m.close_error is not None:  # measured, but the runner then failed: not a result to trust
                row.update(status="error", reason=f"closing the runner failed: {m.close_error}")
        else:
            continue
        if m.validation is not None:
            row["validation"] = m.validation
        rows.append(row)
    return rows


def pairs(subjects: list[Subject], cfg: BenchConfig) -> list[Measured]:
    """Every runner of the run, in order: one per (subject, backend), or for a route tuned per
    batch one per (subject, backend, batch), so that each batch is timed on an artifact tuned for it."""
    todo = []
    for s in subjects:
        for b in s.backends(cfg.backends):
            if get_route(b).tuned_per_batch:
                todo += [Measured(s, b, (n,), tuned_for=n) for n in cfg.batches]
            else:
                todo.append(Measured(s, b, cfg.batches))
    return todo


def _no_publish(rows: list[dict[str, Any]]) -> None:
    return None


def step_labels(todo: list[Measured], cfg: BenchConfig) -> list[str]:
    """The progress steps of a run, in the order :func:`run` takes them: one per runner
    (opened, and with one round timed), then one per interleaved round. The counters that
    ``[i/N]`` prints come from this list, never from a separate count."""
    rounds = [f"round {i + 1}/{cfg.rounds}" for i in range(cfg.rounds)] if cfg.rounds > 1 else []
    return [m.label for m in todo] + rounds


def run(subjects: list[Subject], cfg: BenchConfig,
        publish: Callable[[list[dict[str, Any]]], None] = _no_publish,
        progress: Callable[[int], Steps] | None = None) -> list[dict[str, Any]]:
    """Measure every (subject, backend, batch). One round: each runner is opened, timed at
    every batch and closed before the next opens. More: all are opened, then timed in
    interleaved rounds (order reversed every other round), then closed. A run of TensorRT
    routes only, where TensorRT cannot work, raises the preflight's error before any work.

    ``publish`` receives every row with a result so far each time one is added or changes
    (the caller writes them, so that an interrupted run keeps what it measured). ``progress``
    makes the step printer for the number of steps in :func:`step_labels` (default: ``Steps``,
    quiet as ``cfg`` says); each step announced is taken from that list."""
    todo = pairs(subjects, cfg)
    labels = step_labels(todo, cfg)
    steps = (progress or (lambda n: Steps(n, quiet=cfg.quiet)))(len(labels))
    planned = iter(labels)

    def rows() -> list[dict[str, Any]]:
        out = [r for m in todo for r in _rows(m)]
        add_speedups(out)
        return out

    trt = tensorrt_problem(cfg.backends)  # once per run: each TensorRT runner would find the same
    if trt is not None and all(get_route(b).family == TENSORRT for b in cfg.backends):
        raise trt  # nothing could be measured: stop (exit 3) before any model is built or file written
    with torch_threads(cfg.threads):
        for s in subjects:
            s.model()
        publish([])  # from here on, what is on disk is this run's
        try:
            for m in todo:
                with steps.step(next(planned)):
                    _open(m, cfg, steps, trt if get_route(m.backend).family == TENSORRT else None)
                    if cfg.rounds == 1:
                        for b in m.batches:
                            _time(m, b, cfg, steps)
                            publish(rows())
                        m.close()
                publish(rows())
            for i in range(cfg.rounds) if cfg.rounds > 1 else ():
                with steps.step(next(planned)):
                    for m in todo if i % 2 == 0 else todo[::-1]:
                        for b in m.batches:
                            _time(m, b, cfg, steps, f"{m.label} ")
                            publish(rows())
        finally:
            for m in todo:
                m.close()
    return rows()


def step_count(subjects: list[Subject], cfg: BenchConfig) -> int:
    """How many progress steps :func:`run` announces."""
    return len(step_labels(pairs(subjects, cfg), cfg))
