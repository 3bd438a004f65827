"""Benchmark results on disk: JSON (everything), CSV (timm's columns first), markdown, PNG."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from twins_deploy.artifacts import write_bytes_atomic

CSV_COLUMNS = ["model", "backend", "precision", "infer_samples_per_sec", "infer_step_time", "infer_batch_size",
               "infer_img_size", "param_count", "infer_gmacs", "latency_ms_p90", "latency_ms_p99",
               "speedup_vs_torch", "achieved_gflops", "peak_memory_mib", "iterations", "status", "reason"]


def to_csv(rows: list[dict[str, Any]]) -> str:
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_COLUMNS})
    return buf.getvalue()


def _fmt(v: Any, nd: int = 1) -> str:
    if v is None:
        return "-"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def to_markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    gpu = env["machine"].get("gpu")
    lines = [f"# twins-bench: {result['title']}", "",
             f"- machine: {env['machine']['cpu']} ({env['machine']['cores']} cores)"
             + (f"; GPU {gpu['name']} (SM {gpu['compute_capability']}, {gpu['memory_gib']} GiB)" if gpu else "; no GPU"),
             "- versions: " + ", ".join(f"{k} {v}" for k, v in env["tools"].items() if v),
             f"- method: {result['method']}", f"- created: {result['created']}", "",
             "| model | backend | batch | img/s | median ms | p90 ms | p99 ms | speedup vs torch | GFLOP/s | peak MiB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if r["status"] != "ok":
            lines.append(f"| {r['model']} | {r['backend']} | {r['infer_batch_size']} | {r['status']}: "
                         f"{r.get('reason', '')} | | | | | | |")
            continue
        lines.append(f"| {r['model']} | {r['backend']} | {r['infer_batch_size']} | {_fmt(r['infer_samples_per_sec'])} "
                     f"| {_fmt(r['infer_step_time'], 2)} | {_fmt(r['latency_ms_p90'], 2)} | {_fmt(r['latency_ms_p99'], 2)} "
                     f"| {_fmt(r.get('speedup_vs_torch'), 2)} | {_fmt(r.get('achieved_gflops'))} | {_fmt(r.get('peak_memory_mib'))} |")
    if result.get("paper"):
        lines += ["", "## The paper's comparison (Twins-SVT-S, 224x224, batch 192)", "",
                  "| backend | measured speedup vs PyTorch eager FP32 | paper |", "|---|---|---|"]
        for p in result["paper"]:
            measured = _fmt(p["measured_speedup"], 2) + "x" if p["measured_speedup"] else f"{p['status']}: {p.get('reason')}"
            lines.append(f"| {p['backend']} | {measured} | {p['paper_speedup']}x (TensorRT) |")
    return "\n".join(lines) + "\n"


def chart_png(rows: list[dict[str, Any]], title: str) -> bytes | None:
    """Throughput vs batch, one line per (model, backend); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    import io

    fig, ax = plt.subplots(figsize=(8, 5))
    series: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if r["status"] == "ok":
            series.setdefault(f"{r['model']} {r['backend']}", []).append((r["infer_batch_size"], r["infer_samples_per_sec"]))
    for label, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xscale("log", base=2)
    batches = sorted({b for pts in series.values() for b, _ in pts})
    if batches:
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.minorticks_off()
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_all(out_dir: Path, stem: str, result: dict[str, Any]) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.csv", out_dir / f"{stem}.md"]
    write_bytes_atomic(paths[0], (json.dumps(result, indent=2, default=str) + "\n").encode())
    write_bytes_atomic(paths[1], to_csv(result["rows"]).encode())
    write_bytes_atomic(paths[2], to_markdown(result).encode())
    png = chart_png(result["rows"], result["title"])
    if png is not None:
        paths.append(out_dir / f"{stem}.png")
        write_bytes_atomic(paths[-1], png)
    return paths
