"""Shared helpers for the export tests: exporting through the real pipeline."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from twins_deploy.exporters.spec import BatchRange, ExportSpec
from twins_deploy.pipeline import ArtifactRequest, WeightsRequest, make_artifacts


def export_to(out_dir: Path, model: str, *, precision: str = "fp32", io_fp16: bool = False,
              batch: BatchRange = BatchRange(1, 2, 3), weights: str | None = None, images: str | None = None,
              **spec_kw: Any) -> tuple[Path, dict[str, Any]]:
    """Export ``model`` to ONNX; returns the file and its manifest as written (a dict)."""
    req = ArtifactRequest(
        spec=ExportSpec(model=model, batch=batch, **spec_kw), precision=precision, io_fp16=io_fp16,
        weights=WeightsRequest(path=weights), out_dir=out_dir, images=images,
    )
    art = make_artifacts(req).final
    return art.path, art.manifest.to_dict()


def photo_dir(tmp: Path) -> Path:
    """Photographs matplotlib ships (a real portrait and two real-world PNGs)."""
    import shutil

    import matplotlib.cbook as cbook

    d = tmp / "photos"
    d.mkdir(exist_ok=True)
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"):
        shutil.copy(cbook.get_sample_data(name, asfileobj=False), d / name)
    (d / "README.txt").write_text("not an image, must be skipped\n")
    return d


def bench_engine_onnx(cache: Path, precisions: tuple[str, ...], batches: tuple[int, ...] = (1, 4)) -> Path:
    """The ONNX models twins-bench builds its svt_s 64x64 engines from, one per measured batch
    N (batch 1..N, in ``cache/b<N>/``), for each of ``precisions``; exported once, without
    onnxslim (most of an export's time, and not part of the reuse check). Returns the FP32
    (else first) graph of the largest batch."""
    import pytest

    import twins_deploy.exporters.onnx_export as onnx_export
    from twins_deploy.bench.backends import twins_subject

    model = twins_subject("svt_s", (64, 64), max(batches), cache).model()
    made: dict[tuple[int, str], Path] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(onnx_export, "simplify", lambda graph, spec, info: graph)
        for b in batches:
            spec = ExportSpec(model="svt_s", img_size=(64, 64), batch=BatchRange(1, b, b))
            for precision in precisions:
                made[b, precision] = make_artifacts(ArtifactRequest(
                    spec=spec, precision=precision, out_dir=cache / f"b{b}", on_existing="reuse", validate=False),
                    model=model).onnx.path
    return made[max(batches), "fp32" if "fp32" in precisions else precisions[0]]


def exported_graph(onnx_path: Path) -> tuple[Any, Any]:
    """What ``pipeline.export_onnx`` returns, from a graph exported before: tests that exercise
    what happens around an export (interrupts, refused writes, step counters) stand it in with
    ``monkeypatch.setattr(pipeline, "export_onnx", lambda *a, **k: graph)`` instead of exporting."""
    import onnx

    from twins_deploy.exporters.onnx_export import ExportInfo

    return onnx.load(str(onnx_path)), ExportInfo(simplify_note="reused by the test")
