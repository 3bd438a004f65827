"""Benchmark results on disk: JSON (everything), CSV (timm's columns first), markdown, PNG."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from twins_deploy.artifacts import write_bytes_atomic, write_json_atomic

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


def results_table(rows: list[dict[str, Any]]) -> list[str]:
    """The rows as a markdown table (also what twins-bench prints when it ends)."""
    lines = ["| model | backend | batch | img/s | median ms | p90 ms | p99 ms | speedup vs torch | GFLOP/s | peak MiB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = f"| {r['model']} | {r['backend']} | {r['infer_batch_size']} "
        if r["status"] != "ok":
            lines.append(head + f"| {r['status']}: {r.get('reason', '')} | | | | | | |")
            continue
        lines.append(head + f"| {_fmt(r['infer_samples_per_sec'])} | {_fmt(r['infer_step_time'], 2)} "
                     f"| {_fmt(r['latency_ms_p90'], 2)} | {_fmt(r['latency_ms_p99'], 2)} "
                     f"| {_fmt(r.get('speedup_vs_torch'), 2)} | {_fmt(r.get('achieved_gflops'))} "
                     f"| {_fmt(r.get('peak_memory_mib'))} |")
    return lines


def paper_table(paper: list[dict[str, Any]]) -> list[str]:
    """Measured speedups in the paper's setting. The paper's 1.7x is TensorRT on a GPU:
    it is shown beside TensorRT rows only, never beside a CPU or PyTorch backend."""
    lines = ["| backend | measured speedup vs PyTorch eager FP32 | the paper's claim |", "|---|---|---|"]
    for p in paper:
        measured = _fmt(p["measured_speedup"], 2) + "x" if p["measured_speedup"] else f"{p['status']}: {p.get('reason')}"
        claim = f"{p['paper_speedup']}x (TensorRT, GPU)" if p["backend"].startswith("trt") else "no figure (not TensorRT)"
        lines.append(f"| {p['backend']} | {measured} | {claim} |")
    return lines


def to_markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    gpu = env["machine"].get("gpu")
    lines = [f"# twins-bench: {result['title']}", "",
             f"- machine: {env['machine']['cpu']} ({env['machine']['cores']} cores)"
             + (f"; GPU {gpu['name']} (SM {gpu['compute_capability']}, {gpu['memory_gib']} GiB)" if gpu else "; no GPU"),
             "- versions: " + ", ".join(f"{k} {v}" for k, v in env["tools"].items() if v),
             f"- method: {result['method']}", f"- created: {result['created']}", "", *results_table(result["rows"])]
    if result.get("paper"):
        lines += ["", "## The paper's comparison (Twins-SVT-S, 224x224, batch 192)", "", *paper_table(result["paper"])]
    return "\n".join(lines) + "\n"


def chart_png(rows: list[dict[str, Any]], title: str) -> bytes | None:
    """Throughput per (model, backend): bars when one batch size was measured, lines over
    the batch sizes otherwise; the y axis always starts at zero. None without matplotlib."""
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
    batches = sorted({b for pts in series.values() for b, _ in pts})
    if len(batches) == 1:
        labels = sorted(series)
        values = [series[k][0][1] for k in labels]
        bars = ax.bar(range(len(labels)), values, color="tab:blue")
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
        ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
        ax.set_xlabel(f"batch size {batches[0]}")
    else:
        for label, pts in sorted(series.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        ax.set_xscale("log", base=2)
        if batches:
            ax.set_xticks(batches, [str(b) for b in batches])
            ax.minorticks_off()
        ax.set_xlabel("batch size")
        if series:
            ax.legend(fontsize=8)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("images / s")
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_all(out_dir: Path, stem: str, result: dict[str, Any]) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.csv", out_dir / f"{stem}.md"]
    write_json_atomic(paths[0], result)
    write_bytes_atomic(paths[1], to_csv(result["rows"]).encode())
    write_bytes_atomic(paths[2], to_markdown(result).encode())
    png = chart_png(result["rows"], result["title"])
    if png is not None:
        paths.append(out_dir / f"{stem}.png")
        write_bytes_atomic(paths[-1], png)
    return paths



def rerender(json_path: Path) -> list[Path]:
    """Rewrite the markdown and PNG of a recorded run from its JSON (the measurements)."""
    import json

    from twins_deploy.errors import ArtifactError

    try:
        result = json.loads(Path(json_path).read_text())
        md, png = to_markdown(result), chart_png(result["rows"], result["title"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"{str(json_path)!r} is not a twins-bench result: {type(e).__name__}: {e}") from None
    paths = [Path(json_path).with_suffix(".md")]
    write_bytes_atomic(paths[0], md.encode())
    if png is not None:
        paths.append(Path(json_path).with_suffix(".png"))
        write_bytes_atomic(paths[1], png)
    return paths
