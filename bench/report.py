"""Benchmark results on disk, for every twins-bench run (Runner timings and the serving load
test alike): JSON (everything), CSV (timm's columns first), markdown, PNG, each written
atomically, into a folder outside the package's source. A Runner benchmark rewrites its JSON
and CSV as rows come in (``"complete": false`` until it ends), the markdown and PNG at the end.

Before anything is measured, every place a result goes is checked (:func:`check_results`):
the folder can be written, each results file is a regular file or absent (a folder, a FIFO or
a symlink loop there is named), and an earlier run's results are replaced only with --force,
as twins-export replaces artifacts."""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import twins_deploy
import twins_deploy.bench
import twins_deploy.engines
import twins_deploy.exporters
from twins_deploy.artifacts import (
    check_output_dir,
    existing_file,
    output_dir,
    path_kind,
    write_bytes_atomic,
    write_json_atomic,
)
from twins_deploy.bench.machine import load_line
from twins_deploy.engines.routes import TENSORRT, get_route
from twins_deploy.errors import ArtifactError, OptionError, quoted

CSV_COLUMNS = ["model", "backend", "precision", "infer_samples_per_sec", "infer_step_time", "infer_batch_size",
               "infer_img_size", "param_count", "infer_gmacs", "latency_ms_p90", "latency_ms_p99",
               "speedup_vs_torch", "speedup_vs_timm_onnx", "achieved_gflops", "peak_memory_mib", "iterations",
               "validated", "status", "reason"]
RESULT_SUFFIXES = (".json", ".csv", ".md", ".png")
CACHE_DIR = ".artifacts"  # the artifacts a run makes, reused by the next (bench/backends.py)
MAX_RESULT_BYTES = 256 << 20  # a results JSON larger than this is not one twins-bench wrote
SERVE_CSV_COLUMNS = ["mode", "concurrency", "requests", "ok", "errors", "throughput_ips", "latency_ms_p50",
                     "latency_ms_p90", "latency_ms_p99", "latency_ms_mean", "executions", "avg_batch", "wall_s"]


def check_results_dir(out: Path) -> Path:
    """``out`` can be written and lies outside the installed package's source folders
    (a benchmark never writes into the source tree, whatever the working directory)."""
    d = check_output_dir(out)  # what is in the way first (a FIFO, a symlink loop, a name too long)
    target = Path(os.path.realpath(out))
    for pkg in (twins_deploy, twins_deploy.bench, twins_deploy.engines, twins_deploy.exporters):
        src = Path(pkg.__file__).resolve().parent
        if target == src or src in target.parents:
            raise OptionError(f"--out {quoted(str(out))} lies inside the package source ({src}); "
                              "write results to a folder outside it (e.g. --out results)")
    return d


def result_paths(out_dir: Path, stem: str) -> list[Path]:
    """``<stem>.json``, ``.csv``, ``.md``, ``.png`` in ``out_dir``: every file a run writes."""
    return [out_dir / f"{stem}{suffix}" for suffix in RESULT_SUFFIXES]


def check_results(out_dir: Path, stem: str, force: bool, cache: bool = True) -> list[Path]:
    """Before any measurement: each results file of ``stem`` is absent or a regular file (a
    folder, FIFO, device, socket, broken symlink or symlink loop where one goes is refused,
    --force included: an atomic write could not replace it, and opening a FIFO would block; a
    symlink to a file is replaced as itself, never followed); an earlier run's results are
    refused unless ``force``. With ``cache``, the artifacts cache must be a folder
    or absent. Returns the earlier results that ``force`` lets this run replace."""
    for p in result_paths(out_dir, stem) + ([out_dir / CACHE_DIR] if cache else []):
        kind = path_kind(p)
        wanted = "a folder" if p.name == CACHE_DIR else "a file"
        if kind not in ("missing", wanted):
            what = "the benchmark's artifacts cache" if p.name == CACHE_DIR else "a results file"
            raise ArtifactError(f"{quoted(str(p))} is {kind}, where {what} goes; move it, or choose another "
                                f"{'--out' if p.name == CACHE_DIR else '--name or --out'}")
    earlier = [p for p in result_paths(out_dir, stem) if path_kind(p) == "a file"]
    if earlier and not force:
        raise ArtifactError(f"{', '.join(p.name for p in earlier)} in {quoted(str(out_dir))} hold{'s' * (len(earlier) == 1)} "
                            f"the results of an earlier run{describe_earlier(out_dir / f'{stem}.json')}; pass --force "
                            "to replace them, or choose another --name or --out")
    return earlier


