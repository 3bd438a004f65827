"""Everything about the TensorRT path that runs without TensorRT or a GPU, and the
GPU integration tests, which skip here with their reason."""
from __future__ import annotations

import json
import shlex

import numpy as np
import pytest

from twins_deploy import ArtifactError, BackendUnavailableError, InputShapeError
from twins_deploy.cli.export import main as export_main
from twins_deploy.cli.validate import main as validate_main
from twins_deploy.engines.trt.compat import check_engine_compat
from twins_deploy.engines.trt.env import import_tensorrt
from twins_deploy.engines.trt.options import TrtBuildOptions
from twins_deploy.engines.trt.profile import Profile, profile_for
from twins_deploy.engines.trt.trtexec import trtexec_command
from twins_deploy.errors import OptionError
from twins_deploy.exporters.spec import BatchRange, ExportSpec
from twins_deploy.manifest import EngineInfo, InputInfo, Manifest, ModelInfo
from twins_deploy.precision import PrecisionPlan, resolve_precision
from twins_deploy.registry import Preprocess
from twins_deploy.weights import random_info


def _trt_and_gpu() -> str | None:
    """Reason to skip GPU integration tests, or None when they can run."""
    try:
        trt = import_tensorrt()
        from twins_deploy.engines.trt.env import gpu_info

        gpu_info()
    except BackendUnavailableError as e:
        return str(e)
    return None if hasattr(trt, "Builder") else "TensorRT builder not available"


SKIP_GPU = _trt_and_gpu()


# -- without TensorRT -----------------------------------------------------------------------
@pytest.mark.skipif(SKIP_GPU is None, reason="TensorRT and a GPU are present: the missing path cannot be shown")
def test_fmt_trt_without_tensorrt_exits_3_before_exporting(tmp_path, capsys):
    """The preflight runs before the ONNX export: nothing is written, and the one error names
    what to install."""
    out = tmp_path / "o"
    rc = export_main(["--model", "pcpvt_s", "--fmt", "trt", "--precision", "fp16", "--out-dir", str(out), "-q"])
    assert rc == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: TensorRT cannot run here: ") and len(err) == 1
    assert "pip install 'twins-deploy[trt]'" in err[0]
    assert not out.exists()  # not even the output folder: no export work was done

def test_tensorrt_import_is_refused_clearly_when_absent():
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed")
    except ImportError:
        pass
    with pytest.raises(BackendUnavailableError, match=r"TensorRT is not installed; install it with: pip install"):
        import_tensorrt()


def test_validate_engine_without_tensorrt_exits_3(tmp_path, capsys):
    if SKIP_GPU is None:
        pytest.skip("TensorRT and a GPU are present")
    plan = tmp_path / "svt_s_fp16.plan"
    plan.write_bytes(b"not an engine")
    (tmp_path / "svt_s_fp16.plan.json").write_text(json.dumps(_engine_artifact_manifest(plan.name).to_dict()))
    assert validate_main([str(plan), "--batch", "1", "-q"]) == 3
    assert "error: " in capsys.readouterr().err


def _engine_artifact_manifest(name: str, sha256: str | None = None) -> Manifest:
    spec = ExportSpec(model="svt_s")
    return Manifest(
        kind="trt", artifact=name, model=ModelInfo("svt_s", False, 1000), weights=random_info(0), spec=spec,
        plan=PrecisionPlan("fp16", "strong"), input=InputInfo("input", spec.input_shape(), "float32", {0: "batch"},
                                                              {"min": 1, "opt": 8, "max": 32}),
        outputs=["logits"], preprocess=Preprocess(), tools={}, created="", sha256=sha256,
        engine=EngineInfo("10.13.0", {"name": "NVIDIA H100", "compute_capability": "9.0"},
                          profile_for(spec).to_dict(), {}, {}))


# -- routes, profiles, trtexec --------------------------------------------------------------
@pytest.mark.parametrize("precision,major,weak,route", [
    ("fp32", 8, False, "fp32"), ("fp32", 11, False, "fp32"), ("fp32", None, False, "fp32"),
    ("fp16", 8, False, "weak"),      # 8.6 has no strong typing
    ("fp16", 9, False, "strong"),    # 9.x introduced STRONGLY_TYPED
    ("fp16", 10, False, "strong"), ("fp16", 10, True, "weak"), ("fp16", 11, False, "strong"),
    ("fp16", None, False, "strong"),  # no TensorRT: the ONNX-only FP16 artifact is the mixed graph
])
def test_precision_routes(precision, major, weak, route):
    plan = resolve_precision(precision, trt_major=major, weak_fp16=weak)
    assert plan.route == route
    assert plan.graph == ("fp16" if route == "strong" else "fp32")
    assert plan.of("trt") == precision and (plan.builder_flags(10) == ("FP16",)) == (route == "weak")


