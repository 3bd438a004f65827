"""The pipeline's contracts: the typed manifest, precision resolved once, reuse only of
artifacts made from the same inputs, nothing half-written, the caller's model untouched."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import twins_deploy.pipeline as pipeline
from twins_deploy import ArtifactError, create_model
from twins_deploy.engines.runners.base import Runner
from twins_deploy.engines.validation import validate_against_pytorch
from twins_deploy.exporters.spec import BatchRange, ExportSpec
from twins_deploy.manifest import SCHEMA, Manifest, read_manifest
from twins_deploy.manifest import reuse_verdict
from twins_deploy.pipeline import ArtifactRequest, make_artifacts

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