def describe_earlier(json_path: Path) -> str:
    """`` (created T, N rows[, interrupted])`` from an earlier run's JSON; "" when unreadable."""
    try:
        if path_kind(json_path) != "a file" or json_path.stat().st_size > MAX_RESULT_BYTES:
            return ""
        data = json.loads(json_path.read_bytes())
        rows = len(data["rows"])
        partial = ", interrupted" if data.get("complete") is False else ""
        return f" (created {quoted(str(data.get('created')), 40)}, {rows} row{'s' * (rows != 1)}{partial})"
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return ""


def _is_serve(result: dict[str, Any]) -> bool:
    return result.get("kind") == "serve_load" or "servers" in result  # older serve results have no kind


def to_csv(rows: list[dict[str, Any]], columns: list[str] = CSV_COLUMNS) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        values = dict(r)
        if r.get("validation") is not None:
            values["validated"] = "pass" if r["validation"]["passed"] else "fail"
        w.writerow({k: ("" if values.get(k) is None else values.get(k)) for k in columns})
    return buf.getvalue()


def _fmt(v: Any, nd: int = 1) -> str:
    if v is None:
        return "-"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def _verdict(v: dict[str, Any]) -> str:
    if not v.get("passed"):
        return f"FAIL ({v.get('judged_as')}): " + "; ".join(v.get("failures") or [])[:200]
    t1 = v.get("top1_agreement")
    return (f"PASS ({v.get('judged_as')}): max abs {v['max_abs']:.2g}, min cos {v['min_cosine']:.6f}"
            + (f", top-1 {100 * t1:.0f}%" if t1 is not None else ""))


def results_table(rows: list[dict[str, Any]]) -> list[str]:
    """The rows as a markdown table (also what twins-bench prints when it ends); the columns
    for timm's export and for validation appear when the run had them."""
    timm = any(r.get("speedup_vs_timm_onnx") is not None for r in rows)
    valid = any(r.get("validation") for r in rows)
    head = ["model", "backend", "batch", "img/s", "median ms", "p90 ms", "p99 ms", "speedup vs torch"]
    head += ["vs timm's ONNX"] * timm + ["GFLOP/s", "peak MiB"] + ["validation"] * valid
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], r["backend"], str(r["infer_batch_size"])]
        if r["status"] != "ok":
            cells += [f"{r['status']}: {r.get('reason', '')}"] + [""] * (len(head) - 4)
        else:
            cells += [_fmt(r["infer_samples_per_sec"]), _fmt(r["infer_step_time"], 2), _fmt(r["latency_ms_p90"], 2),
                      _fmt(r["latency_ms_p99"], 2), _fmt(r.get("speedup_vs_torch"), 2)]
            cells += [_fmt(r.get("speedup_vs_timm_onnx"), 2)] * timm
            cells += [_fmt(r.get("achieved_gflops")), _fmt(r.get("peak_memory_mib"))]
            cells += [_verdict(r["validation"]) if r.get("validation") else "-"] * valid
        lines.append("|" + "|".join(f" {c} " if c else " " for c in cells) + "|")
    return lines


def paper_table(paper: list[dict[str, Any]]) -> list[str]:
    """Measured speedups in the paper's setting. The paper's 1.7x is TensorRT on a GPU:
    it is shown beside TensorRT rows only, never beside a CPU or PyTorch backend."""
    lines = ["| backend | measured speedup vs PyTorch eager FP32 | the paper's claim |", "|---|---|---|"]
    for p in paper:
        measured = _fmt(p["measured_speedup"], 2) + "x" if p["measured_speedup"] else f"{p['status']}: {p.get('reason')}"
        claim = f"{p['paper_speedup']}x (TensorRT, GPU)" if get_route(p["backend"]).family == TENSORRT else "no figure (not TensorRT)"
        lines.append(f"| {p['backend']} | {measured} | {claim} |")
    return lines


