"""The export pipeline: model -> ONNX file -> (engine file) -> validation -> manifest.

Each stage writes an artifact the next reads from disk; everything is checked before
any work starts (name, weights, sizes, output directory, existing files) so a bad
argument costs nothing and leaves nothing behind.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twins_deploy.artifacts import (ensure_writable_dir, manifest_path, now_iso, refuse_overwrite,
                                    tool_versions, write_bytes_atomic, write_json_atomic)
from twins_deploy.engines.inputs import load_image_folder, random_batch
from twins_deploy.engines.runner import Runner
from twins_deploy.engines.torch_runner import TorchRunner
from twins_deploy.engines.validate import Thresholds, ValidationReport, validate
from twins_deploy.errors import ValidationFailedError
from twins_deploy.exporters.spec import INPUT_NAME, ExportSpec
from twins_deploy.factory import create_model
from twins_deploy.progress import Steps
from twins_deploy.registry import Preprocess, get_config
from twins_deploy.twins import Twins
from twins_deploy.weights import file_sha256

VALIDATION_SEED = 20240422


@dataclass
class WeightsRequest:
    path: str | None = None
    pretrained: bool = False
    reset_head: bool = False
    num_classes: int = 1000
    seed: int = 0


@dataclass
class ExportRequest:
    spec: ExportSpec
    weights: WeightsRequest = field(default_factory=WeightsRequest)
    out_dir: Path = Path("twins_out")
    force: bool = False
    validate: bool = True
    images: str | None = None
    thresholds: dict[str, float | None] = field(default_factory=dict)
    quiet: bool = False


def build_model(model: str, w: WeightsRequest, features: bool) -> Twins:
    return create_model(model, weights=w.path, pretrained=w.pretrained, num_classes=w.num_classes,
                        features=features, reset_head=w.reset_head, seed=w.seed)


def validation_cases(spec: ExportSpec, pre: Preprocess, batches: list[int] | None = None,
                     images: str | None = None, seed: int = VALIDATION_SEED) -> list[tuple[str, np.ndarray]]:
    """Seeded random batches at each batch size (and at padded sizes for dynamic H/W),
    plus the user's photographs."""
    sizes = [spec.img_size]
    if spec.dynamic_hw:  # sizes other than the export size, needing window padding
        sizes += [(spec.img_size[0] + 32, spec.img_size[1] + 64), (spec.img_size[0] + 37, spec.img_size[1] + 13)]
    cases = []
    for i, b in enumerate(batches or spec.batch.validation_batches()):
        for j, hw in enumerate(sizes if i == 0 else sizes[:1]):
            cases.append((f"random b={b} {hw[0]}x{hw[1]}", random_batch(b, hw, pre, seed + 97 * i + j)))
    if images:
        arr, names = load_image_folder(images, spec.img_size, pre)
        chunk = spec.batch.max
        for k in range(0, len(arr), chunk):
            part = arr[k:k + chunk]
            label = f"images {k}..{k + len(part) - 1} of {len(names)}"
            if not spec.batch.contains(len(part)):  # a fixed-batch graph: fill up with the first images
                missing = chunk - len(part)
                part = np.concatenate([part, np.resize(arr, (missing, *arr.shape[1:]))])
                label += f" (+{missing} repeated to fill batch {chunk})"
            cases.append((label, part))
    return cases


def run_validation(model: Twins, candidate: Runner, spec: ExportSpec, cases: list[tuple[str, np.ndarray]],
                   thresholds: dict[str, float | None] | None = None) -> ValidationReport:
    """Candidate vs the PyTorch FP32 model (explicit attention, CPU) on ``cases``."""
    th = Thresholds.for_precision(spec.precision).override(**(thresholds or {}))
    reference = TorchRunner(model, device="cpu", attn_impl="explicit", name="torch-fp32-cpu")
    return validate(reference, candidate, cases, spec.precision, th)


