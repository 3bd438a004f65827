"""The one pipeline: a spec plus build options -> artifacts on disk, validated.

model -> ONNX file (+ manifest) -> TensorRT plan (+ manifest), each validated against the
PyTorch FP32 model. Every command goes through here: ``twins-export`` makes artifacts,
``twins-validate`` opens and re-checks them, ``twins-bench`` makes (or reuses) the ones it
times. Everything is checked before any work (name, weights, sizes, output directory,
existing files), precision is resolved once into a :class:`PrecisionPlan`, and each
artifact is staged under a temporary name, validated there, and renamed into place with
its manifest only when complete: a failed or interrupted run leaves what was there before.

An existing artifact is reused instead of rebuilt (or, without --force, instead of refused)
only when its manifest's identity (model, weights, spec, precision plan; for engines also
TensorRT version, GPU, profile and build options) equals the request's, its file still has
the manifest's sha256, and it did not fail validation (a final artifact without --force:
it passed the validation this request asks for).
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from twins_deploy.artifacts import (
    ONNX_KIND,
    PLAN_KIND,
    file_sha256,
    hash_mismatch,
    install_artifact,
    manifest_path,
    now_iso,
    output_dir,
    refuse_non_files,
    staged_file,
    tool_versions,
)
from twins_deploy.engines.opening import open_runner, warn_if_changed
from twins_deploy.engines.routes import judged_precision, route_for
from twins_deploy.engines.runners.base import Runner
from twins_deploy.engines.trt.build import build_engine
from twins_deploy.engines.trt.env import BuildEnv
from twins_deploy.engines.trt.options import TrtBuildOptions
from twins_deploy.engines.trt.preflight import checked_build_env
from twins_deploy.engines.trt.profile import Profile, profile_for
from twins_deploy.engines.trt.trtexec import trtexec_command
from twins_deploy.engines.validation import (
    Thresholds,
    ValidationReport,
    smallest_hw,
    validate_against_pytorch,
    validation_cases,
)
from twins_deploy.errors import (
    ArtifactError,
    CheckpointError,
    InputShapeError,
    OptionError,
    ValidationFailedError,
    quoted,
)
from twins_deploy.exporters.inspect import inspect_onnx
from twins_deploy.exporters.int8 import (
    DEFAULT_CALIB_COUNT,
    DEFAULT_CALIB_METHOD,
    FORMS,
    QUANTIZED_OPS,
    RECOMMENDED_CALIB_IMAGES,
    TRT_FORM,
    Calibration,
    CalibrationSet,
    calibrated,
    calibration_set,
    qdq_facts,
    quantize,
)
from twins_deploy.exporters.onnx_export import export_onnx
from twins_deploy.exporters.spec import INPUT_NAME, ExportSpec
from twins_deploy.factory import create_model
from twins_deploy.manifest import (
    EngineInfo,
    InputInfo,
    Manifest,
    ModelInfo,
    OnnxInfo,
    QuantInfo,
    read_manifest,
    reuse_verdict,
)
from twins_deploy.precision import PrecisionPlan, resolve_precision
from twins_deploy.preprocess import check_image_folder
from twins_deploy.progress import Steps
from twins_deploy.registry import Preprocess, get_config
from twins_deploy.serving.triton_repo import TritonRepoOptions, check_entry, entry_dir, hold_repo, write_entry
from twins_deploy.twins import Twins
from twins_deploy.weights import WeightsInfo

FORMATS = (ONNX_KIND, PLAN_KIND)
ON_EXISTING = ("refuse", "overwrite", "reuse")
ENGINE_SUFFIX = ".plan"
SILENT = functools.partial(Steps, quiet=True)  # make_artifacts' progress when the caller shows none
# Random pixels exceed the ranges an INT8 graph was calibrated to, so a trained model's correct
# INT8 graph can fail on them (cosine 0.98 on the digits model): it is judged on images.
INT8_NEEDS_IMAGES = ("an INT8 graph of trained weights is judged on images like those it will see: pass --images DIR "
                     "(held-out images, not the calibration ones)")


@dataclass(frozen=True)
class WeightsRequest:
    path: str | None = None
    pretrained: bool = False
    reset_head: bool = False
    num_classes: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class CalibRequest:
    """INT8 calibration: the images (a folder), how many of them, and the range method."""

    folder: str
    count: int = DEFAULT_CALIB_COUNT
    method: str = DEFAULT_CALIB_METHOD


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
    triton: TritonRepoOptions | None = None  # also lay the final artifact out in a Triton model repository
    calib: CalibRequest | None = None  # INT8 only: the calibration images

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise OptionError(f"format must be one of {', '.join(FORMATS)}, got {quoted(self.fmt)}")
        if self.on_existing not in ON_EXISTING:
            raise OptionError(f"on_existing must be one of {', '.join(ON_EXISTING)}, got {quoted(self.on_existing)}")
        if self.fmt != PLAN_KIND and self.trt.weak_fp16:
            raise OptionError("--weak-fp16 chooses how TensorRT builds FP16; it needs --fmt trt")
        if (self.trt.min_hw or self.trt.max_hw) and not (self.fmt == PLAN_KIND and self.spec.dynamic_hw):
            raise OptionError("--min-hw/--max-hw set the engine's H/W range; they need --fmt trt and --dynamic-hw")
        # what can be refused without knowing the TensorRT version (resolve_precision does the rest)
        resolve_precision(self.precision, self.io_fp16, None, self.trt.weak_fp16)
        if (self.precision == "int8") != (self.calib is not None):
            raise OptionError(
                "--precision int8 needs calibration images: --calib DIR (representative images, never random data)"
                if self.calib is None else "--calib DIR calibrates INT8; it needs --precision int8")


@dataclass(frozen=True)
class Artifact:
    path: Path
    manifest: Manifest
    reused: bool = False


@dataclass(frozen=True)
class Artifacts:
    plan: PrecisionPlan
    onnx: Artifact          # the deployed ONNX graph (INT8: its S8S8 form, which TensorRT builds)
    engine: Artifact | None = None
    triton_entry: Path | None = None  # REPO/<name>/ when the request asked for a Triton repository
    source: Artifact | None = None    # INT8: the FP32 graph it was quantized from
    companions: tuple[Artifact, ...] = ()  # INT8: the other forms of the same calibration

    def int8_form(self, form: str) -> Artifact:
        """The INT8 graph of Q/DQ ``form`` made by this run."""
        for a in (self.onnx, *self.companions):
            if a.manifest.quant is not None and a.manifest.quant.form == form:
                return a
        raise ValueError(f"no INT8 graph of form {quoted(form)} was made")

    @property
    def final(self) -> Artifact:
        return self.engine or self.onnx


# -- the model --------------------------------------------------------------------------------
def build_model(model: str, w: WeightsRequest, features: bool) -> Twins:
    return create_model(model, weights=w.path, pretrained=w.pretrained, num_classes=w.num_classes,
                        features=features, reset_head=w.reset_head, seed=w.seed)


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
              engine: EngineInfo | None = None, quant: QuantInfo | None = None) -> Manifest:
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
        created=now_iso(), engine=engine, quant=quant,
    )


# -- reuse and staging ----------------------------------------------------------------------------
def _existing(path: Path, planned: Manifest, req: ArtifactRequest, final: bool) -> tuple[Artifact | None, str]:
    """(a matching artifact at ``path`` to reuse, "") or (None, why one in the way is replaced:
    "" when nothing is there); raises when one is in the way and may not be overwritten.

    Without --force ("refuse") nothing is overwritten, but an artifact made from the same
    inputs, intact, and validated as this request would validate it is reused: running the
    same export again, or again with --triton-repo, costs nothing and changes nothing."""
    if not path.exists() and not manifest_path(path).exists():
        return None, ""
    if req.on_existing == "overwrite":
        return None, "it exists"
    existing, why = reuse_verdict(path, planned, require_validated=req.validate)
    if existing is not None and final and req.on_existing == "refuse":
        why = _not_judged_as_asked(existing, planned, req)
        existing = None if why else existing
    if existing is not None:
        return Artifact(path, existing, reused=True), ""
    if req.on_existing == "refuse":
        raise ArtifactError(f"{path} already exists and cannot be reused: {why}; pass --force to overwrite it, "
                            "or choose another --out-dir")
    return None, why


def _not_judged_as_asked(existing: Manifest, planned: Manifest, req: ArtifactRequest) -> str:
    """Why ``existing``'s validation does not answer the validation ``req`` asks for ("" when it does)."""
    if not req.validate:
        return ""
    if req.images:
        return (f"it was not validated on {req.images} (twins-validate {existing.artifact} --images "
                f"{req.images} checks it without exporting again)")
    asked = asdict(Thresholds.for_precision(planned.precision).override(**req.thresholds))
    if (existing.validation or {}).get("thresholds") != asked:
        return "it was validated with other thresholds"
    return ""


