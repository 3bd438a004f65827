"""timm's own ONNX export of a Twins variant: the baseline a timm user deploys on a CPU.

The one place the benchmark makes an ONNX file itself (every other graph and engine comes
from the pipeline): timm's model (``timm.create_model(..., exportable=True)``) given our
seeded weights key for key, exported with timm's recipe
(:func:`twins_deploy.exporters.onnx_export.trace_plain_onnx`: TorchScript exporter, opset 17,
dynamic batch, no simplifier) and run where the route table runs an FP32 ONNX file on the
CPU (ONNX Runtime's CPU provider) — what a user who exports with timm gets.
``twins-bench --compare timm-onnx`` adds it as a subject named ``timm-onnx:<model>``,
validated (``--validate``) against our PyTorch FP32 model with the same weights, and
reports every row's speedup against it.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from twins_deploy.artifacts import write_bytes_atomic
from twins_deploy.bench.backends import Subject
from twins_deploy.engines.routes import ONNX_FP32, Route, default_route
from twins_deploy.errors import BackendUnavailableError
from twins_deploy.exporters.onnx_export import trace_plain_onnx
from twins_deploy.factory import create_model
from twins_deploy.registry import get_config

TIMM_ONNX = "timm-onnx"
RECIPE = "timm.create_model(exportable=True), torch.onnx TorchScript exporter, opset 17, dynamic batch"


def subject_name(model: str) -> str:
    """The model column of the baseline's rows: ``timm-onnx:svt_s``."""
    return f"{TIMM_ONNX}:{model}"


def baseline_of(subject_or_model: str) -> str | None:
    """The Twins variant a ``timm-onnx:<model>`` name stands for; None for any other name."""
    prefix = f"{TIMM_ONNX}:"
    return subject_or_model[len(prefix):] if subject_or_model.startswith(prefix) else None


def cpu_onnx_route() -> Route:
    """The table's first route that runs an FP32 ONNX file on the CPU (ONNX Runtime's CPU
    provider): the route the baseline runs on."""
    return default_route(ONNX_FP32, "cpu")


def timm_onnx_subject(model: str, hw: tuple[int, int], max_batch: int, cache: Path, seed: int = 0) -> Subject:
    """timm's export of ``model`` with our seeded weights, written to ``cache/timm-onnx/`` once per run."""

    cfg = get_config(model)
    subject: Subject

    def build() -> torch.nn.Module:
        try:
            import timm
        except ImportError:
            raise BackendUnavailableError("--compare timm-onnx needs timm: pip install timm") from None
        tm = timm.create_model(cfg.timm_name, exportable=True).eval()
        tm.load_state_dict(create_model(model, seed=seed).state_dict(), strict=True)
        return tm

    def graph() -> Path:
        path = cache / TIMM_ONNX / f"{model}_{hw[0]}x{hw[1]}.onnx"
        if ONNX_FP32 not in subject.graphs:  # exported afresh by each run: no stale file is ever timed
            t0 = time.perf_counter()
            proto = trace_plain_onnx(subject.model(), hw)
            export_s = time.perf_counter() - t0
            data = proto.SerializeToString()
            path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(path, data)
            subject.graphs[ONNX_FP32] = {"file": path.name, "nodes": len(proto.graph.node),
                                         "size_mb": round(len(data) / 1e6, 2), "made_by": f"timm's recipe: {RECIPE}",
                                         "export_s": round(export_s, 1)}
        return path

    subject = Subject(subject_name(model), build, hw, max_batch, cache, preprocess=cfg.preprocess,
                      reference_build=lambda: create_model(model, seed=seed), graph=graph,
                      routes=(cpu_onnx_route().name,))
    return subject
