"""``twins-export --fmt trt``: ONNX (validated) -> TensorRT plan + manifest -> validation.

The ONNX model is always exported and validated first, so a machine without TensorRT
or without a GPU still produces it, then stops with one line saying what is missing.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from twins_deploy.artifacts import manifest_path, write_bytes_atomic, write_json_atomic
from twins_deploy.engines.trt_builder import build_engine, onnx_precision_for, precision_route
from twins_deploy.engines.trt_env import gpu_info, has_builder, import_tensorrt, trt_major
from twins_deploy.engines.trt_options import TrtBuildOptions
from twins_deploy.engines.trt_profile import profile_for
from twins_deploy.engines.trtexec import trtexec_command
from twins_deploy.errors import BackendUnavailableError
from twins_deploy.pipeline import (ExportRequest, base_manifest, build_step, check_before_work,
                                   export_onnx_artifact, onnx_paths, record_validation)
from twins_deploy.progress import Steps
from twins_deploy.weights import file_sha256

ENGINE_SUFFIX = ".plan"


def _probe() -> tuple[Any | None, dict[str, Any] | None, str | None]:
    """(tensorrt module, GPU info, reason) without raising: the ONNX step runs either way."""
    try:
        trt = import_tensorrt()
        if not has_builder(trt):
            raise BackendUnavailableError("the installed TensorRT has no builder (lean runtime only); "
                                          "pip install 'twins-deploy[trt]'")
        return trt, gpu_info(), None
    except BackendUnavailableError as e:
        return None, None, str(e)


def engine_path(req: ExportRequest) -> Path:
    return req.out_dir / f"{req.spec.stem()}{ENGINE_SUFFIX}"


def export_engine(req: ExportRequest, opts: TrtBuildOptions) -> tuple[Path, dict[str, Any]]:
    trt, gpu, missing = _probe()
    major = trt_major(trt.__version__) if trt is not None else 10
    route = precision_route(req.spec.precision, major, opts.weak_fp16)
    if route != "strong":  # only the FP16 graph can carry FP16 inputs/outputs
        req = replace(req, spec=replace(req.spec, io_fp16=False))
    onnx_req = replace(req, spec=replace(req.spec, precision=onnx_precision_for(route)))
    plan_path = engine_path(req)
    onnx_path, onnx_manifest = onnx_paths(onnx_req)
    check_before_work(req, [onnx_path, onnx_manifest, plan_path, manifest_path(plan_path)])
    profile = profile_for(req.spec, opts.min_hw, opts.max_hw)  # refuse impossible ranges before any work

    # build model, export ONNX [, validate ONNX] [, build engine [, validate engine]]
    steps = Steps(2 + int(req.validate) + (1 + int(req.validate)) * int(missing is None), quiet=req.quiet)
    model = build_step(req, steps)
    onnx_file, _ = export_onnx_artifact(onnx_req, model, steps)
    if missing is not None:
        raise BackendUnavailableError(f"{onnx_file} was written and validated, but no engine was built: {missing}")

    with steps.step(f"build TensorRT {trt.__version__} engine ({req.spec.precision}, route {route}) on {gpu['name']}"):
        plan, info = build_engine(onnx_file, profile, opts, route)
        write_bytes_atomic(plan_path, plan)
        steps.note(f"{len(plan) / 2**20:.1f} MiB in {info.build_seconds} s")
    manifest = base_manifest(req.spec, model, "trt")
    manifest.update({
        "artifact": plan_path.name, "sha256": file_sha256(plan_path), "size_bytes": len(plan),
        "onnx": {"file": onnx_file.name, "sha256": file_sha256(onnx_file)},
        "gpu": gpu,
        "trt": {"version": trt.__version__, "route": route, "tf32": opts.tf32,
                "profile": profile.to_dict(), "build_options": opts.to_dict(), "build": info.to_dict(),
                "trtexec": trtexec_command(onnx_file.name, plan_path.name, profile, opts, major, route)},
        "validation": None,
    })
    mpath = manifest_path(plan_path)
    write_json_atomic(mpath, manifest)  # on disk before the runner loads the plan
    from twins_deploy.engines.trt_runner import TrtRunner

    record_validation(req, model, TrtRunner(plan_path, manifest), manifest, mpath, steps,
                      "validate TensorRT vs PyTorch FP32")
    return plan_path, manifest
