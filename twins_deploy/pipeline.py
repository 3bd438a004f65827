"""The one pipeline: a spec plus build options -> artifacts on disk, validated.

model -> ONNX file (+ manifest) -> TensorRT plan (+ manifest), each validated against the
PyTorch FP32 model. Every command goes through here: ``twins-export`` makes artifacts,
``twins-validate`` opens and re-checks them, ``twins-bench`` makes (or reuses) the ones it
times. Everything is checked before any work (name, weights, sizes, output directory,
existing files), precision is resolved once into a :class:`PrecisionPlan`, and each
artifact is staged under a temporary name, validated there, and renamed into place with
its manifest only when complete: a failed or interrupted run leaves what was there before.

An existing artifact is reused instead of rebuilt only when its manifest's identity
(model, weights, spec, precision plan; for engines also TensorRT version, GPU, profile and
build options) equals the request's, its file still has the manifest's sha256, and it did
not fail validation.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from twins_deploy.artifacts import (ONNX_KIND, PLAN_KIND, check_output_dir, file_sha256, install_artifact, manifest_path, now_iso,
                                    output_dir, refuse_non_files, refuse_overwrite, staged_file, tool_versions)
from twins_deploy.engines.opening import open_runner, warn_if_changed
from twins_deploy.engines.routes import judged_precision, route_for
from twins_deploy.engines.runners.base import Runner
from twins_deploy.engines.trt.options import TrtBuildOptions
from twins_deploy.engines.validation import ValidationReport, smallest_hw, validate_against_pytorch, validation_cases
from twins_deploy.errors import (ArtifactError, BackendUnavailableError, CheckpointError, InputShapeError,
                                 OptionError, ValidationFailedError)
from twins_deploy.exporters.spec import INPUT_NAME, ExportSpec
from twins_deploy.factory import create_model
from twins_deploy.manifest import EngineInfo, InputInfo, Manifest, ModelInfo, OnnxInfo, read_manifest
from twins_deploy.precision import PrecisionPlan, resolve_precision
from twins_deploy.preprocess import check_image_folder
from twins_deploy.progress import Steps
from twins_deploy.registry import Preprocess, get_config
from twins_deploy.serving.triton_repo import TritonRepoOptions, check_request, entry_dir, refuse_existing_entry, write_entry
from twins_deploy.twins import Twins
from twins_deploy.weights import WeightsInfo

FORMATS = (ONNX_KIND, PLAN_KIND)
ON_EXISTING = ("refuse", "overwrite", "reuse")
ENGINE_SUFFIX = ".plan"


@dataclass(frozen=True)
class WeightsRequest:
    path: str | None = None
    pretrained: bool = False
    reset_head: bool = False
    num_classes: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class ArtifactRequest:
    """Everything that decides which artifacts are made, where, and how they are checked."""

    spec: ExportSpec
    precision: str = "fp32"
    io_fp16: bool = False
    fmt: str = "onnx"
    trt: TrtBuildOptions = field(default_factory=TrtBuildOptions)
    weights: WeightsRequest = field(default_factory=WeightsRequest)
    out_dir: Path = Path("twins_out")
    # An artifact already on disk: "refuse" (the user did not pass --force), "overwrite",
    # or "reuse" it when it matches (rebuilding it when it does not). A matching, validated
    # ONNX model that only feeds the engine is reused in every mode.
    on_existing: str = "refuse"
    validate: bool = True
    images: str | None = None
    thresholds: dict[str, float | None] = field(default_factory=dict)
    onnx_without_engine: bool = True  # --fmt trt without TensorRT: still write the ONNX, then fail
    triton: TritonRepoOptions | None = None  # also lay the final artifact out in a Triton model repository
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise OptionError(f"format must be one of {', '.join(FORMATS)}, got {self.fmt!r}")
        if self.on_existing not in ON_EXISTING:
            raise OptionError(f"on_existing must be one of {', '.join(ON_EXISTING)}, got {self.on_existing!r}")
        if self.fmt != PLAN_KIND and self.trt.weak_fp16:
            raise OptionError("--weak-fp16 chooses how TensorRT builds FP16; it needs --fmt trt")
        if (self.trt.min_hw or self.trt.max_hw) and not (self.fmt == PLAN_KIND and self.spec.dynamic_hw):
            raise OptionError("--min-hw/--max-hw set the engine's H/W range; they need --fmt trt and --dynamic-hw")
        # what can be refused without knowing the TensorRT version (resolve_precision does the rest)
        resolve_precision(self.precision, self.io_fp16, None, self.trt.weak_fp16)


@dataclass(frozen=True)
class Artifact:
    path: Path
    manifest: Manifest
    reused: bool = False


@dataclass(frozen=True)
class Artifacts:
    plan: PrecisionPlan
    onnx: Artifact
    engine: Artifact | None = None
    triton_entry: Path | None = None  # REPO/<name>/ when the request asked for a Triton repository

    @property
    def final(self) -> Artifact:
        return self.engine or self.onnx


# -- the model --------------------------------------------------------------------------------
def build_model(model: str, w: WeightsRequest, features: bool) -> Twins:
    return create_model(model, weights=w.path, pretrained=w.pretrained, num_classes=w.num_classes,
                        features=features, reset_head=w.reset_head, seed=w.seed)


def _build_step(req: ArtifactRequest, steps: Steps) -> Twins:
    """The first step of every export: the model with its weights, and where they came from."""
    with steps.step(f"build {req.spec.model} ({'backbone' if req.spec.features else 'classifier'})"):
        model = build_model(req.spec.model, req.weights, req.spec.features)
        w = model.weights_info
        steps.note(f"weights: {w.source}" + (f" {w.path}" if w.path else f" (seed {w.seed}; {w.note})"))
    return model


def _model_facts(model: torch.nn.Module, spec: ExportSpec) -> tuple[ModelInfo, Preprocess, WeightsInfo]:
    """What a manifest says about the model: a Twins variant from the registry, or (for the
    benchmark's comparisons) another timm model described by its own attributes."""
    weights = getattr(model, "weights_info", None) or WeightsInfo("random", note="weights of a model built by the caller")
    if isinstance(model, Twins):
        cfg = get_config(spec.model)
        info = ModelInfo(cfg.name, spec.features, model.num_classes, cfg.paper_name, cfg.timm_name, cfg.to_dict())
        return info, cfg.preprocess, weights
    pcfg = getattr(model, "pretrained_cfg", None) or {}
    info = ModelInfo(spec.model, spec.features, int(getattr(model, "num_classes", 0) or 0),
                     timm_name=pcfg.get("architecture"))
    return info, Preprocess(), weights


def _describe(kind: str, path: Path, spec: ExportSpec, plan: PrecisionPlan, model: torch.nn.Module,
              engine: EngineInfo | None = None) -> Manifest:
    """The manifest of an artifact before it exists: its identity and contract, no file facts."""
    info, pre, weights = _model_facts(model, spec)
    axes = spec.dynamic_axes()
    b = spec.batch
    return Manifest(
        kind=kind, artifact=path.name, model=info, weights=weights, spec=spec, plan=plan,
        input=InputInfo(INPUT_NAME, spec.input_shape(), plan.io_dtype(kind), axes.get(INPUT_NAME, {}),
                        {"min": b.min, "opt": b.opt, "max": b.max}),
        outputs=spec.output_names, preprocess=pre,
        tools=tool_versions(("tensorrt", "polygraphy", "cuda-bindings") if kind == PLAN_KIND else ()),
        created=now_iso(), engine=engine,
    )


# -- reuse and staging ----------------------------------------------------------------------------
def _identity_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _identity_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return out


def reuse_verdict(path: Path, planned: Manifest, require_validated: bool) -> tuple[Manifest | None, str]:
    """(the existing manifest, "") when the artifact at ``path`` can stand in for
    ``planned``; otherwise (None, why not)."""
    if not path.exists():
        return None, "absent"
    try:
        existing = read_manifest(path)
    except ArtifactError as e:
        return None, str(e)
    diff = _identity_diff(existing.identity(), planned.identity())
    if diff:
        return None, "made with other inputs (" + "; ".join(diff[:4]) + ")"
    if not existing.sha256 or file_sha256(path) != existing.sha256:
        return None, "its file differs from its manifest (sha256)"
    if existing.passed is False or (require_validated and not existing.passed):
        return None, "it did not pass validation" if existing.passed is False else "it was never validated"
    return existing, ""


def _use_existing(path: Path, planned: Manifest, req: ArtifactRequest, final: bool, steps: Steps) -> Artifact | None:
    """Reuse a matching artifact, or say why one in the way cannot be overwritten."""
    if not path.exists() and not manifest_path(path).exists():
        return None
    reuse = req.on_existing == "reuse" or (req.on_existing == "refuse" and not final)
    if reuse:
        existing, why = reuse_verdict(path, planned, require_validated=req.validate)
        if existing is not None:
            steps.skip(int(req.validate))  # reusing is one step, with no validation after it
            with steps.step(f"reuse {path} (same inputs, sha256 checked"
                            + (", validated)" if existing.passed else ")")):
                pass
            return Artifact(path, existing, reused=True)
    else:
        why = "it exists"
    if req.on_existing == "refuse":
        raise ArtifactError(f"{path} already exists and cannot be reused: {why}; pass --force to overwrite it, "
                            "or choose another --out-dir")
    steps.note(f"replacing {path.name}: {why}")
    return None


def _fail_unless_passed(manifest: Manifest, path: Path) -> None:
    """After the artifact and its report are in place: fail if it did not validate."""
    if manifest.passed is False:
        val = manifest.validation or {}
        raise ValidationFailedError(
            f"{path.name} failed validation: {'; '.join(val.get('failures', [])[:3])} "
            f"(report in {manifest_path(path)})")


def _validate(req: ArtifactRequest, model: torch.nn.Module, candidate: Runner, manifest: Manifest,
              steps: Steps, label: str) -> dict[str, Any] | None:
    """The validation report of ``candidate``, the artifact ``manifest`` describes."""
    if not req.validate:
        return None
    with steps.step(label):
        cases = validation_cases(req.spec, manifest.preprocess, images=req.images, min_hw=smallest_hw(manifest))
        report = validate_against_pytorch(model, candidate, manifest.precision, cases, req.thresholds)
        steps.note(report.summary())
    return report.to_dict()


# -- the stages --------------------------------------------------------------------------------
def _onnx_stage(req: ArtifactRequest, plan: PrecisionPlan, model: torch.nn.Module, path: Path,
                steps: Steps) -> Artifact:
    from twins_deploy.exporters.inspect import inspect_onnx
    from twins_deploy.exporters.onnx_export import export_onnx

    planned = _describe(ONNX_KIND, path, req.spec, plan, model)
    reused = _use_existing(path, planned, req, final=req.fmt == ONNX_KIND, steps=steps)
    if reused is not None:
        return reused
    spec = req.spec
    with staged_file(path) as tmp:  # becomes `path` (with its manifest) only once complete
        with steps.step(f"export {spec.model} to ONNX ({plan.graph}, opset {spec.opset})"):
            graph, info = export_onnx(model, spec, plan)
            if info.simplify_note:
                steps.note(f"simplify: {info.simplify_note}")
            if info.fp16:
                steps.note(f"fp16: {info.fp16['cast_nodes']} Cast nodes, {', '.join(info.fp16['fp32_ops'])} kept in FP32")
            data = graph.SerializeToString()
            tmp.write_bytes(data)
        report = inspect_onnx(graph)
        del graph
        manifest = replace(
            planned, sha256=file_sha256(tmp), size_bytes=len(data),
            onnx=OnnxInfo(spec.opset, report.ir_version, report.num_nodes, report.op_census, report.roll_free,
                          {v.version: v.compatible for v in report.trt}, info.to_dict()))
        del data
        manifest.validation = _validate(req, model, open_runner(tmp, manifest), manifest, steps,
                                        f"validate ONNX Runtime vs PyTorch FP32 ({manifest.precision} thresholds)")
        install_artifact(tmp, path, manifest.to_dict())
    _fail_unless_passed(manifest, path)
    return Artifact(path, manifest)


def _engine_stage(req: ArtifactRequest, plan: PrecisionPlan, model: torch.nn.Module, env: Any,
                  onnx: Artifact, path: Path, profile: Any, steps: Steps) -> Artifact:
    from twins_deploy.engines.trt.build import build_engine
    from twins_deploy.engines.trt.trtexec import trtexec_command

    engine = EngineInfo(trt_version=env.version, gpu=env.gpu, profile=profile.to_dict(),
                        build_options=req.trt.to_dict(), tf32=req.trt.tf32,
                        source_onnx={"file": onnx.path.name, "sha256": onnx.manifest.sha256 or ""})
    planned = _describe(PLAN_KIND, path, req.spec, plan, model, engine)
    reused = _use_existing(path, planned, req, final=True, steps=steps)
    if reused is not None:
        return reused
    with staged_file(path) as tmp:  # becomes `path` (with its manifest) only once complete
        with steps.step(f"build TensorRT {env.version} engine ({plan.requested}, route {plan.route}) "
                        f"on {env.gpu['name']}"):
            data, info = build_engine(onnx.path, profile, req.trt, plan, gpu=env.gpu)
            tmp.write_bytes(data)
            steps.note(f"{len(data) / 2**20:.1f} MiB in {info.build_seconds} s")
        engine = replace(engine, build=info.to_dict(), trtexec=trtexec_command(
            onnx.path.name, path.name, profile, req.trt, env.major, plan, info.timing_cache))
        manifest = replace(planned, sha256=file_sha256(tmp), size_bytes=len(data), engine=engine)
        manifest.validation = _validate(req, model, open_runner(tmp, manifest), manifest, steps,
                                        "validate TensorRT vs PyTorch FP32")
        install_artifact(tmp, path, manifest.to_dict())
    _fail_unless_passed(manifest, path)
    return Artifact(path, manifest)


def artifact_paths(req: ArtifactRequest, plan: PrecisionPlan) -> tuple[Path, Path | None]:
    """Where the ONNX model and (for ``--fmt trt``) the engine of ``req`` are written."""
    onnx = req.out_dir / f"{req.spec.stem(plan.graph, plan.io_fp16)}.onnx"
    engine = req.out_dir / f"{req.spec.stem(plan.requested, plan.io_fp16)}{ENGINE_SUFFIX}" if req.fmt == PLAN_KIND else None
    return onnx, engine


def make_artifacts(req: ArtifactRequest, model: torch.nn.Module | None = None) -> Artifacts:
    """Everything from a name (or a ``model`` built by the caller) to validated artifacts."""
    from twins_deploy.engines.trt.env import BuildEnv, probe_build_env
    from twins_deploy.engines.trt.profile import profile_for

    env = probe_build_env() if req.fmt == PLAN_KIND else BuildEnv(None, None, None)
    if env.missing and not req.onnx_without_engine:
        raise BackendUnavailableError(env.missing)
    plan = resolve_precision(req.precision, req.io_fp16, env.major, req.trt.weak_fp16)
    onnx_path, engine_path = artifact_paths(req, plan)
    profile = profile_for(req.spec, req.trt.min_hw, req.trt.max_hw) if req.fmt == PLAN_KIND else None
    if req.images:
        check_image_folder(req.images)  # an empty folder or a bad image fails here, before any work
    final = engine_path or onnx_path
    if req.triton is not None:  # what Triton could not serve, and an entry in the way, fail here too
        check_request(req.triton, req.fmt, req.spec)
        check_output_dir(req.triton.repo)
        refuse_existing_entry(entry_dir(req.triton, final.stem), overwrite=req.on_existing != "refuse")

    per_artifact = 2 if req.validate else 1  # make (or reuse), validate
    engines = 1 if req.fmt == PLAN_KIND and env.missing is None else 0
    steps = Steps(int(model is None) + per_artifact * (1 + engines) + int(req.triton is not None), quiet=req.quiet)
    with output_dir(req.out_dir):  # held until the run ends: checks below see no other run's files appear
        refuse_non_files([p for a in (onnx_path, engine_path) if a is not None for p in (a, manifest_path(a))])
        if req.on_existing == "refuse":
            refuse_overwrite([final, manifest_path(final)], force=False)
        if model is None:
            model = _build_step(req, steps)
        onnx = _onnx_stage(req, plan, model, onnx_path, steps)
        if req.fmt == ONNX_KIND:
            return Artifacts(plan, onnx, triton_entry=_triton_stage(req, onnx, steps))
        if env.missing:
            raise BackendUnavailableError(
                f"{onnx.path} was {'reused' if onnx.reused else 'written'}"
                f"{' and validated' if onnx.manifest.passed else ''}, but no engine was built: {env.missing}")
        engine = _engine_stage(req, plan, model, env, onnx, engine_path, profile, steps)
        return Artifacts(plan, onnx, engine, _triton_stage(req, engine, steps))


def _triton_stage(req: ArtifactRequest, final: Artifact, steps: Steps) -> Path | None:
    """The final artifact, laid out as a Triton model repository entry (one more artifact)."""
    if req.triton is None:
        return None
    with steps.step(f"write Triton model repository entry {entry_dir(req.triton, final.path.stem)}"):
        return write_entry(req.triton, final.path, final.manifest, overwrite=req.on_existing != "refuse")


# -- re-checking artifacts ---------------------------------------------------------------------
def weights_for_manifest(manifest: Manifest, weights: str | None, pretrained: bool) -> WeightsRequest:
    """Rebuild the weights an artifact was made with, refusing different ones."""
    w = manifest.weights
    num_classes = manifest.model.num_classes or 1000
    if w.source == "random":
        if weights or pretrained:
            raise CheckpointError(f"the artifact was made with seeded random weights (seed {w.seed}); "
                                  "drop --weights/--pretrained, they would validate other weights")
        return WeightsRequest(seed=w.seed or 0, num_classes=num_classes)
    if w.source == "pretrained":
        if not pretrained:
            raise CheckpointError(f"the artifact was made with pretrained weights ({w.path}); pass --pretrained")
        return WeightsRequest(pretrained=True, num_classes=num_classes)
    path = weights or (w.path if w.source == "file" else None)
    if not path or not os.path.isfile(path):
        raise CheckpointError(
            f"the artifact was made with the checkpoint {w.path!r}, which is not here; pass it with --weights PATH")
    if w.sha256 and file_sha256(path) != w.sha256:
        raise CheckpointError(
            f"{path!r} is not the checkpoint the artifact was made with (sha256 differs from the manifest)")
    return WeightsRequest(path=path, num_classes=num_classes, reset_head=True)


def revalidate(artifact: str | os.PathLike[str], weights: str | None = None, pretrained: bool = False,
               batches: list[int] | None = None, images: str | None = None,
               thresholds: dict[str, float | None] | None = None, quiet: bool = False,
               route: str | None = None, threads: int | None = None) -> ValidationReport:
    """``twins-validate``: re-check an existing artifact against PyTorch, from its manifest,
    on ``route`` (a row of the route table; default: the first that runs the artifact on the
    CPU), with the thresholds of what that route computes in."""
    path = Path(artifact)
    manifest = read_manifest(path)
    spec = manifest.spec
    for b in batches or []:
        if not spec.batch.contains(b):
            raise InputShapeError(f"batch {b} is outside the artifact's range {spec.batch.min}..{spec.batch.max}")
    if images:
        check_image_folder(images)
    runner = open_runner(path, manifest, route=route, threads=threads)
    if not quiet:
        warn_if_changed(path, manifest, "validating what is on disk")
    runner.activate()  # a missing backend or an unreadable file fails before the model is built
    try:
        precision = judged_precision(route_for(manifest, route), manifest)
        steps = Steps(2, quiet=quiet)
        with steps.step(f"build {spec.model} with the artifact's weights"):
            model = build_model(spec.model, weights_for_manifest(manifest, weights, pretrained), spec.features)
        with steps.step(f"validate {path.name} in {runner.name} against PyTorch FP32 ({precision} thresholds)"):
            cases = validation_cases(spec, manifest.preprocess, batches, images, min_hw=smallest_hw(manifest))
            report = validate_against_pytorch(model, runner, precision, cases, thresholds)
            steps.note(report.summary())
    finally:
        runner.deactivate()
    return report