def targets_lines(t: dict[str, Any]) -> list[str]:
    """The CPU comparison's verdict, one line per target."""
    out = []
    for key, what in (("best_validated", "best validated route"),
                      ("best_fp32", "best route passing the FP32 thresholds"),
                      ("best_int8", "best validated INT8 route")):
        if key not in t:
            continue
        v = t[key]
        out.append(f"- {what}: none measured" if v is None else
                   f"- {what}: {v['model']} / {v['backend']} at {v['speedup']:.2f}x (target >= {v['target']}x): "
                   + ("met" if v["met"] else "NOT met"))
    return out


def _graphs_line(graphs: dict[str, dict[str, Any]]) -> list[str]:
    parts = []
    for subject, kinds in graphs.items():
        for kind, g in kinds.items():
            extra = f", exported in {g['export_s']} s with timm's recipe" if "export_s" in g else ""
            parts.append(f"{subject} {kind} {_fmt(g.get('nodes'))} nodes, {_fmt(g.get('size_mb'))} MB{extra}")
    return [f"- graphs: {'; '.join(parts)}"] if parts else []


def _header(result: dict[str, Any], title: str) -> list[str]:
    env = result["environment"]
    m, gpu = env["machine"], env["machine"].get("gpu")
    flags = f", flags: {', '.join(m['cpu_flags']) or '-'}" if "cpu_flags" in m else ""
    lines = [f"# {title}", "",
             f"- machine: {m['cpu']} ({m['cores']} cores{flags})"
             + (f"; GPU {gpu['name']} (SM {gpu['compute_capability']}, {gpu['memory_gib']} GiB)" if gpu else "; no GPU"),
             "- versions: " + ", ".join(f"{k} {v}" for k, v in env["tools"].items() if v),
             f"- method: {result['method']}", f"- created: {result['created']}"]
    load = load_line(env.get("load"))
    if load:
        lines.append(load)
    if result.get("note"):
        lines.append(f"- note: {result['note']}")
    if result.get("command"):
        lines.append(f"- command: `{result['command']}`")
    return lines


def to_markdown(result: dict[str, Any]) -> str:
    if _is_serve(result):
        return serve_markdown(result)
    partial = ["- **partial**: the run did not complete; these are the rows it measured before it stopped"
               ] if result.get("complete") is False else []
    lines = [*_header(result, f"twins-bench: {result['title']}"), *_graphs_line(result.get("graphs") or {}),
             *partial, "", *results_table(result["rows"])]
    if result.get("paper"):
        lines += ["", "## The paper's comparison (Twins-SVT-S, 224x224, batch 192)", "", *paper_table(result["paper"])]
    if result.get("targets"):
        t = result["targets"]
        lines += ["", f"## Targets (batch {t['batch']}, against timm's ONNX export in ONNX Runtime)", "",
                  *targets_lines(t)]
    return "\n".join(lines) + "\n"


def serve_markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [*_header(result, f"twins-serve load test: {result['title']}"),
             "- clients and server on the same machine",
             f"- load average (1 min) at start/end: {env['loadavg_1min']['start']} / {env['loadavg_1min']['end']} "
             f"on {env['machine']['cores']} cores (the test's own server and clients included)",
             *([f"- **busy machine** before the test: {'; '.join(env['busy_at_start'])}"] if env.get("busy_at_start")
               else []), "",
             "| mode | concurrency | requests | errors | img/s | p50 ms | p90 ms | p99 ms | executions | avg batch |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['mode']} | {r['concurrency']} | {r['requests']} | {r['errors']} | {r['throughput_ips']} | "
                     f"{r['latency_ms_p50']} | {r['latency_ms_p90']} | {r['latency_ms_p99']} | {r['executions']} | "
                     f"{r['avg_batch']} |")
    if result["gains"]:
        lines += ["", "Dynamic batching vs batch-1 serving (same server, same clients):", "",
                  "| concurrency | dynamic img/s | batch-1 img/s | gain | dynamic p99 ms | batch-1 p99 ms |",
                  "|---|---|---|---|---|---|"]
        for g in result["gains"]:
            lines.append(f"| {g['concurrency']} | {g['dynamic_ips']} | {g['batch1_ips']} | {g['gain']}x | "
                         f"{g['dynamic_p99_ms']} | {g['batch1_p99_ms']} |")
    if not result.get("command") and result.get("config", {}).get("command"):  # recorded before 'command' moved up
        lines += ["", f"Command: `{result['config']['command']}`"]
    return "\n".join(lines).rstrip() + "\n"