def _fail_unless_passed(manifest: Manifest, path: Path) -> None:
    """After the artifact and its report are in place: fail if it did not validate."""
    if manifest.passed is False:
        val = manifest.validation or {}
        raise ValidationFailedError(
            f"{path.name} failed validation: {'; '.join(val.get('failures', [])[:3])} "
            f"(report in {manifest_path(path)})")


def _validate(run: Run, candidate: Runner, manifest: Manifest, label: str) -> dict[str, Any] | None:
    """The validation report of ``candidate``, the artifact ``manifest`` describes, judged with
    the thresholds of the precision it computes in."""
    req = run.req
    if not req.validate:
        return None
    with run.steps.step(f"{label} ({manifest.precision} thresholds)"):
        cases = validation_cases(req.spec, manifest.preprocess, images=req.images, min_hw=smallest_hw(manifest),
                                 precision=manifest.precision)
        report = validate_against_pytorch(run.model, candidate, manifest.precision, cases, req.thresholds)
        run.steps.note(report.summary())
    return report.to_dict()


# -- the stages --------------------------------------------------------------------------------
@dataclass
class Run:
    """One :func:`make_artifacts` call as its stages see it: what was resolved before any
    work, and what each stage has made so far."""

    req: ArtifactRequest
    plan: PrecisionPlan
    env: BuildEnv
    profile: Profile | None
    steps: Steps
    model: torch.nn.Module | None = None
    onnx: Artifact | None = None
    engine: Artifact | None = None
    triton_entry: Path | None = None
    calib: CalibrationSet | None = None  # INT8: the images, checked before any work
    source: Artifact | None = None       # INT8: the FP32 graph the Q/DQ graphs are quantized from
    companions: list[Artifact] = field(default_factory=list)
    cleanup: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _calibration: Calibration | None = None

    @property
    def final(self) -> Artifact:
        artifact = self.engine or self.onnx
        assert artifact is not None, "the ONNX stage runs before every stage that reads the final artifact"
        return artifact

    def calibration(self) -> Calibration:
        """The one calibration of this run, made when the first INT8 graph needs it (a run
        that reuses every INT8 graph calibrates nothing)."""
        if self._calibration is None:
            req, source = self.req, self.source
            assert self.calib is not None and req.calib is not None and source is not None
            start = time.perf_counter()
            batch = None if req.spec.batch.dynamic else req.spec.batch.min
            self._calibration = self.cleanup.enter_context(calibrated(
                source.path, self.calib, source.manifest.preprocess, req.spec.img_size, batch, req.calib.method))
            self.steps.note(f"calibrated on {len(self.calib.files)} images of {self.calib.folder} "
                            f"({req.calib.method}) in {time.perf_counter() - start:.1f} s")
        return self._calibration


