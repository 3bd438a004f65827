"""Every CPU route to run Twins, in one interleaved run, with validation beside speed.

    python -m twins_deploy.cli.cpu_compare [--model svt_s] [--batch 1,8] [--threads 2]
        [--min-time 3] [--rounds 5] [--out bench/results] [--name cpu_compare]

Routes, all with the same non-zero random weights (timm's model gets ours, key for key):

* ``timm-onnx-ort``: timm's model exported with timm's own recipe, in ONNX Runtime: the
  baseline a timm user gets, and the denominator of every speedup;
* ``ort``: our FP32 ONNX artifact (made by the pipeline) in ONNX Runtime;
* ``openvino-f32`` / ``openvino-bf16``: the same file in OpenVINO, precision explicit
  (BF16 is skipped, with the reason, on a CPU without native BF16);
* ``torch``: PyTorch eager FP32 (our model, SDPA attention).

No route may steal the next one's cores: ONNX Runtime gets ``--threads`` intra-op threads
with spin-waiting off, OpenVINO one stream of ``--threads`` threads without pinning, PyTorch
``torch.set_num_threads(--threads)``. Every route is validated against the PyTorch FP32
model (explicit attention) with the thresholds of the precision it computes in, then all
are timed in interleaved rounds (order reversed every other round) and the median over
rounds is reported: on a shared machine a quiet or busy moment then hits every route alike.

The issue's targets are checked and written down either way: the best validated route at
>= 2x the baseline at batch 8, the best route passing the FP32 thresholds at >= 1.3x.
"""
from __future__ import annotations

import copy
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from twins_deploy.artifacts import now_iso, tool_versions, write_bytes_atomic, write_json_atomic
from twins_deploy.bench.machine import machine_info
from twins_deploy.bench.timing import time_runner
from twins_deploy.engines.runners.base import Runner
from twins_deploy.errors import BackendUnavailableError

BASELINE = "timm-onnx-ort"
TARGET_BEST = 2.0   # best validated route vs the baseline, at the target batch
TARGET_FP32 = 1.3   # best route passing the FP32 thresholds
TARGET_BATCH = 8
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


@dataclass
class Route:
    """One way to run the model: how to open its Runner and which thresholds judge it."""

    label: str
    what: str
    open: Callable[[], Runner]
    precision: str = "fp32"
    runner: Runner | None = None
    skipped: str | None = None
    validation: dict[str, Any] | None = None
    samples: dict[int, list[float]] = field(default_factory=dict)


def cpu_flags() -> list[str]:
    """The instruction-set flags that decide CPU inference speed (and whether BF16 exists)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), [])
    except OSError:
        return []
    return [f for f in CPU_FLAGS if f in flags]


def _timm_onnx(model_name: str, ours: torch.nn.Module, hw: tuple[int, int], path: Path) -> int:
    """timm's model with our weights, exported with timm's recipe; returns its node count."""
    try:
        import timm
    except ImportError:
        raise BackendUnavailableError("the baseline needs timm: pip install timm") from None
    from twins_deploy.exporters.onnx_export import trace_plain_onnx
    from twins_deploy.registry import get_config

    tm = timm.create_model(get_config(model_name).timm_name, exportable=True).eval()
    tm.load_state_dict(ours.state_dict(), strict=True)
    graph = trace_plain_onnx(tm, hw)
    path.write_bytes(graph.SerializeToString())
    return len(graph.graph.node)


def build_routes(model_name: str, hw: tuple[int, int], max_batch: int, threads: int, work: Path,
                 seed: int = 0) -> tuple[torch.nn.Module, list[Route], dict[str, Any]]:
    """The model, every route (runners not yet opened) and facts about the two graphs."""
    from twins_deploy.engines.runners.onnxrt import OrtRunner
    from twins_deploy.engines.runners.openvino import OpenVinoRunner
    from twins_deploy.engines.runners.pytorch import TorchRunner
    from twins_deploy.exporters.spec import BatchRange, ExportSpec
    from twins_deploy.factory import create_model
    from twins_deploy.pipeline import ArtifactRequest, make_artifacts

    ours = create_model(model_name, seed=seed)
    spec = ExportSpec(model=model_name, img_size=hw, batch=BatchRange(1, max_batch, max_batch))
    art = make_artifacts(ArtifactRequest(spec=spec, out_dir=work / "artifacts", validate=False, quiet=True),
                         model=ours).final
    timm_path = work / "timm.onnx"
    timm_nodes = _timm_onnx(model_name, ours, hw, timm_path)
    graphs = {"ours": {"file": art.path.name, "nodes": art.manifest.onnx.nodes if art.manifest.onnx else None,
                       "sha256": art.manifest.sha256},
              "timm": {"recipe": "timm.create_model(exportable=True), torch.onnx TorchScript, opset 17, dynamic batch",
                       "nodes": timm_nodes}}
    routes = [
        Route(BASELINE, "timm's ONNX export, ONNX Runtime",
              lambda: OrtRunner(timm_path, threads=threads, spinning=False)),
        Route("ort", "ours, ONNX Runtime", lambda: OrtRunner(art.path, threads=threads, spinning=False)),
        Route("openvino-f32", "ours, OpenVINO FP32", lambda: OpenVinoRunner(art.path, "fp32", threads=threads)),
        Route("openvino-bf16", "ours, OpenVINO BF16", lambda: OpenVinoRunner(art.path, "bf16", threads=threads),
              precision="bf16"),
        # its own copy: the validation reference switches the attention of the model it runs
        Route("torch", "PyTorch eager FP32 (ours, SDPA)",
              lambda: TorchRunner(copy.deepcopy(ours), device="cpu", attn_impl="sdpa", name="torch")),
    ]
    return ours, routes, {"spec": spec.to_dict(), "graphs": graphs}


def open_and_validate(route: Route, model: torch.nn.Module, cases: list[tuple[str, np.ndarray]]) -> None:
    """Open ``route``'s runner (or record why it cannot run here), then validate it."""
    from twins_deploy.engines.validation import validate_against_pytorch

    try:
        runner = route.open()
        runner.activate()
    except (BackendUnavailableError, ImportError) as e:
        route.skipped = str(e)
        return
    route.runner = runner
    report = validate_against_pytorch(model, runner, route.precision, cases)
    runner.activate()  # validation deactivates it when done; timing needs it open
    d = report.to_dict()
    route.validation = {
        "passed": d["passed"], "thresholds": route.precision, "summary": d["summary"],
        "max_abs": max(s.max_abs for s in report.stats), "min_cosine": min(s.min_cosine for s in report.stats),
        "top1_agreement": d["top1_agreement"], "failures": d["failures"], "runner": d["candidate_info"],
    }


