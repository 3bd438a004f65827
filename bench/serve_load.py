"""A bounded load test of ``twins-serve``: a real Triton server on localhost, fixed request counts.

For each serving mode (Triton's dynamic batching as the repository configures it, and
batch-1 serving, ``--max-batch 1``: one request per execution) a server is started as a
user starts it, then for each concurrency level ``C`` that many client threads (each with
its own tritonclient connection) send ``requests`` single-image requests between them, as
fast as answers come back. Per level: throughput (images/s over the level's wall time),
latency p50/p90/p99 per request, errors (a correct run has none), and from Triton's own
counters the executions and the average batch the dynamic batcher formed. The gain is the
dynamic-batching throughput over the batch-1 throughput at the same concurrency.

The run stops by itself: the request counts are fixed, the server is stopped with SIGINT
and must exit 0 leaving nothing behind. Clients and server share the machine, so on a
small CPU machine the clients' own work is part of what is measured (said in the results).
"""
from __future__ import annotations

import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from twins_deploy.artifacts import check_file_stem, now_iso, tool_versions
from twins_deploy.bench.machine import busy_reasons, busy_warning, load_start, loadavg, machine_info
from twins_deploy.bench.report import check_results_dir, write_all
from twins_deploy.bench.timing import percentile
from twins_deploy.errors import OptionError, ValidationFailedError, quoted
from twins_deploy.progress import Steps

PROTOCOLS = ("grpc", "http")
MODES = {"dynamic": [], "batch1": ["--max-batch", "1"]}  # mode -> extra twins-serve flags


@dataclass(frozen=True)
class LoadConfig:
    target: Path                          # a repository, an entry, or an artifact twins-serve accepts
    model: str | None = None              # which served model to load (default: the only one)
    concurrency: tuple[int, ...] = (1, 2, 4, 8, 16)
    requests: int = 256                   # per concurrency level and mode
    warmup: int = 4                       # requests per mode before the first level, not counted
    protocol: str = "grpc"
    modes: tuple[str, ...] = ("dynamic", "batch1")
    instances: int | None = None          # twins-serve --instances
    threads: int | None = None            # twins-serve --threads
    out: Path = Path("bench_out")
    name: str = "serve_load"
    quiet: bool = False
    command: str = ""                     # the command line, recorded with the results

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise OptionError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {quoted(self.protocol)}")
        if not self.concurrency or min(self.concurrency) < 1:
            raise OptionError(f"concurrency levels must be >= 1, got {list(self.concurrency)}")
        if self.requests < max(self.concurrency):
            raise OptionError(f"--requests {self.requests} is fewer than the highest concurrency "
                              f"{max(self.concurrency)}: every client must send at least one")
        unknown = [m for m in self.modes if m not in MODES]
        if unknown or not self.modes:
            raise OptionError(f"modes must be among {', '.join(MODES)}, got {list(self.modes)}")
        check_file_stem(self.name, "--name")


def _client(protocol: str, url: str) -> Any:
    if protocol == "grpc":
        import tritonclient.grpc as c
    else:
        import tritonclient.http as c
    return c, c.InferenceServerClient(url)