def _build_model(run: Run) -> tuple[str, float, list[str]]:
    """Build the request's model into ``run``: the step's label, its duration and its notes,
    printed once the run's steps are counted (which needs the model's weights)."""
    spec = run.req.spec
    start = time.perf_counter()
    run.model = build_model(spec.model, run.req.weights, spec.features)
    w = run.model.weights_info
    note = f"weights: {w.source}" + (f" {w.path}" if w.path else f" (seed {w.seed}; {w.note})")
    return (f"build {spec.model} ({'backbone' if spec.features else 'classifier'})", time.perf_counter() - start,
            [note])


class Stage:
    """One step of the pipeline: ``plan`` decides what it will do and how many progress steps
    that takes (every stage is planned before any step prints, so the counter adds up), and
    ``run`` does it, adding what it makes to the :class:`Run`."""

    steps: int = 1

    def plan(self, run: Run) -> int:
        return self.steps

    def run(self, run: Run) -> None:
        raise NotImplementedError


class ArtifactStage(Stage):
    """Make (or reuse) one artifact at ``path``: staged under a temporary name, validated
    there, installed with its manifest only when complete."""

    label = "artifact"

    def __init__(self, path: Path, final: bool, validate: bool) -> None:
        self.path, self.final, self.validate = path, final, validate
        self.steps = 2 if validate else 1  # make, validate
        self.reused: Artifact | None = None
        self.replacing = ""  # why an artifact in the way is replaced

    def plan(self, run: Run) -> int:
        """Reuse or make: decided before any work. Later stages plan with what this one will
        keep (the artifact reused, or the manifest planned for the one to be made)."""
        planned = self.planned(run)
        self.reused, self.replacing = _existing(self.path, planned, run.req, final=self.final)
        self.keep(run, self.reused or Artifact(self.path, planned))
        return 1 if self.reused is not None else self.steps  # reusing is one step, with no validation after it

    def run(self, run: Run) -> None:
        if self.reused is not None:
            with run.steps.step(f"reuse {self.path} (same inputs, sha256 checked"
                                + (", validated)" if self.reused.manifest.passed else ")")):
                pass
            self.keep(run, self.reused)
            return
        if self.replacing:
            run.steps.note(f"replacing {self.path.name}: {self.replacing}")
        planned = self.planned(run)
        with staged_file(self.path) as tmp:
            manifest = self.make(run, planned, tmp)
            manifest.validation = _validate(run, open_runner(tmp, manifest), manifest, self.label)
            install_artifact(tmp, self.path, manifest.to_dict())
        _fail_unless_passed(manifest, self.path)
        self.keep(run, Artifact(self.path, manifest))

    def planned(self, run: Run) -> Manifest:
        """The manifest before the artifact exists: its identity and contract."""
        raise NotImplementedError

    def make(self, run: Run, planned: Manifest, tmp: Path) -> Manifest:
        """Write the artifact to ``tmp``; its manifest with the file's facts."""
        raise NotImplementedError

    def keep(self, run: Run, artifact: Artifact) -> None:
        raise NotImplementedError