def base_manifest(spec: ExportSpec, model: Twins, kind: str) -> dict[str, Any]:
    cfg = get_config(spec.model)
    return {
        "schema": 1, "kind": kind, "created": now_iso(),
        "model": {"name": cfg.name, "paper_name": cfg.paper_name, "timm_name": cfg.timm_name,
                  "features": spec.features, "num_classes": model.num_classes, "config": cfg.to_dict()},
        "weights": model.weights_info.to_dict(),
        "input": {"name": INPUT_NAME, "shape": spec.input_shape(), "dtype": "float16" if spec.io_fp16 else "float32",
                  "layout": "NCHW", "dynamic_axes": spec.dynamic_axes().get(INPUT_NAME, {}),
                  "batch": {"min": spec.batch.min, "opt": spec.batch.opt, "max": spec.batch.max}},
        "outputs": spec.output_names,
        "preprocess": cfg.preprocess.to_dict(),
        "spec": spec.to_dict(),
        "precision": spec.precision,
        "tools": tool_versions(),
    }


def onnx_paths(req: ExportRequest) -> tuple[Path, Path]:
    onnx_path = req.out_dir / f"{req.spec.stem()}.onnx"
    return onnx_path, manifest_path(onnx_path)


def export_onnx_artifact(req: ExportRequest, model: Twins, steps: Steps) -> tuple[Path, dict[str, Any]]:
    """Export, write (atomically) and validate the ONNX model; returns its path and manifest.

    The manifest is written even when validation fails, recording the failure, and
    :class:`ValidationFailedError` is raised afterwards.
    """

    from twins_deploy.engines.ort_runner import OrtRunner
    from twins_deploy.exporters.inspect import inspect_onnx
    from twins_deploy.exporters.onnx_export import export_onnx

    spec = req.spec
    onnx_path, mpath = onnx_paths(req)
    with steps.step(f"export {spec.model} to ONNX ({spec.precision}, opset {spec.opset})"):
        graph, info = export_onnx(model, spec)
        if info.simplify_note:
            steps.note(f"simplify: {info.simplify_note}")
        if info.fp16:
            steps.note(f"fp16: {info.fp16['cast_nodes']} Cast nodes, {', '.join(info.fp16['fp32_ops'])} kept in FP32")
        data = graph.SerializeToString()
        write_bytes_atomic(onnx_path, data)
    report = inspect_onnx(graph)
    manifest = base_manifest(spec, model, "onnx")
    manifest.update({
        "artifact": onnx_path.name, "sha256": file_sha256(onnx_path), "size_bytes": len(data),
        "opset": spec.opset, "ir_version": graph.ir_version,
        "graph": {"nodes": report.num_nodes, "op_census": report.op_census, "roll_free": report.roll_free,
                  "trt_compatible": {v.version: v.compatible for v in report.trt}},
        "export": info.to_dict(), "validation": None,
    })
    del graph, data
    record_validation(req, model, OrtRunner(onnx_path), manifest, mpath, steps,
                      f"validate ONNX Runtime vs PyTorch FP32 ({spec.precision} thresholds)")
    return onnx_path, manifest


def record_validation(req: ExportRequest, model: Twins, candidate: Runner, manifest: dict[str, Any],
                      mpath: Path, steps: Steps, label: str) -> None:
    """Validate ``candidate`` (unless ``--no-validate``), write the manifest with the report,
    and raise :class:`ValidationFailedError` on a miss, after the report is on disk."""
    if req.validate:
        with steps.step(label):
            cases = validation_cases(req.spec, get_config(req.spec.model).preprocess, images=req.images)
            report = run_validation(model, candidate, req.spec, cases, req.thresholds)
            manifest["validation"] = report.to_dict()
            steps.note(report.summary())
    write_json_atomic(mpath, manifest)
    val = manifest["validation"]
    if val is not None and not val["passed"]:
        raise ValidationFailedError(
            f"{manifest['artifact']} failed validation: {'; '.join(val['failures'][:3])} (report in {mpath})")


def check_before_work(req: ExportRequest, planned: list[Path]) -> None:
    ensure_writable_dir(req.out_dir)
    refuse_overwrite(planned, req.force)
    if req.images and not os.path.isdir(req.images):
        from twins_deploy.errors import InputShapeError

        raise InputShapeError(f"--images {req.images!r} is not a directory")