def test_weak_fp16_is_refused_on_tensorrt_11():
    with pytest.raises(BackendUnavailableError, match="TensorRT 11 removed BuilderFlag.FP16"):
        resolve_precision("fp16", trt_major=11, weak_fp16=True)


def test_io_fp16_needs_the_fp16_graph():
    assert resolve_precision("fp16", io_fp16=True, trt_major=10).io_dtype("onnx") == "float16"
    for kwargs in ({"requested": "fp32"}, {"requested": "fp16", "weak_fp16": True}):
        with pytest.raises(InputShapeError, match="--io-fp16 needs the FP16 graph"):
            resolve_precision(io_fp16=True, trt_major=10, **kwargs)


def test_profile_shapes_and_range_errors():
    p = profile_for(ExportSpec(model="svt_s", batch=BatchRange(1, 8, 32)))
    assert (p.min, p.opt, p.max) == ((1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224))
    p.check((32, 3, 224, 224))
    with pytest.raises(InputShapeError, match=r"batch 1\.\.32"):
        p.check((33, 3, 224, 224))
    with pytest.raises(InputShapeError, match=r"H 224\.\.224"):
        p.check((2, 3, 256, 224))
    dyn = profile_for(ExportSpec(model="svt_s", dynamic_hw=True))
    assert dyn.min[2:] == (112, 112) and dyn.max[2:] == (448, 448)
    with pytest.raises(InputShapeError, match="does not contain the export size"):
        profile_for(ExportSpec(model="svt_s", dynamic_hw=True), min_hw=(256, 256))
    assert Profile.from_dict(p.to_dict()) == p


def _cmd(major, route, cache=None, **kw):
    p = profile_for(ExportSpec(model="svt_s", batch=BatchRange(1, 8, 32)))
    plan = PrecisionPlan("fp32" if route == "fp32" else "fp16", route)
    return shlex.split(trtexec_command("svt_s_fp16.onnx", "svt_s_fp16.plan", p, TrtBuildOptions(**kw), major, plan,
                                       cache))


def test_trtexec_command_per_version():
    ten = _cmd(10, "strong", "/c/t.cache")
    assert ten[:3] == ["trtexec", "--onnx=svt_s_fp16.onnx", "--saveEngine=svt_s_fp16.plan"]
    assert "--minShapes=input:1x3x224x224" in ten and "--maxShapes=input:32x3x224x224" in ten
    assert "--stronglyTyped" in ten and "--noTF32" in ten and "--fp16" not in ten
    assert "--memPoolSize=workspace:4096" in ten and "--timingCacheFile=/c/t.cache" in ten
    eleven = _cmd(11, "strong", tf32=True, hw_compat="ampere+", version_compat=True)
    assert "--stronglyTyped" not in eleven and "--fp16" not in eleven and "--noTF32" not in eleven
    assert "--hardwareCompatibilityLevel=ampere+" in eleven and "--versionCompatible" in eleven
    eight = _cmd(8, "weak", opt_level=5)
    assert "--fp16" in eight and "--stronglyTyped" not in eight and "--builderOptimizationLevel=5" in eight
    with pytest.raises(BackendUnavailableError, match="removed BuilderFlag.FP16"):
        _cmd(11, "weak")


def test_build_options_validation():
    with pytest.raises(OptionError, match="opt-level"):
        TrtBuildOptions(opt_level=7)
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(OptionError, match="workspace"):
            TrtBuildOptions(workspace_gib=bad)


# -- refusing foreign engines ------------------------------------------------------------------
def _engine_manifest(version="10.13.0.35", cc="9.0", name="NVIDIA H100 80GB HBM3", **opts):
    return EngineInfo(version, {"name": name, "compute_capability": cc}, {},
                      {"hw_compat": "none", "version_compat": False, **opts}, {})


H100 = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}


def test_engine_from_same_version_and_gpu_is_accepted():
    assert check_engine_compat(_engine_manifest(), "10.13.0.35", H100) == []


def test_engine_from_other_tensorrt_version_is_refused():
    with pytest.raises(ArtifactError, match="built with TensorRT 10.13.0.35 but TensorRT 10.14.1.48 is installed"):
        check_engine_compat(_engine_manifest(), "10.14.1.48", H100)


def test_engine_from_other_gpu_architecture_is_refused():
    with pytest.raises(ArtifactError, match="compute capability 9.0 .* is 8.0; rebuild"):
        check_engine_compat(_engine_manifest(), "10.13.0.35", {"name": "NVIDIA A100", "compute_capability": "8.0"})