class OnnxStage(ArtifactStage):
    """The graph exported from PyTorch: the deployed one, or (INT8) the FP32 graph the Q/DQ
    graphs are quantized from, an artifact of its own that FP32 runs reuse."""

    label = "validate ONNX Runtime vs PyTorch FP32"

    def planned(self, run: Run) -> Manifest:
        return _describe(ONNX_KIND, self.path, run.req.spec, run.plan.source, run.model)

    def make(self, run: Run, planned: Manifest, tmp: Path) -> Manifest:
        spec, plan, steps = run.req.spec, run.plan.source, run.steps
        with steps.step(f"export {spec.model} to ONNX ({plan.graph}, opset {spec.opset})"):
            graph, info = export_onnx(run.model, spec, plan)
            if info.simplify_note:
                steps.note(f"simplify: {info.simplify_note}")
            if info.fp16:
                steps.note(f"fp16: {info.fp16['cast_nodes']} Cast nodes, {', '.join(info.fp16['fp32_ops'])} kept in FP32")
            data = graph.SerializeToString()
            tmp.write_bytes(data)
        report = inspect_onnx(graph)
        return replace(planned, sha256=file_sha256(tmp), size_bytes=len(data),
                       onnx=OnnxInfo(spec.opset, report.ir_version, report.num_nodes, report.op_census,
                                     report.roll_free, {v.version: v.compatible for v in report.trt}, info.to_dict()))

    def keep(self, run: Run, artifact: Artifact) -> None:
        if run.plan.source is run.plan:
            run.onnx = artifact
        else:
            run.source = artifact


