"""The figures recorded comparisons are judged against, and the verdicts.

* The paper's: Twins-SVT-S through TensorRT ran 1.7x faster than in PyTorch (224x224, batch 192).
* The CPU comparison's (``twins-bench --preset cpu-compare``): against timm's own ONNX export
  in ONNX Runtime at batch 8, the best route that passed validation at >= 2x, and the best
  route passing the FP32 thresholds at >= 1.3x.
* The INT8 comparison's (``twins-bench --preset int8-compare``): the best validated INT8 route
  at >= 2.5x timm's ONNX export in ONNX Runtime, batch 8 (issue 20's target for this kind of
  2-core AVX-512 VNNI machine; 2x is the figure for AVX2-only CPUs).
"""
from __future__ import annotations

from typing import Any

from twins_deploy.bench.timm_baseline import baseline_of
from twins_deploy.engines.routes import get_route

PAPER_SPEEDUP = 1.7  # Twins-SVT-S through TensorRT vs PyTorch, as the paper reports
PAPER_MODEL, PAPER_BATCH = "svt_s", 192
TARGET_BEST = 2.0   # best validated route vs timm's ONNX export, at the target batch
TARGET_FP32 = 1.3   # best route passing the FP32 thresholds
TARGET_INT8 = 2.5   # best validated INT8 route
TARGET_BATCH = 8


def paper_comparison(rows: list[dict[str, Any]], model: str = PAPER_MODEL, batch: int = PAPER_BATCH) -> list[dict[str, Any]]:
    """Measured speedups of every deployed backend for the paper's setting, beside its 1.7x."""
    out = []
    for r in rows:
        if r["model"] == model and r["infer_batch_size"] == batch and not get_route(r["backend"]).baseline:
            out.append({"backend": r["backend"], "measured_speedup": r.get("speedup_vs_torch"),
                        "paper_speedup": PAPER_SPEEDUP, "status": r["status"], "reason": r.get("reason")})
    return out


def cpu_targets(rows: list[dict[str, Any]], batches: list[int]) -> dict[str, Any]:
    """The CPU comparison's verdict: among the rows of our graphs (not timm's export itself)
    that were measured, validated and passed, the best speedup over timm's ONNX export at
    batch 8 (or the largest batch measured), and the best among those judged as FP32."""
    tb = TARGET_BATCH if TARGET_BATCH in batches else max(batches)
    ok = [r for r in rows if r["status"] == "ok" and r["infer_batch_size"] == tb and not baseline_of(r["model"])
          and (r.get("validation") or {}).get("passed") and r.get("speedup_vs_timm_onnx") is not None]

    def best(candidates: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
        top = max(candidates, key=lambda r: r["speedup_vs_timm_onnx"], default=None)
        if top is None:
            return None
        return {"model": top["model"], "backend": top["backend"], "speedup": top["speedup_vs_timm_onnx"],
                "target": target, "met": top["speedup_vs_timm_onnx"] >= target}

    verdict = {"batch": tb, "best_validated": best(ok, TARGET_BEST),
               "best_fp32": best([r for r in ok if r["validation"]["judged_as"] == "fp32"], TARGET_FP32)}
    if any(get_route(r["backend"]).precision == "int8" for r in rows):
        verdict["best_int8"] = best([r for r in ok if r["validation"]["judged_as"] == "int8"], TARGET_INT8)
    return verdict