def test_compatible_builds_are_accepted_where_they_apply():
    """NVIDIA's rule (Version Compatibility, 10.16.1; Engine Compatibility, 11.1.0): a
    version-compatible plan runs on the same or a later release of its major, built with
    8.x on 9.x/10.x, built with 10.x on 11.x; never on an older runtime, never 8.x -> 11.x."""
    vc = _engine_manifest(version_compat=True)
    assert check_engine_compat(vc, "10.16.1.11", H100) == []
    assert check_engine_compat(vc, "11.4.0.106", H100) == []  # 10.x -> 11.x is supported
    with pytest.raises(ArtifactError, match=r"NVIDIA supports it on 10.x >= 10.13.0.35 or 11.x"):
        check_engine_compat(vc, "10.12.0.36", H100)
    vc86 = _engine_manifest(version="8.6.1.6", version_compat=True)
    assert check_engine_compat(vc86, "10.13.0.35", H100) == []
    assert check_engine_compat(vc86, "9.3.0.1", H100) == []
    with pytest.raises(ArtifactError, match="not on the installed 11.4.0.106"):
        check_engine_compat(vc86, "11.4.0.106", H100)
    with pytest.raises(ArtifactError, match="not on the installed 8.6.1.6"):
        check_engine_compat(_engine_manifest(version="11.1.0", version_compat=True), "8.6.1.6", H100)
    with pytest.raises(ArtifactError, match="not on the installed"):  # VC needs 8.6+ at both ends
        check_engine_compat(_engine_manifest(version="8.5.3.1", version_compat=True), "8.6.1.6", H100)
    hw = _engine_manifest(hw_compat="ampere+")
    assert check_engine_compat(hw, "10.13.0.35", {"name": "NVIDIA A10", "compute_capability": "8.6"}) == []
    with pytest.raises(ArtifactError, match="Ampere and newer"):
        check_engine_compat(hw, "10.13.0.35", {"name": "Tesla T4", "compute_capability": "7.5"})
    warn = check_engine_compat(_engine_manifest(), "10.13.0.35", {"name": "NVIDIA H200", "compute_capability": "9.0"})
    assert warn and "H200" in warn[0]


def test_manifest_without_build_facts_is_refused():
    with pytest.raises(ArtifactError, match="lacks the TensorRT version"):
        check_engine_compat(EngineInfo("", {}, {}, {}, {}), "10.13.0", H100)


# -- the CUDA layer without a GPU ------------------------------------------------------------
def test_cuda_layer_reports_missing_gpu_clearly():
    pytest.importorskip("cuda.bindings.runtime", reason="cuda-bindings not installed")
    from twins_deploy.engines.trt.cuda import CudaError, DeviceBuffer
    from twins_deploy.engines.trt.env import gpu_info

    if SKIP_GPU is None:
        pytest.skip("a GPU is present")
    with pytest.raises(BackendUnavailableError, match="no usable CUDA GPU: cudaGetDeviceCount failed with cuda"):
        gpu_info()
    with pytest.raises(CudaError, match=r"cudaMalloc\(1024\) failed with cuda"):
        DeviceBuffer(1024)


# -- on a machine with TensorRT and a GPU ------------------------------------------------------
@pytest.mark.skipif(SKIP_GPU is not None, reason=f"TensorRT engine tests need TensorRT and a GPU: {SKIP_GPU}")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_svt_s_engine_builds_runs_and_matches_pytorch(tmp_path, precision):
    out = tmp_path / "o"
    rc = export_main(["--model", "svt_s", "--fmt", "trt", "--precision", precision, "--out-dir", str(out),
                      "--min-batch", "1", "--opt-batch", "4", "--max-batch", "8", "--timing-cache", "none", "-q"])
    assert rc == 0
    plan = out / f"svt_s_{precision}.plan"
    manifest = json.loads((out / f"svt_s_{precision}.plan.json").read_text())
    assert plan.read_bytes()[:4] != b"{\"sc"  # a plain plan, no JSON header
    assert manifest["validation"]["passed"] and manifest["engine"]["tf32"] is False
    from twins_deploy.engines.opening import open_runner

    with open_runner(plan) as r:
        y = r.infer(np.zeros((3, 3, 224, 224), np.float32))
        assert y[0].shape == (3, 1000)
        with pytest.raises(InputShapeError, match=r"batch 1\.\.8"):
            r.infer(np.zeros((9, 3, 224, 224), np.float32))
    assert validate_main([str(plan), "-q"]) == 0
