"""The pipeline's contracts: the typed manifest, precision resolved once, reuse only of
artifacts made from the same inputs, nothing half-written, the caller's model untouched."""
from __future__ import annotations

import functools
import io
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import twins_deploy.pipeline as pipeline
from helpers_export import exported_graph
from twins_deploy import ArtifactError, create_model
from twins_deploy.engines.runners.base import Runner
from twins_deploy.engines.validation import validate_against_pytorch
from twins_deploy.exporters.spec import BatchRange, ExportSpec
from twins_deploy.manifest import SCHEMA, Manifest, read_manifest
from twins_deploy.manifest import reuse_verdict
from twins_deploy.pipeline import ArtifactRequest, make_artifacts
from twins_deploy.progress import Steps
from twins_deploy.serving.triton_repo import TritonRepoOptions

SMALL = ExportSpec(model="pcpvt_s", img_size=(32, 32), batch=BatchRange(1, 2, 2))


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory):
    """One real export (no validation) shared by the tests below; copy before changing it."""
    out = tmp_path_factory.mktemp("pipe")
    art = make_artifacts(ArtifactRequest(spec=SMALL, out_dir=out, validate=False)).final
    return art.path


def _copy(src: Path, dst_dir: Path) -> Path:
    dst = dst_dir / src.name
    shutil.copy(src, dst)
    shutil.copy(f"{src}.json", f"{dst}.json")
    return dst


def test_manifest_round_trips_and_has_one_schema(small_onnx):
    data = json.loads(Path(f"{small_onnx}.json").read_text())
    assert data["schema"] == SCHEMA
    m = Manifest.from_dict(data)
    assert json.loads(json.dumps(m.to_dict())) == data
    assert m.spec == SMALL and m.precision == "fp32" and m.onnx.nodes > 100 and m.onnx.roll_free
    assert m.input.dynamic_axes == {0: "batch"}  # JSON's string keys come back as ints


def test_schema_1_manifests_still_read(small_onnx):
    """twins-deploy 0.1 wrote graph facts at the top level and the precision in the spec."""
    d = json.loads(Path(f"{small_onnx}.json").read_text())
    onnx_info = d.pop("onnx")
    d.pop("precision_plan")
    v1 = {**d, "schema": 1, "spec": {**d["spec"], "precision": "fp32", "io_fp16": False},
          "opset": onnx_info["opset"], "ir_version": onnx_info["ir_version"], "export": onnx_info["export"],
          "graph": {k: onnx_info[k] for k in ("nodes", "op_census", "roll_free", "trt_compatible")}}
    m = Manifest.from_dict(v1)
    assert m.identity() == Manifest.from_dict(d | {"onnx": onnx_info, "precision_plan": {
        "requested": "fp32", "route": "fp32", "io_fp16": False}}).identity()
    assert m.onnx.nodes == onnx_info["nodes"]
    with pytest.raises(ArtifactError, match="schema 99"):
        Manifest.from_dict({**d, "schema": 99})


@pytest.mark.parametrize("damage,reason", [
    (lambda p: p.write_bytes(p.read_bytes()[:-1] + b"\x00"), "sha256"),
    (lambda p: Path(f"{p}.json").write_text("{"), "not valid JSON"),
])
def test_damaged_artifacts_are_not_reused(small_onnx, tmp_path, damage, reason):
    path = _copy(small_onnx, tmp_path)
    planned = read_manifest(path)
    assert reuse_verdict(path, planned, require_validated=False)[0] is not None
    damage(path)
    existing, why = reuse_verdict(path, planned, require_validated=False)
    assert existing is None and reason in why


@pytest.mark.parametrize("change,named", [
    (lambda m: replace(m, spec=replace(m.spec, batch=BatchRange(1, 4, 4))), "spec.batch"),
    (lambda m: replace(m, spec=replace(m.spec, img_size=(64, 64))), "spec.img_size"),
    (lambda m: replace(m, weights=replace(m.weights, seed=1)), "weights.seed"),
    (lambda m: replace(m, plan=replace(m.plan, requested="fp16", route="strong")), "plan.requested"),
])
def test_an_input_that_shapes_the_artifact_prevents_reuse(small_onnx, tmp_path, change, named):
    path = _copy(small_onnx, tmp_path)
    existing, why = reuse_verdict(path, change(read_manifest(path)), require_validated=False)
    assert existing is None and named in why


def test_unvalidated_or_failed_artifacts_are_reused_only_when_allowed(small_onnx, tmp_path):
    path = _copy(small_onnx, tmp_path)
    planned = read_manifest(path)
    assert reuse_verdict(path, planned, require_validated=True) == (None, "it was never validated")
    data = json.loads(Path(f"{path}.json").read_text())
    data["validation"] = {"passed": False, "failures": ["x"]}
    Path(f"{path}.json").write_text(json.dumps(data))
    assert reuse_verdict(path, planned, require_validated=False) == (None, "it did not pass validation")