class Int8Stage(ArtifactStage):
    """One Q/DQ form of the run's INT8 calibration, written from the FP32 graph
    (:mod:`twins_deploy.exporters.int8`); the S8S8 form is the deployed graph (TensorRT
    builds it), the others are its companions."""

    label = "validate INT8 in ONNX Runtime vs PyTorch FP32"

    def __init__(self, path: Path, form: str, final: bool, validate: bool) -> None:
        super().__init__(path, final=final, validate=validate)
        self.form = form

    def planned(self, run: Run) -> Manifest:
        req, source, calib = run.req, run.source, run.calib
        assert source is not None and calib is not None and req.calib is not None
        f = FORMS[self.form].describe()
        quant = QuantInfo(self.form, f["activations"], f["weights"], list(QUANTIZED_OPS), "", "",
                          {**calib.to_dict(), "method": req.calib.method},
                          {"file": source.path.name, "sha256": source.manifest.sha256 or ""}, runs_best_in=f["for"])
        return _describe(ONNX_KIND, self.path, req.spec, run.plan, run.model, quant=quant)

    def make(self, run: Run, planned: Manifest, tmp: Path) -> Manifest:
        import onnx

        with run.steps.step(f"quantize to INT8, {self.form} Q/DQ form ({FORMS[self.form].for_runtimes})"):
            facts = quantize(run.calibration(), self.form, tmp)
        graph = onnx.load(str(tmp))
        report = inspect_onnx(graph)
        quant = replace(planned.quant, quantizer=facts["quantizer"], quantizer_version=facts["quantizer_version"],
                        qdq=qdq_facts(graph))
        return replace(planned, sha256=file_sha256(tmp), size_bytes=tmp.stat().st_size, quant=quant,
                       onnx=OnnxInfo(graph.opset_import[0].version if graph.opset_import else 0, report.ir_version,
                                     report.num_nodes, report.op_census, report.roll_free,
                                     {v.version: v.compatible for v in report.trt}, {}))

    def keep(self, run: Run, artifact: Artifact) -> None:
        if self.form == TRT_FORM:
            run.onnx = artifact
        else:
            run.companions.append(artifact)


class EngineStage(ArtifactStage):
    """The TensorRT plan, built from the ONNX artifact (the preflight has found TensorRT,
    a driver that runs it and a GPU it supports before any stage ran)."""

    label = "validate TensorRT vs PyTorch FP32"

    def __init__(self, path: Path, validate: bool) -> None:
        super().__init__(path, final=True, validate=validate)

    def planned(self, run: Run) -> Manifest:
        req, env, onnx = run.req, run.env, run.final
        engine = EngineInfo(trt_version=env.version, gpu=env.gpu, profile=run.profile.to_dict(),
                            build_options=req.trt.to_dict(), tf32=req.trt.tf32,
                            source_onnx={"file": onnx.path.name, "sha256": onnx.manifest.sha256 or ""})
        return _describe(PLAN_KIND, self.path, req.spec, run.plan, run.model, engine, onnx.manifest.quant)

    def make(self, run: Run, planned: Manifest, tmp: Path) -> Manifest:
        req, env, plan, onnx = run.req, run.env, run.plan, run.final
        with run.steps.step(f"build TensorRT {env.version} engine ({plan.requested}, route {plan.route}) "
                            f"on {env.gpu['name']}"):
            data, info = build_engine(onnx.path, run.profile, req.trt, plan, gpu=env.gpu)
            tmp.write_bytes(data)
            run.steps.note(f"{len(data) / 2**20:.1f} MiB in {info.build_seconds} s")
        engine = replace(planned.engine, build=info.to_dict(), trtexec=trtexec_command(
            onnx.path.name, self.path.name, run.profile, req.trt, env.major, plan, info.timing_cache))
        return replace(planned, sha256=file_sha256(tmp), size_bytes=len(data), engine=engine)

    def keep(self, run: Run, artifact: Artifact) -> None:
        run.engine = artifact


