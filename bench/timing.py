"""One timing loop for every Runner, with trtexec's methodology.

* fixed shape, input staged once (``Runner.prepare``), copies excluded unless asked;
* warm-up by count *and* time (at least ``warmup`` iterations and ``warmup_s`` seconds);
* then at least ``min_iters`` iterations *and* ``min_time_s`` seconds;
* on CUDA, CUDA events around every step (GPU time, no host jitter) and one pair
  around the whole run for throughput, like trtexec's "Total Host Walltime";
  on CPU, ``perf_counter`` around each synchronous step.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from twins_deploy.engines.runners.base import Runner


@dataclass
class Timing:
    batch: int
    iterations: int
    total_s: float
    latency_ms: list[float]
    method: str

    @property
    def images_per_s(self) -> float:
        return self.batch * self.iterations / self.total_s if self.total_s > 0 else float("nan")  # nothing timed

    def percentile(self, q: float) -> float:
        return percentile(self.latency_ms, q)

    def summary(self) -> dict[str, Any]:
        return {
            "batch": self.batch, "iterations": self.iterations, "total_s": round(self.total_s, 4),
            "images_per_s": round(self.images_per_s, 2),
            "latency_ms_median": round(statistics.median(self.latency_ms), 4),
            "latency_ms_p90": round(self.percentile(90), 4),
            "latency_ms_p99": round(self.percentile(99), 4),
            "latency_ms_mean": round(statistics.fmean(self.latency_ms), 4),
            "method": self.method,
        }


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    if not values:
        raise ValueError("no values")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def time_runner(runner: Runner, x: np.ndarray, *, warmup: int = 3, warmup_s: float = 0.2,
                min_iters: int = 10, min_time_s: float = 1.0, include_copies: bool = False,
                max_iters: int = 100_000) -> Timing:
    """Time ``runner.step()`` on ``x``; the runner must be active."""
    runner.prepare(x, include_copies=include_copies)
    t0, n = time.perf_counter(), 0
    while n < warmup or time.perf_counter() - t0 < warmup_s:
        runner.step()
        runner.sync()
        n += 1
    if runner.device == "cuda":
        return _time_cuda(runner, len(x), min_iters, min_time_s, max_iters)
    lat: list[float] = []
    start = time.perf_counter()
    while (len(lat) < min_iters or time.perf_counter() - start < min_time_s) and len(lat) < max_iters:
        s = time.perf_counter()
        runner.step()
        runner.sync()
        lat.append((time.perf_counter() - s) * 1e3)
    return Timing(len(x), len(lat), time.perf_counter() - start, lat, "perf_counter per step (CPU)")


def _time_cuda(runner: Runner, batch: int, min_iters: int, min_time_s: float, max_iters: int) -> Timing:
    events: list[tuple[Any, Any]] = []
    first = torch.cuda.Event(enable_timing=True)
    last = torch.cuda.Event(enable_timing=True)
    stream = getattr(runner, "torch_stream", None) or torch.cuda.current_stream()
    wall0 = time.perf_counter()
    first.record(stream)
    while (len(events) < min_iters or time.perf_counter() - wall0 < min_time_s) and len(events) < max_iters:
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(stream)
        runner.step()
        e.record(stream)
        events.append((s, e))
        if len(events) % 2 == 0:  # keep at most two inferences in flight, as trtexec does
            events[-2][1].synchronize()
    last.record(stream)
    last.synchronize()
    lat = [s.elapsed_time(e) for s, e in events]
    return Timing(batch, len(events), first.elapsed_time(last) / 1e3, lat,
                  "CUDA events per step, back-to-back launches (GPU)")