def _level(protocol: str, url: str, model: str, inputs: list[np.ndarray], concurrency: int,
           requests: int) -> dict[str, Any]:
    """``requests`` requests from ``concurrency`` threads; latencies and errors."""
    counts = [requests // concurrency + (k < requests % concurrency) for k in range(concurrency)]
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(concurrency + 1)

    def worker(k: int) -> None:
        mod, client = _client(protocol, url)
        mine, errs = [], []
        x = inputs[k % len(inputs)]
        inp = mod.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        start.wait()
        for _ in range(counts[k]):
            t0 = time.perf_counter()
            try:
                client.infer(model, [inp])
                mine.append(time.perf_counter() - t0)
            except Exception as e:  # an error is a result of the run, counted and kept
                errs.append(f"{type(e).__name__}: {e}"[:300])
        with lock:
            latencies.extend(mine)
            errors.extend(errs)

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(concurrency)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = [v * 1e3 for v in latencies]
    return {
        "concurrency": concurrency, "requests": requests, "ok": len(latencies), "errors": len(errors),
        "error_samples": sorted(set(errors))[:3], "wall_s": round(wall, 3),
        "throughput_ips": round(len(latencies) / wall, 2) if wall > 0 else None,
        "latency_ms_p50": round(percentile(ms, 50), 2) if ms else None,
        "latency_ms_p90": round(percentile(ms, 90), 2) if ms else None,
        "latency_ms_p99": round(percentile(ms, 99), 2) if ms else None,
        "latency_ms_mean": round(float(np.mean(ms)), 2) if ms else None,
    }


def chosen_model(cfg: LoadConfig) -> Any:
    """The served model (a ``ServedModel``) the load test drives, found and checked before
    any server starts: a wrong target or model name costs no server start-up."""
    from twins_deploy.serving.server import resolve_targets

    served = {s.model.name: s for s in resolve_targets([cfg.target])}
    if cfg.model and cfg.model not in served:
        raise OptionError(f"model {quoted(cfg.model)} is not served from {cfg.target} (served: {', '.join(served)})")
    if not cfg.model and len(served) != 1:
        raise OptionError(f"{cfg.target} serves {len(served)} models ({', '.join(served)}); "
                          "pick one with --serve-model")
    chosen = served[cfg.model or next(iter(served))]
    if -1 in chosen.model.inputs[0].dims[-2:]:
        raise OptionError(f"{chosen.model.name} has a dynamic H/W; the load test sends the export size only: "
                          "serve an artifact exported without --dynamic-hw")
    return chosen


def run_mode(cfg: LoadConfig, mode: str, steps: Steps, chosen: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One server (``mode``), every concurrency level against ``chosen``; the rows and server facts."""
    from twins_deploy.serving.server import ServerProcess

    args = list(MODES[mode])
    if cfg.instances:
        args += ["--instances", str(cfg.instances)]
    if cfg.threads:
        args += ["--threads", str(cfg.threads)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="tw-") as tmp:  # short: Unix socket paths live under it
        server = ServerProcess([cfg.target], args, Path(tmp))
        try:
            with steps.step(f"start twins-serve ({mode}: {' '.join(args) or 'as configured'})"):
                server.wait_ready()
                model = chosen.model.name
                steps.note(next((ln for ln in server.out.read_text().splitlines()
                                 if ln.startswith(f"serving {model} ")), f"serving {model}"))
            url = f"127.0.0.1:{server.grpc if cfg.protocol == 'grpc' else server.http}"
            _, client = _client(cfg.protocol, url)
            meta = client.get_model_metadata(model)
            meta = meta if isinstance(meta, dict) else {"inputs": [{"shape": list(i.shape)} for i in meta.inputs]}
            shape = [int(d) for d in meta["inputs"][0]["shape"]]
            shape = [1, *shape[1:]] if shape[0] == -1 else shape
            rng = np.random.default_rng(0)
            inputs = [rng.standard_normal(shape, dtype=np.float32) for _ in range(4)]
            server_info = {"tritonserver": _server_version(client), "served": model}
            if cfg.warmup:
                _level(cfg.protocol, url, model, inputs, 1, cfg.warmup)
            for c in cfg.concurrency:
                with steps.step(f"{mode}: concurrency {c}, {cfg.requests} requests"):
                    n0 = server.metric("nv_inference_count", model)
                    e0 = server.metric("nv_inference_exec_count", model)
                    row = _level(cfg.protocol, url, model, inputs, c, cfg.requests)
                    n, e = _counted(server, model, n0, e0, row["ok"])
                    row.update(mode=mode, executions=int(e), avg_batch=round(n / e, 2) if e else None)
                    rows.append(row)
                    steps.note(f"{row['throughput_ips']} img/s, p50 {row['latency_ms_p50']} ms, "
                               f"p99 {row['latency_ms_p99']} ms, avg batch {row['avg_batch']}, errors {row['errors']}")
            m = chosen.manifest
            server_info["artifact"] = {"file": chosen.artifact.name, "sha256": m.sha256, "model": m.model.name,
                                       "precision": m.precision, "batch": m.input.batch,
                                       "img_size": list(m.spec.img_size)}
        finally:
            code = server.stop()
            stopped = {"exit_code": code, "leftovers": server.leftovers()}
    return rows, {**server_info, **stopped}


def _counted(server: Any, model: str, n0: float, e0: float, ok: int, wait_s: float = 10.0) -> tuple[float, float]:
    """Triton's inference and execution counts since (n0, e0). A response can reach the
    client a moment before Triton counts it, so read until every answered request is counted."""
    deadline = time.monotonic() + wait_s
    while True:
        n = server.metric("nv_inference_count", model) - n0
        e = server.metric("nv_inference_exec_count", model) - e0
        if n >= ok or time.monotonic() > deadline:
            return n, e
        time.sleep(0.05)


def _server_version(client: Any) -> str | None:
    meta = client.get_server_metadata()
    return meta.get("version") if isinstance(meta, dict) else getattr(meta, "version", None)


SERVE_COMMAND = "twins-bench --serve ..."  # what to run again from the serving environment


def _one_minute(avg: list[float] | None) -> float | None:
    """The 1-minute figure of :func:`twins_deploy.bench.machine.loadavg`'s three."""
    return avg[0] if avg else None


def gains(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Dynamic batching's throughput over batch-1 serving's, per concurrency."""
    by = {(r["mode"], r["concurrency"]): r for r in rows}
    out = []
    for (mode, c), r in sorted(by.items(), key=lambda kv: kv[0][1]):
        base = by.get(("batch1", c))
        if mode == "dynamic" and base and base["throughput_ips"] and r["throughput_ips"]:
            out.append({"concurrency": c, "dynamic_ips": r["throughput_ips"], "batch1_ips": base["throughput_ips"],
                        "gain": round(r["throughput_ips"] / base["throughput_ips"], 2),
                        "dynamic_p99_ms": r["latency_ms_p99"], "batch1_p99_ms": base["latency_ms_p99"]})
    return out


def run_load_test(cfg: LoadConfig) -> tuple[list[Path], dict[str, Any]]:
    """Every mode and level; results as JSON, CSV, markdown and PNG, written like every
    twins-bench run's (:mod:`twins_deploy.bench.report`). Errors, or a server that did not
    stop cleanly, fail the run (exit 1) after the results are written."""
    from twins_deploy.serving.server import check_environment

    check_environment(SERVE_COMMAND)
    check_results_dir(cfg.out)
    chosen = chosen_model(cfg)
    # Judged before the server starts: during the test, the server is the "other process"
    # that the busy rule of an in-process benchmark counts against the machine.
    start = load_start()
    busy = busy_reasons(start)
    if busy:
        print(busy_warning(busy), file=sys.stderr, flush=True)
    steps = Steps(len(cfg.modes) * (1 + len(cfg.concurrency)), quiet=cfg.quiet)
    rows: list[dict[str, Any]] = []
    servers = {}
    for mode in cfg.modes:
        mode_rows, servers[mode] = run_mode(cfg, mode, steps, chosen)
        rows += mode_rows
    tools = tool_versions(("nvidia-pytriton", "tritonclient"))
    tools["tritonserver"] = next((s.get("tritonserver") for s in servers.values() if s.get("tritonserver")), None)
    result = {
        "kind": "serve_load",
        "title": f"{next(iter(servers.values())).get('served')} over {cfg.protocol}, batch-1 requests",
        "created": now_iso(),
        "method": (f"{cfg.requests} single-image requests per level, concurrency {list(cfg.concurrency)} "
                   "client threads "
                   f"(one tritonclient {cfg.protocol} connection each, next request as soon as the answer arrives), "
                   f"{cfg.warmup} warm-up requests per server; throughput = answered requests / wall time; "
                   "executions and avg batch from Triton's nv_inference_count / nv_inference_exec_count"),
        "environment": {"machine": machine_info(), "tools": tools,
                        "loadavg_1min": {"start": _one_minute(start["loadavg_start"]), "end": _one_minute(loadavg())},
                        "busy_at_start": busy},
        "command": cfg.command,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "servers": servers, "rows": rows, "gains": gains(rows),
    }
    paths = write_all(cfg.out, cfg.name, result)
    json_path = paths[0]
    errors = sum(r["errors"] for r in rows)
    unclean = {m: s for m, s in servers.items() if s["exit_code"] != 0 or s["leftovers"]}
    if errors or unclean:
        raise ValidationFailedError(f"load test: {errors} failed requests"
                                    + (f"; servers that did not stop cleanly: {unclean}" if unclean else "")
                                    + f" (results in {json_path})")
    return paths, result