def test_validation_restores_the_callers_model():
    model = create_model("pcpvt_s").train()
    assert model.attn_impl == "sdpa"

    class Same(Runner):
        def _activate(self):
            self.output_names = ["logits"]

        def infer(self, x):
            import torch

            with torch.no_grad():
                return [model.eval()(torch.from_numpy(x)).numpy()]

    x = np.zeros((1, 3, 32, 32), np.float32)
    model.train()
    report = validate_against_pytorch(model, Same(), "fp32", [("zeros", x)])
    assert report.stats  # the reference ran (explicit attention, eval mode) ...
    assert model.attn_impl == "sdpa" and model.training  # ... and put the model back as it was


def test_fp16_request_exports_the_graph_its_route_needs(tmp_path, monkeypatch):
    """Precision is resolved once: with TensorRT 8.x (weak route) the FP16 engine request
    exports the FP32 graph, named and described as such."""
    from twins_deploy.engines.trt import env

    fake_trt = type("trt", (), {"__version__": "8.6.1"})
    monkeypatch.setattr(pipeline, "checked_build_env",
                        lambda workspace_gib: env.BuildEnv(fake_trt, {"name": "GPU", "compute_capability": "8.0"}))
    engine_calls = []

    def engine_stage(self, run):  # stands in for the TensorRT build
        engine_calls.append((run.plan, self.path, run.profile))
        run.engine = pipeline.Artifact(self.path, run.onnx.manifest)

    monkeypatch.setattr(pipeline.EngineStage, "run", engine_stage)
    arts = make_artifacts(ArtifactRequest(spec=SMALL, precision="fp16", fmt="trt", out_dir=tmp_path,
                                          validate=False))
    assert arts.plan.route == "weak" and arts.onnx.path.name == "pcpvt_s_fp32_32x32.onnx"
    assert arts.onnx.manifest.precision == "fp32" and arts.onnx.manifest.plan.requested == "fp16"
    (plan, path, profile), = engine_calls
    assert plan is arts.plan and path.name == "pcpvt_s_fp16_32x32.plan" and profile.max == (2, 3, 32, 32)


# -- step counters: computed from the steps that will really run ---------------------------------
COUNTER = re.compile(r"^\[(\d+)/(\d+)\] (.*) \.\.\.$")


def _run_counted(req: ArtifactRequest) -> tuple[pipeline.Artifacts, list[str]]:
    """Run ``req`` with progress shown; (its artifacts, the labels of its steps), after
    checking that the counters read [1/N] .. [N/N] with one N."""
    buf = io.StringIO()
    arts = make_artifacts(req, progress=functools.partial(Steps, stream=buf))
    steps = [COUNTER.match(line) for line in buf.getvalue().splitlines() if line.startswith("[")]
    assert steps and all(steps), buf.getvalue()
    n = len(steps)
    assert [(int(m[1]), int(m[2])) for m in steps] == [(i, n) for i in range(1, n + 1)], buf.getvalue()
    return arts, [m[3] for m in steps]


def _kinds(labels: list[str]) -> list[str]:
    return [label.split()[0] for label in labels]


def test_step_counters_add_up_in_every_configuration(small_onnx, tmp_path, monkeypatch):
    """Fresh, reused (with and without --force), validated or not, with a Triton entry: every
    run prints [1/N]..[N/N], N being the steps that ran (a reuse once printed [1/3] then [2/2]).
    The exporter is stood in for by the graph exported once for this module."""
    graph = exported_graph(small_onnx)
    monkeypatch.setattr(pipeline, "export_onnx", lambda *a, **k: graph)
    out = tmp_path / "o"
    req = ArtifactRequest(spec=SMALL, out_dir=out)
    _, labels = _run_counted(req)  # fresh: build, export, validate
    assert _kinds(labels) == ["build", "export", "validate"]
    first = (out / "pcpvt_s_fp32_32x32.onnx").stat().st_mtime_ns
    arts, labels = _run_counted(req)  # the same again, no --force: reused, nothing rewritten
    assert _kinds(labels) == ["build", "reuse"] and arts.onnx.reused
    arts, labels = _run_counted(replace(req, triton=TritonRepoOptions(tmp_path / "repo")))
    assert _kinds(labels) == ["build", "reuse", "write"] and (arts.triton_entry / "config.pbtxt").is_file()
    assert (out / "pcpvt_s_fp32_32x32.onnx").stat().st_mtime_ns == first
    _, labels = _run_counted(replace(req, validate=False, on_existing="reuse"))
    assert _kinds(labels) == ["build", "reuse"]
    _, labels = _run_counted(replace(req, validate=False, on_existing="overwrite",  # --force --no-validate
                                     triton=TritonRepoOptions(tmp_path / "repo")))
    assert _kinds(labels) == ["build", "export", "write"]
    buf = io.StringIO()  # the caller's model (the same seeded weights): no build step
    make_artifacts(replace(req, validate=False), model=create_model("pcpvt_s"),
                   progress=functools.partial(Steps, stream=buf))
    assert buf.getvalue().startswith("[1/1] reuse ")