def _series(result: dict[str, Any]) -> tuple[dict[str, list[tuple[int, float]]], str]:
    """Throughput per line of the chart, over batch size (or client concurrency)."""
    series: dict[str, list[tuple[int, float]]] = {}
    if _is_serve(result):
        for r in result["rows"]:
            if r.get("throughput_ips"):
                series.setdefault(r["mode"], []).append((r["concurrency"], r["throughput_ips"]))
        return series, "concurrent clients"
    for r in result["rows"]:
        if r["status"] == "ok":
            series.setdefault(f"{r['model']} {r['backend']}", []).append((r["infer_batch_size"], r["infer_samples_per_sec"]))
    return series, "batch size"


def chart_png(result: dict[str, Any]) -> bytes | None:
    """Throughput per series: bars when one batch size (concurrency) was measured, lines over
    them otherwise; the y axis always starts at zero. None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    series, x_label = _series(result)
    fig, ax = plt.subplots(figsize=(8, 5))
    xs = sorted({x for pts in series.values() for x, _ in pts})
    if len(xs) == 1:
        labels = sorted(series)
        bars = ax.bar(range(len(labels)), [series[k][0][1] for k in labels], color="tab:blue")
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
        ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
        ax.set_xlabel(f"{x_label} {xs[0]}")
    else:
        for label, pts in sorted(series.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        ax.set_xscale("log", base=2)
        if xs:
            ax.set_xticks(xs, [str(x) for x in xs])
            ax.minorticks_off()
        ax.set_xlabel(x_label)
        if series:
            ax.legend(fontsize=8)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("images / s")
    ax.set_title(result["title"])
    ax.grid(True, axis="y", alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_rows(out_dir: Path, stem: str, result: dict[str, Any]) -> list[Path]:
    """``<stem>.json`` and ``.csv`` in ``out_dir``, each replaced in one step (a temporary file
    renamed into place): a run rewrites them as rows come in, and a reader (or an
    interrupted run) never sees half a file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.csv"]
    write_json_atomic(paths[0], result)
    write_bytes_atomic(paths[1], to_csv(result["rows"], SERVE_CSV_COLUMNS if _is_serve(result) else CSV_COLUMNS).encode())
    return paths


def write_all(out_dir: Path, stem: str, result: dict[str, Any]) -> list[Path]:
    """``<stem>.json``, ``.csv``, ``.md`` and (with matplotlib) ``.png`` in ``out_dir``."""
    paths = [*write_rows(out_dir, stem, result), out_dir / f"{stem}.md"]
    write_bytes_atomic(paths[2], to_markdown(result).encode())
    png = chart_png(result)
    if png is not None:
        paths.append(out_dir / f"{stem}.png")
        write_bytes_atomic(paths[-1], png)
    return paths


def rerender(json_path: Path) -> list[Path]:
    """Rewrite the markdown and PNG of a recorded run from its JSON (the measurements), in its
    folder, held (another run writing there is refused); what is in the way is named first."""
    path = existing_file(json_path, "results JSON")  # not a folder, a FIFO (which would block), ...
    if path.stat().st_size > MAX_RESULT_BYTES:
        raise ArtifactError(f"{quoted(str(path))} is {path.stat().st_size / 2**20:.0f} MiB: not a twins-bench result")
    try:
        result = json.loads(path.read_bytes())
        md, png = to_markdown(result), chart_png(result)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as e:
        raise ArtifactError(f"{quoted(str(path))} is not a twins-bench result: {type(e).__name__}: "
                            f"{quoted(str(e), 200)}") from None
    paths = [path.with_suffix(".md")] + ([path.with_suffix(".png")] if png is not None else [])
    with output_dir(path.parent, option=None):
        for p in paths:
            kind = path_kind(p)
            if kind not in ("missing", "a file"):
                raise ArtifactError(f"{quoted(str(p))} is {kind}, where the rerendered results go; move it")
        write_bytes_atomic(paths[0], md.encode())
        if png is not None:
            write_bytes_atomic(paths[1], png)
    return paths
