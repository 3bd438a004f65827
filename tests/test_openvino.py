"""OpenVINO on the CPU: the precision is always explicit and proven, dynamic-H/W artifacts
are validated small before large on one compiled model, and OpenVINO is a backend of
twins-validate and twins-bench. No timing assertions."""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ov = pytest.importorskip("openvino", reason="OpenVINO is a test dependency (pip install .[test])")

from twins_deploy import create_model  # noqa: E402
from twins_deploy.engines.runners import openvino as ovr  # noqa: E402
from twins_deploy.engines.runners.base import Runner  # noqa: E402
from twins_deploy.engines.runners.onnxrt import OrtRunner  # noqa: E402
from twins_deploy.engines.runners.openvino import OpenVinoRunner  # noqa: E402
from twins_deploy.engines.validation import (Thresholds, validate_against_pytorch, validation_cases,  # noqa: E402
                                             validation_sizes)
from twins_deploy.errors import BackendUnavailableError, OptionError  # noqa: E402
from twins_deploy.exporters.spec import BatchRange, ExportSpec  # noqa: E402
from twins_deploy.manifest import EngineInfo, read_manifest  # noqa: E402
from twins_deploy.artifacts import manifest_path  # noqa: E402
from twins_deploy.engines.opening import open_runner  # noqa: E402
from twins_deploy.engines.validation import smallest_hw  # noqa: E402
from twins_deploy.pipeline import ArtifactRequest, make_artifacts  # noqa: E402

# pcpvt_s is the quickest variant to export; 64 px keeps every inference cheap, and its
# dynamic-H/W graph shows OpenVINO's snippets bug as the 224-px svt_s backbone does.
DYN = ExportSpec(model="pcpvt_s", img_size=(64, 64), batch=BatchRange(1, 1, 2), dynamic_hw=True)
REAL_CORE = ov.Core
NATIVE_BF16 = "BF16" in REAL_CORE().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.fixture(scope="module")
def dyn_onnx(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ov")
    return make_artifacts(ArtifactRequest(spec=DYN, out_dir=out, validate=False)).final.path


@pytest.fixture(scope="module")
def model():
    return create_model("pcpvt_s")


class SnippetsOn(OpenVinoRunner):
    """OpenVINO as it runs without this runner's guard: snippets left on."""

    def compile_config(self, dynamic_hw: bool) -> dict[str, Any]:
        config = super().compile_config(dynamic_hw)
        config.pop("SNIPPETS_MODE", None)
        return config


class FakeCore:
    """A real ov.Core that answers as a CPU whose default is BF16 would, and records what
    the runner compiles with (optionally claiming a compiled precision of its own)."""

    compiled_as: str | None = None
    configs: list[dict[str, Any]] = []

    def __init__(self) -> None:
        self.core = REAL_CORE()

    def get_property(self, device: str, name: str) -> Any:
        if name == "INFERENCE_PRECISION_HINT":
            return "bf16"
        if name == "OPTIMIZATION_CAPABILITIES":
            return ["FP32", "BF16", "INT8"]
        return self.core.get_property(device, name)

    def read_model(self, path: str) -> Any:
        return self.core.read_model(path)

    def compile_model(self, model: Any, device: str, config: dict[str, Any]) -> Any:
        FakeCore.configs.append(dict(config))
        compiled = self.core.compile_model(model, device, config)
        if FakeCore.compiled_as is None:
            return compiled
        claimed = FakeCore.compiled_as

        class Claimed:  # the compiled model, reading back another precision
            def __getattr__(self, name: str) -> Any:
                return getattr(compiled, name)

            def get_property(self, name: str) -> Any:
                return claimed if name == "INFERENCE_PRECISION_HINT" else compiled.get_property(name)

        return Claimed()


@pytest.fixture
def fake_core(monkeypatch):
    FakeCore.configs, FakeCore.compiled_as = [], None
    monkeypatch.setattr(ov, "Core", FakeCore)
    return FakeCore


# -- precision ---------------------------------------------------------------------------------
def test_precision_is_explicit_whatever_the_device_default(dyn_onnx, fake_core):
    """On a CPU whose default is BF16, an FP32 runner still compiles, and runs, in FP32."""
    with OpenVinoRunner(dyn_onnx, "fp32", threads=1) as r:
        info = r.describe()
    config = fake_core.configs[-1]
    assert config["INFERENCE_PRECISION_HINT"] == "f32" and config["EXECUTION_MODE_HINT"] == "PERFORMANCE"
    assert config["INFERENCE_NUM_THREADS"] == 1 and config["NUM_STREAMS"] == 1
    assert config["ENABLE_CPU_PINNING"] is False
    assert info["device_default_precision"] == "bf16" and info["precision"] == "fp32"
    assert info["runtime_precisions"].get("fp32", 0) > 100 and "bf16" not in info["runtime_precisions"]


def test_a_precision_the_compiled_model_does_not_report_is_refused(dyn_onnx, fake_core):
    fake_core.compiled_as = "f32"  # what OpenVINO reads back when it ignored a bf16 request
    with pytest.raises(BackendUnavailableError, match="compiled the model in fp32, not the requested bf16"):
        OpenVinoRunner(dyn_onnx, "bf16").activate()
    assert fake_core.configs[-1]["INFERENCE_PRECISION_HINT"] == "bf16"


@pytest.mark.skipif(NATIVE_BF16, reason="this CPU has native BF16")
def test_bf16_without_native_bf16_is_refused_not_run_in_fp32(dyn_onnx):
    # what the runner guards against: OpenVINO itself silently compiles a bf16 request in f32
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(dyn_onnx)), "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    assert ovr._ov_precision_name(compiled.get_property("INFERENCE_PRECISION_HINT")) == "fp32"
    with pytest.raises(BackendUnavailableError, match="no native BF16"):
        OpenVinoRunner(dyn_onnx, "bf16").activate()


@pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native BF16 (AVX-512 BF16 or AMX)")
def test_bf16_on_a_bf16_cpu_computes_in_bf16_and_validates(dyn_onnx, model):
    runner = OpenVinoRunner(dyn_onnx, "bf16")
    report = validate_against_pytorch(model, runner, "bf16", validation_cases(DYN, read_manifest(dyn_onnx).preprocess))
    assert report.candidate_info["precision"] == "bf16"
    assert report.candidate_info["runtime_precisions"].get("bf16", 0) > 0
    assert report.passed, report.failures
    assert report.thresholds == Thresholds.for_precision("bf16")


def test_bf16_thresholds_gate_on_cosine():
    th = Thresholds.for_precision("bf16")
    assert th.atol is None and th.min_cosine == 0.999 and th.min_top1 is None
    assert th.override(min_top1=0.99).min_top1 == 0.99


def test_missing_openvino_says_how_to_install(dyn_onnx, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(BackendUnavailableError, match=r"twins-deploy\[openvino\]"):
        OpenVinoRunner(dyn_onnx).activate()


# -- dynamic H/W: small before large on one compiled model ---------------------------------------
def test_validation_runs_the_smallest_size_first():
    assert validation_sizes(DYN)[0] == (32, 32) and validation_sizes(DYN)[1] == (64, 64)
    assert validation_sizes(DYN, min_hw=(48, 40))[0] == (48, 40)
    cases = [c for c, _ in validation_cases(DYN, read_pre())]
    assert cases[0] == "random b=1 32x32" and cases.index("random b=1 96x128") > 0
    static = replace(DYN, dynamic_hw=False)
    assert validation_sizes(static) == [(64, 64)]


def read_pre():
    from twins_deploy.registry import get_config

    return get_config("pcpvt_s").preprocess


def test_engine_validation_starts_at_the_profiles_smallest_size(dyn_onnx):
    m = read_manifest(dyn_onnx)
    assert smallest_hw(m) is None  # an ONNX file takes any size the model takes
    engine = EngineInfo("10.13", {}, {"input": "input", "min": [1, 3, 40, 48], "opt": [1, 3, 64, 64],
                                      "max": [2, 3, 128, 128]}, {}, {})
    assert smallest_hw(replace(m, kind="trt", engine=engine)) == (40, 48)


class WrongAfterSmall(Runner):
    """ONNX Runtime, but once it has seen an input whose last stage is 1x1 (H or W < 64),
    every larger input comes out scaled: the failure mode OpenVINO's snippets have."""

    name = "wrong-after-small"

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.ort = OrtRunner(path)
        self.seen_small = False

    def _activate(self) -> None:
        self.ort.activate()
        self.output_names = self.ort.output_names
        self.seen_small = False  # a fresh compile is correct

    def _deactivate(self) -> None:
        self.ort.deactivate()

    def infer(self, x: np.ndarray) -> list[np.ndarray]:
        small = min(x.shape[2:]) < 64
        outs = self.ort.infer(x)
        if self.seen_small and not small:
            outs = [o * 1.5 for o in outs]
        self.seen_small |= small
        return outs


def test_validation_catches_an_engine_that_goes_wrong_after_a_small_input(dyn_onnx, model):
    """Fails if validation stopped running every case on one activation, or stopped
    running the smallest size first."""
    cases = validation_cases(DYN, read_pre(), batches=[1])
    report = validate_against_pytorch(model, WrongAfterSmall(dyn_onnx), "fp32", cases)
    assert not report.passed
    assert any("96x128" in f for f in report.failures)
    assert not any("32x32" in f for f in report.failures)


def test_installed_openvino_still_has_the_snippets_bug_and_validation_catches_it(dyn_onnx, model):
    cases = validation_cases(DYN, read_pre(), batches=[1])
    report = validate_against_pytorch(model, SnippetsOn(dyn_onnx), "fp32", cases)
    if report.passed:
        pytest.skip(f"OpenVINO {ov.__version__} no longer computes wrong results after a small input with "
                    "snippets on: the runner's SNIPPETS_MODE=DISABLE for dynamic H/W may be lifted")
    assert report.candidate_info["snippets"] == "default"
    assert any("96x128" in f for f in report.failures)


def test_the_runner_is_correct_small_then_large_on_one_compiled_model(dyn_onnx, model):
    report = validate_against_pytorch(model, OpenVinoRunner(dyn_onnx), "fp32",
                                      validation_cases(DYN, read_pre()))
    assert report.passed, report.failures
    assert report.candidate_info["snippets"] == "disabled (dynamic H/W)"
    assert report.candidate_info["config"]["SNIPPETS_MODE"] == "DISABLE"
    assert [s.case for s in report.stats][0] == "random b=1 32x32"
    # and a 224-px input after a 32-px one, on the same compiled model, as the issue saw
    ref = OrtRunner(dyn_onnx)
    with OpenVinoRunner(dyn_onnx) as r, ref:
        r.infer(np.zeros((1, 3, 32, 32), np.float32))
        x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
        got, want = r.infer(x)[0], ref.infer(x)[0]
    assert np.abs(got - want).max() <= 1e-4


def test_static_hw_models_keep_snippets(tmp_path):
    spec = replace(DYN, dynamic_hw=False, batch=BatchRange(1, 2, 2))
    path = make_artifacts(ArtifactRequest(spec=spec, out_dir=tmp_path, validate=False)).final.path
    with OpenVinoRunner(path) as r:
        info = r.describe()
        outs = [r.infer(np.ones((b, 3, 64, 64), np.float32))[0] for b in (1, 2, 1)]
    assert info["snippets"] == "default" and "SNIPPETS_MODE" not in info["config"]
    np.testing.assert_allclose(outs[0], outs[2], atol=1e-5)
    np.testing.assert_allclose(outs[1][0], outs[0][0], atol=1e-4)


# -- twins-validate and open_runner ------------------------------------------------------------------
def test_twins_validate_with_openvino(dyn_onnx, tmp_path, capsys):
    from twins_deploy.cli.validate import main as validate_main

    report = tmp_path / "r.json"
    assert validate_main([str(dyn_onnx), "--backend", "openvino-f32", "--batch", "1", "--threads", "1",
                          "--report", str(report), "-q"]) == 0
    rep = json.loads(report.read_text())
    assert rep["passed"] and rep["candidate"] == "openvino-f32" and rep["precision"] == "fp32"
    assert rep["candidate_info"]["precision"] == "fp32" and rep["candidate_info"]["threads"] == 1
    assert rep["stats"][0]["case"] == "random b=1 32x32"
    rc = validate_main([str(dyn_onnx), "--backend", "openvino-bf16", "--batch", "1", "--report", str(report), "-q"])
    if NATIVE_BF16:
        assert rc == 0 and json.loads(report.read_text())["precision"] == "bf16"
    else:
        assert rc == 3 and "no native BF16" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        validate_main([str(dyn_onnx), "--backend", "openvino-fp64", "-q"])
    assert e.value.code == 2


@pytest.mark.parametrize("payload", [b"not an onnx model\n", b"\x08\x07\x12\x04junk" * 3], ids=["text", "protobuf-ish"])
def test_a_file_that_is_not_onnx_says_so_in_one_line(dyn_onnx, tmp_path, capfd, payload):
    """Read by the ONNX frontend only: no TensorFlow parse errors on stderr, no source locations."""
    from twins_deploy.cli.validate import main as validate_main

    bad = tmp_path / dyn_onnx.name
    bad.write_bytes(payload)
    manifest_path(bad).write_bytes(manifest_path(dyn_onnx).read_bytes())  # its manifest: another file's sha256
    capfd.readouterr()
    assert validate_main([str(bad), "--backend", "openvino-f32", "--batch", "1"]) == 2
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[0].startswith(f"warning: {bad.name} differs from the file its manifest describes"), err
    assert lines[1].startswith("error: ") and len(lines) == 2, err
    assert "OpenVINO's ONNX reader cannot read" in err or "is not an image model" in err, err
    assert "Exception from" not in err and "tensorflow" not in err and len(lines[1]) > 60


def test_a_plan_runs_in_tensorrt_only(dyn_onnx):
    m = read_manifest(dyn_onnx)
    plan = replace(m, kind="trt", engine=EngineInfo("10.13", {}, {}, {}, {}))
    with pytest.raises(OptionError, match="runs in TensorRT only"):
        open_runner(dyn_onnx, plan, route="openvino-f32")
    assert isinstance(open_runner(dyn_onnx, m, route="openvino-bf16"), OpenVinoRunner)
    assert isinstance(open_runner(dyn_onnx, m), OrtRunner)


# -- twins-bench ---------------------------------------------------------------------------------------
def test_bench_rows_record_the_precision_used(tmp_path):
    from twins_deploy.cli.bench import main as bench_main

    fast = ["--min-iters", "2", "--min-time", "0", "--warmup", "1", "--warmup-time", "0", "-q"]
    assert bench_main(["--model", "pcpvt_s", "--backends", "ort-cpu,openvino-f32,openvino-bf16", "--batch", "1",
                       "--img-size", "64", "--threads", "1", "--out", str(tmp_path), "--name", "ov", *fast]) == 0
    rows = {r["backend"]: r for r in json.loads((tmp_path / "ov.json").read_text())["rows"]}
    f32 = rows["openvino-f32"]
    assert f32["status"] == "ok" and f32["precision"] == "fp32" and rows["ort-cpu"]["precision"] == "fp32"
    assert f32["runner"]["config"]["INFERENCE_PRECISION_HINT"] == "f32"
    assert f32["runner"]["config"]["INFERENCE_NUM_THREADS"] == "1"
    bf16 = rows["openvino-bf16"]
    if NATIVE_BF16:
        assert bf16["status"] == "ok" and bf16["precision"] == "bf16"
    else:
        assert bf16["status"] == "skipped" and "no native BF16" in bf16["reason"]
    # one artifact serves ONNX Runtime and OpenVINO
    assert len(list((tmp_path / ".artifacts").glob("*.onnx"))) == 1
    assert "openvino-f32,fp32," in (tmp_path / "ov.csv").read_text()


# -- the CPU comparison: twins-bench --preset cpu-compare ---------------------------------------------
def _row(model: str, backend: str, ips: float, judged_as: str = "fp32", passed: bool | None = True,
         batch: int = 8) -> dict[str, Any]:
    row = {"model": model, "backend": backend, "infer_batch_size": batch, "infer_samples_per_sec": ips,
           "status": "ok"}
    if passed is not None:
        row["validation"] = {"passed": passed, "judged_as": judged_as}
    return row


def test_cpu_compare_targets_against_timm_onnx():
    from twins_deploy.bench.harness import add_speedups
    from twins_deploy.bench.targets import cpu_targets

    rows = [_row("timm-onnx:svt_s", "ort-cpu", 10), _row("svt_s", "ort-cpu", 11), _row("svt_s", "openvino-f32", 14),
            _row("svt_s", "openvino-bf16", 25, "bf16"), _row("svt_s", "torch", 6),
            _row("svt_s", "torch-compile", 99, passed=False), _row("svt_s", "openvino-f32", 99, batch=1),
            {"model": "svt_s", "backend": "ort-cuda", "infer_batch_size": 8, "status": "skipped", "reason": "r"}]
    add_speedups(rows)
    assert [r["speedup_vs_timm_onnx"] for r in rows] == [1.0, 1.1, 1.4, 2.5, 0.6, 9.9, None, None]
    verdict = cpu_targets(rows, [1, 8])
    assert verdict == {"batch": 8,
                       "best_validated": {"model": "svt_s", "backend": "openvino-bf16", "speedup": 2.5, "target": 2.0,
                                          "met": True},
                       "best_fp32": {"model": "svt_s", "backend": "openvino-f32", "speedup": 1.4, "target": 1.3,
                                     "met": True}}
    del rows[3]  # no BF16: the best validated route is the FP32 one, and 1.4x misses 2x
    verdict = cpu_targets(rows, [1, 8])
    assert verdict["best_validated"]["backend"] == "openvino-f32" and not verdict["best_validated"]["met"]
    # without batch 8 the largest batch measured is judged; timm's export is never its own winner
    assert cpu_targets(rows[:1], [1, 2]) == {"batch": 2, "best_validated": None, "best_fp32": None}


def test_cpu_compare_preset_end_to_end_with_tiny_settings(tmp_path):
    from twins_deploy.cli.bench import main as bench_main

    assert bench_main(["--preset", "cpu-compare", "--model", "pcpvt_s", "--img-size", "32", "--batch", "1,2",
                       "--threads", "1", "--rounds", "2", "--min-time", "0", "--min-iters", "1", "--warmup", "1",
                       "--warmup-time", "0", "--note", "test run", "--out", str(tmp_path), "-q"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [
        "cpu_compare.csv", "cpu_compare.json", "cpu_compare.md", "cpu_compare.png"]
    result = json.loads((tmp_path / "cpu_compare.json").read_text())
    rows = {(r["model"], r["backend"], r["infer_batch_size"]): r for r in result["rows"]}
    assert list(dict.fromkeys(k[:2] for k in rows)) == [
        ("pcpvt_s", "torch"), ("pcpvt_s", "ort-cpu"), ("pcpvt_s", "openvino-f32"), ("pcpvt_s", "openvino-bf16"),
        ("timm-onnx:pcpvt_s", "ort-cpu")]
    for (model, backend, b), r in rows.items():
        if r["status"] == "skipped":
            assert backend == "openvino-bf16" and not NATIVE_BF16 and "no native BF16" in r["reason"]
            continue
        assert r["validation"]["passed"], (model, backend, r["validation"]["failures"])
        assert r["validation"]["judged_as"] == ("bf16" if backend == "openvino-bf16" else "fp32")
        assert len(r["rounds_samples_per_sec"]) == 2 and r["infer_samples_per_sec"] > 0
        assert r["speedup_vs_timm_onnx"] == pytest.approx(
            r["infer_samples_per_sec"] / rows[("timm-onnx:pcpvt_s", "ort-cpu", b)]["infer_samples_per_sec"], rel=1e-2)
    assert rows[("timm-onnx:pcpvt_s", "ort-cpu", 2)]["speedup_vs_timm_onnx"] == 1.0
    assert rows[("pcpvt_s", "openvino-f32", 1)]["runner"]["config"]["INFERENCE_NUM_THREADS"] == "1"
    assert rows[("pcpvt_s", "ort-cpu", 1)]["runner"]["spinning"] is False  # threads pinned
    graphs = result["graphs"]
    assert graphs["timm-onnx:pcpvt_s"]["onnx-fp32"]["nodes"] > graphs["pcpvt_s"]["onnx-fp32"]["nodes"] > 0
    assert result["environment"]["tools"]["openvino"] and isinstance(result["environment"]["machine"]["cpu_flags"], list)
    assert result["targets"]["batch"] == 2 and result["note"] == "test run"
    md = (tmp_path / "cpu_compare.md").read_text()
    assert "## Targets (batch 2, against timm's ONNX export" in md and "- note: test run" in md
    assert "- command: `twins-bench --preset cpu-compare --model pcpvt_s" in md