class TritonStage(Stage):
    """The final artifact, laid out as a Triton model repository entry (one more artifact)."""

    def run(self, run: Run) -> None:
        options, final = run.req.triton, run.final
        with run.steps.step(f"write Triton model repository entry {entry_dir(options, final.path.stem)}"):
            run.triton_entry = write_entry(options, final.path, final.manifest,
                                           overwrite=run.req.on_existing != "refuse")


def artifact_paths(req: ArtifactRequest, plan: PrecisionPlan) -> tuple[Path, Path | None]:
    """Where the exported ONNX model and (for ``--fmt trt``) the engine of ``req`` are written
    (INT8: the exported model is the FP32 graph; :func:`int8_paths` names the Q/DQ graphs)."""
    onnx = req.out_dir / f"{req.spec.stem(plan.source.graph, plan.io_fp16)}.onnx"
    engine = req.out_dir / f"{req.spec.stem(plan.requested, plan.io_fp16)}{ENGINE_SUFFIX}" if req.fmt == PLAN_KIND else None
    return onnx, engine


def int8_paths(req: ArtifactRequest) -> dict[str, Path]:
    """Q/DQ form -> where its INT8 graph is written (``svt_s_int8-u8s8.onnx``), the S8S8
    form (the deployed graph, which TensorRT builds) last."""
    forms = sorted(FORMS, key=lambda f: f == TRT_FORM)
    return {f: req.out_dir / f"{req.spec.stem('int8')}-{f}.onnx" for f in forms}


def make_artifacts(req: ArtifactRequest, model: torch.nn.Module | None = None,
                   progress: Callable[[int], Steps] | None = None) -> Artifacts:
    """Everything from a name (or a ``model`` built by the caller) to validated artifacts.

    Everything that can be refused is checked first; then, inside the locked output directory,
    the model is built, each stage decides whether it reuses or makes its artifact, the steps
    that will run are counted, and the stages run in order. ``progress`` makes
    the step printer for that count (the caller decides how progress is shown, e.g.
    ``functools.partial(Steps, quiet=args.quiet)``); None: silent."""

    wants_engine = req.fmt == PLAN_KIND
    # Every check before any work, the request's own first (exit 2): what Triton could not serve
    # and an entry in the way, the engine's profile, an empty folder or a bad image. The final
    # artifact's name does not depend on the TensorRT line, so the draft plan names it.
    draft = resolve_precision(req.precision, req.io_fp16, None, req.trt.weak_fp16)
    quantized = int8_paths(req) if req.calib is not None else {}
    final = artifact_paths(req, draft)[1] if wants_engine else quantized.get(TRT_FORM, artifact_paths(req, draft)[0])
    if req.triton is not None:
        check_entry(req.triton, req.fmt, req.spec, final.stem, overwrite=req.on_existing != "refuse")
    profile = profile_for(req.spec, req.trt.min_hw, req.trt.max_hw) if wants_engine else None
    if req.images:
        check_image_folder(req.images)
    calib = calibration_set(req.calib.folder, req.calib.count, req.images) if req.calib is not None else None
    if calib is not None and req.validate and not req.images and (req.weights.path or req.weights.pretrained):
        raise OptionError(f"{INT8_NEEDS_IMAGES}, or skip validation with --no-validate")
    # then TensorRT, the driver, the GPU and its free memory (exit 3): a machine where no engine
    # can be built says so before half a minute of ONNX export, not after
    env = checked_build_env(req.trt.workspace_gib) if wants_engine else BuildEnv(None, None)
    plan = resolve_precision(req.precision, req.io_fp16, env.major, req.trt.weak_fp16) if wants_engine else draft
    onnx_path, engine_path = artifact_paths(req, plan)
    assert (engine_path or quantized.get(TRT_FORM) or onnx_path) == final  # named for what was asked, not the line

    stages: list[Stage] = [OnnxStage(onnx_path, final=not wants_engine and not quantized, validate=req.validate)]
    stages += [Int8Stage(path, form, final=not wants_engine, validate=req.validate) for form, path in quantized.items()]
    if engine_path is not None:
        stages.append(EngineStage(engine_path, req.validate))
    if req.triton is not None:
        stages.append(TritonStage())
    run = Run(req, plan, env, profile, SILENT(0), model, calib=calib)
    if calib is not None and len(calib.files) < RECOMMENDED_CALIB_IMAGES:
        print(f"warning: calibrating on {len(calib.files)} images; >= {RECOMMENDED_CALIB_IMAGES} representative "
              "images are recommended (NVIDIA's guidance for ViTs is 500)", file=sys.stderr, flush=True)
    made = [a for a in (onnx_path, *quantized.values(), engine_path) if a is not None]
    # --out-dir and the Triton repository are held until the run ends: no other run's files
    # appear in either, and no other run takes the entry this one checked above
    repo = hold_repo(req.triton.repo) if req.triton is not None else contextlib.nullcontext()
    with output_dir(req.out_dir), repo, run.cleanup:
        refuse_non_files([p for a in made for p in (a, manifest_path(a))])
        # The model first (the artifacts' identities name its weights), then every stage decides
        # whether it reuses or makes its artifact (refusing one in the way before any export), and
        # only then are the steps counted and printed: [1/N] .. [N/N], whatever is reused.
        built = _build_model(run) if model is None else None
        counts = [stage.plan(run) for stage in stages]
        run.onnx = run.source = run.engine = None
        run.companions = []
        run.steps = (progress or SILENT)(sum(counts) + (built is not None))
        if built is not None:
            run.steps.finished(*built)
        for stage in stages:
            stage.run(run)
    assert run.onnx is not None
    return Artifacts(plan, run.onnx, run.engine, run.triton_entry, run.source, tuple(run.companions))