def export(req: ExportRequest) -> tuple[Path, dict[str, Any]]:
    """``twins-export --fmt onnx``: everything from name to validated ONNX + manifest."""
    steps = Steps(2 + int(req.validate), quiet=req.quiet)
    onnx_path, mpath = onnx_paths(req)
    check_before_work(req, [onnx_path, mpath])
    return export_onnx_artifact(req, build_step(req, steps), steps)


def build_step(req: ExportRequest, steps: Steps) -> Twins:
    """The first step of every export: the model with its weights, and where they came from."""
    with steps.step(f"build {req.spec.model} ({'backbone' if req.spec.features else 'classifier'})"):
        model = build_model(req.spec.model, req.weights, req.spec.features)
        w = model.weights_info
        steps.note(f"weights: {w.source}" + (f" {w.path}" if w.path else f" (seed {w.seed}; {w.note})"))
    return model


def weights_for_manifest(manifest: dict[str, Any], weights: str | None, pretrained: bool) -> WeightsRequest:
    """Rebuild the weights an artifact was made with, refusing different ones."""
    from twins_deploy.errors import CheckpointError

    w = manifest["weights"]
    num_classes = manifest["model"].get("num_classes") or 1000
    if w["source"] == "random" and not weights and not pretrained:
        return WeightsRequest(seed=w["seed"], num_classes=num_classes)
    if w["source"] == "pretrained":
        if not pretrained:
            raise CheckpointError(f"the artifact was made with pretrained weights ({w['path']}); pass --pretrained")
        return WeightsRequest(pretrained=True, num_classes=num_classes)
    path = weights or (w.get("path") if w["source"] == "file" else None)
    if not path or not os.path.isfile(path):
        raise CheckpointError(
            f"the artifact was made with the checkpoint {w.get('path')!r}, which is not here; "
            "pass it with --weights PATH")
    if w.get("sha256") and file_sha256(path) != w["sha256"]:
        raise CheckpointError(
            f"{path!r} is not the checkpoint the artifact was made with (sha256 differs from the manifest)")
    return WeightsRequest(path=path, num_classes=num_classes, reset_head=True)


def runner_for_artifact(path: Path, manifest: dict[str, Any]) -> Runner:
    """ONNX Runtime for .onnx files, TensorRT for engines."""
    if manifest.get("kind") == "trt":
        from twins_deploy.engines.trt_runner import TrtRunner

        return TrtRunner(path, manifest=manifest)
    from twins_deploy.engines.ort_runner import OrtRunner

    return OrtRunner(path)


def revalidate(artifact: str | os.PathLike[str], weights: str | None = None, pretrained: bool = False,
               batches: list[int] | None = None, images: str | None = None,
               thresholds: dict[str, float | None] | None = None, quiet: bool = False) -> ValidationReport:
    """``twins-validate``: re-check an existing artifact against PyTorch, from its manifest."""
    from twins_deploy.artifacts import read_manifest
    from twins_deploy.errors import InputShapeError

    path = Path(artifact)
    manifest = read_manifest(path)
    spec = ExportSpec.from_dict(manifest["spec"])
    if manifest.get("sha256") and file_sha256(path) != manifest["sha256"]:
        if not quiet:
            print(f"warning: {path.name} differs from the file its manifest describes (sha256); "
                  "validating what is on disk", file=sys.stderr, flush=True)
    for b in batches or []:
        if not spec.batch.contains(b):
            raise InputShapeError(f"batch {b} is outside the artifact's range {spec.batch.min}..{spec.batch.max}")
    steps = Steps(2, quiet=quiet)
    with steps.step(f"build {spec.model} with the artifact's weights"):
        model = build_model(spec.model, weights_for_manifest(manifest, weights, pretrained), spec.features)
    with steps.step(f"validate {path.name} against PyTorch FP32"):
        cases = validation_cases(spec, get_config(spec.model).preprocess, batches, images)
        report = run_validation(model, runner_for_artifact(path, manifest), spec, cases, thresholds)
        steps.note(report.summary())
    return report