def measure(routes: list[Route], batches: list[int], hw: tuple[int, int], rounds: int, min_time_s: float,
            min_iters: int = 10, progress: Callable[[str], None] | None = None) -> None:
    """Time every (open route, batch) in ``rounds`` interleaved rounds."""
    live = [r for r in routes if r.runner is not None]
    for i in range(rounds):
        for route in live if i % 2 == 0 else live[::-1]:
            for b in batches:
                x = np.random.default_rng(b).standard_normal((b, 3, *hw), dtype=np.float32)
                t = time_runner(route.runner, x, warmup=2, warmup_s=0.5 if min_time_s else 0.0,
                                min_iters=min_iters, min_time_s=min_time_s)
                route.samples.setdefault(b, []).append(t.images_per_s)
                if progress:
                    progress(f"round {i + 1}/{rounds} {route.label} b{b}: {t.images_per_s:.1f} img/s")


def summarise(routes: list[Route], batches: list[int]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows (median img/s, speedup vs the baseline) and the verdict on the issue's targets."""
    base = next((r for r in routes if r.label == BASELINE), None)
    rows = []
    for r in routes:
        row: dict[str, Any] = {"route": r.label, "what": r.what, "judged_as": r.precision,
                               "status": "skipped" if r.skipped else "ok"}
        if r.skipped:
            row["reason"] = r.skipped
            rows.append(row)
            continue
        row["precision"] = (r.validation or {}).get("runner", {}).get("precision") or r.precision
        row["validation"] = r.validation
        for b in batches:
            med = statistics.median(r.samples[b]) if r.samples.get(b) else None
            ref = statistics.median(base.samples[b]) if base and base.samples.get(b) else None
            row[f"b{b}_img_s"] = round(med, 2) if med else None
            row[f"b{b}_rounds"] = [round(v, 2) for v in r.samples.get(b, [])]
            row[f"b{b}_vs_baseline"] = round(med / ref, 3) if med and ref else None
        rows.append(row)
    tb = TARGET_BATCH if TARGET_BATCH in batches else max(batches)
    key = f"b{tb}_vs_baseline"
    ok = [row for row in rows if row["status"] == "ok" and row["validation"] and row["validation"]["passed"]
          and row.get(key) is not None]
    best = max(ok, key=lambda row: row[key], default=None)
    best32 = max((row for row in ok if row["judged_as"] == "fp32"), key=lambda row: row[key], default=None)
    verdict = {
        "batch": tb,
        "best_validated": {"route": best["route"], "speedup": best[key], "target": TARGET_BEST,
                           "met": best[key] >= TARGET_BEST} if best else None,
        "best_fp32": {"route": best32["route"], "speedup": best32[key], "target": TARGET_FP32,
                      "met": best32[key] >= TARGET_FP32} if best32 else None,
    }
    return rows, verdict


def run_comparison(model: str = "svt_s", batches: tuple[int, ...] = (1, 8), hw: tuple[int, int] = (224, 224),
                   threads: int = 2, rounds: int = 5, min_time_s: float = 3.0, min_iters: int = 10,
                   note: str = "", progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The whole comparison, as the dict written to ``<name>.json``."""
    from twins_deploy.engines.validation import validation_cases
    from twins_deploy.registry import get_config

    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory(prefix="twins-cpu-compare-") as tmp:
            ours, routes, graphs = build_routes(model, hw, max(batches), threads, Path(tmp))
            from twins_deploy.exporters.spec import ExportSpec

            spec = ExportSpec.from_dict(graphs["spec"])
            cases = validation_cases(spec, get_config(model).preprocess, batches=sorted(set(batches)))
            for route in routes:
                if progress:
                    progress(f"open and validate {route.label}")
                open_and_validate(route, ours, cases)
            try:
                measure(routes, list(batches), hw, rounds, min_time_s, min_iters, progress)
            finally:
                for route in routes:
                    if route.runner is not None:
                        route.runner.deactivate()
    finally:
        torch.set_num_threads(old_threads)
    rows, verdict = summarise(routes, list(batches))
    machine = machine_info()
    machine["cpu_flags"] = cpu_flags()
    return {
        "created": now_iso(), "model": model, "img_size": list(hw), "batches": list(batches),
        "machine": machine, "note": note,
        "tools": tool_versions(("openvino",)),
        "method": (f"{threads} threads per route (ONNX Runtime: intra-op threads, spin-waiting off; OpenVINO: "
                   f"1 stream, no pinning; PyTorch: set_num_threads); {rounds} interleaved rounds, each a "
                   f"timed loop of >= {min_iters} iterations and >= {min_time_s} s after warm-up; median over "
                   "rounds; validation against PyTorch FP32 (explicit attention) at batches "
                   f"{', '.join(map(str, sorted(set(batches))))}; weights seeded random (non-zero biases)"),
        "graphs": graphs["graphs"], "rows": rows, "verdict": verdict,
    }


def _fmt(v: Any, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def to_markdown(result: dict[str, Any]) -> str:
    m, batches = result["machine"], result["batches"]
    lines = [f"# CPU routes for {result['model']} at {result['img_size'][0]}x{result['img_size'][1]}: "
             "speed and validation in one interleaved run", "",
             f"- machine: {m['cpu']}, {m['cores']} cores, flags: {', '.join(m.get('cpu_flags') or []) or '-'}"
             + (f"; {result['note']}" if result.get("note") else ""),
             "- versions: " + ", ".join(f"{k} {v}" for k, v in result["tools"].items() if v),
             f"- method: {result['method']}", f"- created: {result['created']}",
             "- graphs: ours " + str(result["graphs"]["ours"]["nodes"]) + " nodes, timm's "
             + str(result["graphs"]["timm"]["nodes"]) + " nodes", "",
             "| route | computes in | validation | max abs | min cosine | top-1 | "
             + " | ".join(f"b{b} img/s" for b in batches) + " | vs timm's ONNX in ORT ("
             + " / ".join(f"b{b}" for b in batches) + ") |",
             "|---|---|---|---|---|---|" + "---|" * len(batches) + "---|"]
    for r in result["rows"]:
        if r["status"] != "ok":
            lines.append(f"| {r['what']} | - | skipped: {r['reason']} | | | |" + " |" * len(batches) + " |")
            continue
        v = r["validation"] or {}
        verdict = ("PASS" if v.get("passed") else "FAIL") + f" ({v.get('thresholds')} thresholds)"
        t1 = v.get("top1_agreement")
        lines.append(
            f"| {r['what']} | {r['precision']} | {verdict} | {_fmt(v.get('max_abs'), '.2g')} "
            f"| {_fmt(v.get('min_cosine'), '.6f')} | {_fmt(100 * t1 if t1 is not None else None)}% | "
            + " | ".join(_fmt(r.get(f"b{b}_img_s")) for b in batches) + " | "
            + " / ".join(_fmt(r.get(f"b{b}_vs_baseline"), ".2f") for b in batches) + " |")
    vd = result["verdict"]
    lines += ["", f"## Targets (batch {vd['batch']}, against timm's ONNX export in ONNX Runtime)", ""]
    for key, what in (("best_validated", "best validated route"), ("best_fp32", "best route passing the FP32 thresholds")):
        v = vd.get(key)
        if v is None:
            lines.append(f"- {what}: none measured")
        else:
            lines.append(f"- {what}: {v['route']} at {v['speedup']:.2f}x (target >= {v['target']}x): "
                         + ("met" if v["met"] else "NOT met"))
    return "\n".join(lines) + "\n"


def write_results(result: dict[str, Any], out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.json", out / f"{name}.md"]
    write_json_atomic(paths[0], result)
    write_bytes_atomic(paths[1], to_markdown(result).encode())
    return paths