# -- re-checking artifacts ---------------------------------------------------------------------
def weights_for_manifest(manifest: Manifest, weights: str | None, pretrained: bool) -> WeightsRequest:
    """Rebuild the weights an artifact was made with, refusing different ones."""
    w = manifest.weights
    num_classes = manifest.model.num_classes or 1000
    if w.source == "random":
        if weights or pretrained:
            raise CheckpointError(f"the artifact was made with seeded random weights (seed {w.seed}); "
                                  "drop --weights/--pretrained, they would validate other weights")
        if w.seed is None:  # another seed would rebuild other weights, and validation would judge those
            raise ArtifactError("the manifest records seeded random weights without their seed: they cannot be "
                                "rebuilt to validate against; re-export the artifact")
        return WeightsRequest(seed=w.seed, num_classes=num_classes)
    if w.source == "pretrained":
        if not pretrained:
            raise CheckpointError(f"the artifact was made with pretrained weights ({w.path}); pass --pretrained")
        return WeightsRequest(pretrained=True, num_classes=num_classes)
    path = weights or (w.path if w.source == "file" else None)
    if not path or not os.path.isfile(path):
        raise CheckpointError(
            f"the artifact was made with the checkpoint {quoted(w.path)}, which is not here; "
            "pass it with --weights PATH")
    if w.sha256 and (why := hash_mismatch(path, w.sha256)):
        raise CheckpointError(f"{quoted(path)} is not the checkpoint the artifact was made with ({why})")
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
    runner = open_runner(path, manifest, route=route, threads=threads)  # refuses a route that cannot run it
    if not images and manifest.precision == "int8" and manifest.weights.source != "random":
        raise OptionError(INT8_NEEDS_IMAGES)
    if not quiet:
        warn_if_changed(path, manifest, "validating what is on disk")
    runner.activate()  # a missing backend or an unreadable file fails before the model is built
    try:
        precision = judged_precision(route_for(manifest, route), manifest)
        steps = Steps(2, quiet=quiet)
        with steps.step(f"build {spec.model} with the artifact's weights"):
            model = build_model(spec.model, weights_for_manifest(manifest, weights, pretrained), spec.features)
        with steps.step(f"validate {path.name} in {runner.name} against PyTorch FP32 ({precision} thresholds)"):
            cases = validation_cases(spec, manifest.preprocess, batches, images, min_hw=smallest_hw(manifest),
                                     precision=manifest.precision)
            report = validate_against_pytorch(model, runner, precision, cases, thresholds)
            steps.note(report.summary())
    finally:
        runner.deactivate()
    return report