def test_step_counters_add_up_with_an_engine_and_when_it_is_reused(small_onnx, tmp_path, monkeypatch):
    """--fmt trt (the TensorRT build and the exporter stood in for): ONNX and engine made, then both reused."""
    from twins_deploy.artifacts import file_sha256
    from twins_deploy.engines.trt import env

    graph = exported_graph(small_onnx)
    monkeypatch.setattr(pipeline, "export_onnx", lambda *a, **k: graph)

    fake_trt = type("trt", (), {"__version__": "10.13.0"})
    monkeypatch.setattr(pipeline, "checked_build_env",
                        lambda workspace_gib: env.BuildEnv(fake_trt, {"name": "GPU", "compute_capability": "8.0"}))

    def make(self, run, planned, tmp):
        with run.steps.step("build the engine (stand-in)"):
            tmp.write_bytes(b"plan")
        return replace(planned, sha256=file_sha256(tmp), size_bytes=4)

    monkeypatch.setattr(pipeline.EngineStage, "make", make)
    req = ArtifactRequest(spec=SMALL, fmt="trt", out_dir=tmp_path, validate=False, on_existing="reuse")
    arts, labels = _run_counted(req)
    assert _kinds(labels) == ["build", "export", "build"] and not arts.engine.reused
    arts, labels = _run_counted(req)
    assert _kinds(labels) == ["build", "reuse", "reuse"] and arts.engine.reused and arts.onnx.reused


def test_step_counters_add_up_for_int8(tmp_path, digits_dir):
    """INT8: the FP32 graph, calibration and two Q/DQ forms, validated; then all reused."""
    from twins_deploy.exporters.int8 import MIN_CALIB_IMAGES
    from twins_deploy.pipeline import CalibRequest

    req = ArtifactRequest(ExportSpec("svt_t", img_size=(32, 32), batch=BatchRange(1, 2, 2)), precision="int8",
                          out_dir=tmp_path, calib=CalibRequest(str(digits_dir.calib), MIN_CALIB_IMAGES),
                          thresholds={"min_cosine": 0.5})  # random weights, digits calibration: counters only
    _, labels = _run_counted(req)
    assert _kinds(labels) == ["build", "export", "validate", "quantize", "validate", "quantize", "validate"]
    arts, labels = _run_counted(req)  # no --force: every graph reused, nothing calibrated
    assert _kinds(labels) == ["build", "reuse", "reuse", "reuse"] and arts.onnx.reused


# -- without --force: the same artifact is reused, a different one refused before any work ------
def test_without_force_only_an_artifact_validated_as_asked_is_reused(small_onnx, tmp_path, monkeypatch):
    out = tmp_path / "o"
    req = ArtifactRequest(spec=SMALL, out_dir=out)
    graph = exported_graph(small_onnx)  # the first run's export, stood in for
    with monkeypatch.context() as m:
        m.setattr(pipeline, "export_onnx", lambda *a, **k: graph)
        make_artifacts(req)
    path = out / "pcpvt_s_fp32_32x32.onnx"
    before = path.stat().st_mtime_ns

    def no_export(*a, **k):
        raise AssertionError("exported although the run had to be refused")

    monkeypatch.setattr(pipeline, "export_onnx", no_export)
    assert make_artifacts(req).onnx.reused and path.stat().st_mtime_ns == before
    assert make_artifacts(replace(req, validate=False)).onnx.reused  # validated is more than asked
    photos = tmp_path / "photos"
    photos.mkdir()
    from PIL import Image

    Image.new("RGB", (40, 40), (200, 30, 30)).save(photos / "red.png")
    for change, why in [
        (dict(weights=pipeline.WeightsRequest(seed=1)), "made with other inputs (weights.seed"),
        (dict(thresholds={"atol": 1e-3}), "validated with other thresholds"),
        (dict(images=str(photos)), f"not validated on {photos}"),
    ]:
        with pytest.raises(ArtifactError, match=re.escape(why)) as e:
            make_artifacts(replace(req, **change))
        assert "already exists" in str(e.value) and "--force" in str(e.value)
    assert path.stat().st_mtime_ns == before
