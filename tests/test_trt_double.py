"""Every TensorRT code path, executed under each supported version's test double.

The doubles (tests/trt_doubles) carry NVIDIA's own API descriptions: TensorRT 8.6.1 and
11.1 binding sources, the 10.13 stubs, the real 11.4 lean runtime module, and the real
cuda-bindings signatures. An unknown name, an enum member the version lacks, a wrong
arity or keyword raises there as it would on a GPU. The fake GPU is asynchronous (work runs
when its stream is synchronized) and an execution computes the engine's outputs with ONNX
Runtime on the plan's ONNX file, so these tests check the numbers that come back and the
order things ran in; nothing they produce is a TensorRT result or a timing.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers_mutant import mutant as _mutant
from helpers_trt import LINES, doubles, line, link_file  # noqa: F401 (fixtures)
from trt_doubles import harness
from trt_doubles.fake_trt import PLAN_MAGIC, read_plan
from twins_deploy import ArtifactError, InputShapeError
from twins_deploy.cli.export import main as export_main
from twins_deploy.engines.trt.options import TrtBuildOptions, timing_cache_path
from twins_deploy.errors import BackendUnavailableError, ExportError, InputShapeError
from twins_deploy.precision import PrecisionPlan
from twins_deploy.manifest import read_manifest

RUNTIME_LINES = ["8.6", "11"]  # the oldest binding source and the real 11.4 runtime module
MODEL = ["--model", "svt_s", "--img-size", "64", "--min-batch", "1", "--opt-batch", "2", "--max-batch", "4"]


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    """The ONNX models the engines are built from, exported once (no TensorRT involved),
    copied into each test's output directory, where the pipeline reuses them."""
    made: dict[tuple, Path] = {}

    def get(precision: str, dynamic_hw: bool, out: Path) -> None:
        key = (precision, dynamic_hw)
        if precision == "weak":  # made by the first weak-route engine export, kept from there
            if key not in made:
                made[key] = tmp_path_factory.mktemp("weak")
                return
            if out.exists():  # after the export: keep its ONNX
                for f in out.glob("*.onnx*"):
                    link_file(f, made[key] / f.name)
                return
        elif key not in made:
            d = tmp_path_factory.mktemp("onnx")
            args = [*MODEL, "--fmt", "onnx", "--precision", precision, "--out-dir", str(d), "--no-validate", "-q"]
            assert export_main(args + (["--dynamic-hw"] if dynamic_hw else [])) == 0
            made[key] = d
        out.mkdir(parents=True, exist_ok=True)
        for f in made[key].iterdir():
            link_file(f, out / f.name)

    return get


def _export(doubles, onnx_cache, tmp_path, precision="fp32", *extra, dynamic_hw=False):
    out = tmp_path / "o"
    weak = "--weak-fp16" in extra or doubles.line == "8.6"
    key = precision if precision == "fp32" or not weak else "weak"
    fresh = key == "weak" and not list(out.glob("*.onnx"))
    onnx_cache(key, dynamic_hw, out)
    args = [*MODEL, "--fmt", "trt", "--precision", precision, "--out-dir", str(out), "--no-validate", "-q", *extra]
    rc = export_main(args + (["--dynamic-hw"] if dynamic_hw else []))
    if fresh and rc == 0:
        onnx_cache(key, dynamic_hw, out)
    return rc, out


# -- twins-export --fmt trt ------------------------------------------------------------------
def test_fp32_engine_end_to_end(doubles, onnx_cache, tmp_path, capsys):
    rc, out = _export(doubles, onnx_cache, tmp_path, "fp32")
    assert rc == 0, capsys.readouterr().err
    plan_file = out / "svt_s_fp32_64x64.plan"
    plan = read_plan(plan_file.read_bytes())
    m = read_manifest(plan_file)
    assert m.engine.trt_version == doubles.trt.__version__ and m.engine.gpu["name"] == doubles.device.name
    assert plan["version"] == doubles.trt.__version__
    # TF32 is on by default in TensorRT; an FP32 engine must have it cleared
    assert "TF32" not in plan["builder_flags"] and "FP16" not in plan["builder_flags"]
    assert plan["network_flags"] == (["EXPLICIT_BATCH"] if doubles.line == "8.6" else [])
    assert plan["memory_pools"] == {"WORKSPACE": 4 * 2**30} and plan["opt_level"] == 3
    assert plan["profiles"] == [{"input": [[1, 3, 64, 64], [2, 3, 64, 64], [4, 3, 64, 64]]}]
    assert plan["inputs"][0]["dtype"] == "FLOAT" and plan["outputs"][0]["shape"][1] == 1000
    assert m.engine.build["builder"] == "polygraphy" and m.engine.build["route"] == "fp32"
    assert m.sha256 and m.engine.trtexec.startswith("trtexec --onnx=svt_s_fp32_64x64.onnx")
    assert not list(out.glob("*.partial"))


def test_fp16_strongly_typed(doubles, onnx_cache, tmp_path):
    rc, out = _export(doubles, onnx_cache, tmp_path, "fp16")
    assert rc == 0
    plan = read_plan((out / "svt_s_fp16_64x64.plan").read_bytes())
    m = read_manifest(out / "svt_s_fp16_64x64.plan")
    if doubles.line == "8.6":  # no strong typing: the weak route is the only one
        assert m.plan.route == "weak" and "FP16" in plan["builder_flags"] and not plan["strongly_typed"]
    else:
        assert m.plan.route == "strong" and "FP16" not in plan["builder_flags"] and plan["strongly_typed"]
        # 10.x sets STRONGLY_TYPED; 11.x is strongly typed only and gets no flag
        assert plan["network_flags"] == (["STRONGLY_TYPED"] if doubles.line == "10" else [])
        assert "--stronglyTyped" in m.engine.trtexec if doubles.line == "10" else "--stronglyTyped" not in m.engine.trtexec


def test_weak_fp16_where_offered(doubles, onnx_cache, tmp_path, capsys):
    rc, out = _export(doubles, onnx_cache, tmp_path, "fp16", "--weak-fp16")
    if doubles.line == "11":
        assert rc == 3 and "TensorRT 11 removed BuilderFlag.FP16" in capsys.readouterr().err
        assert not (out / "svt_s_fp16_64x64.plan").exists()
        return
    assert rc == 0
    plan = read_plan((out / "svt_s_fp16_64x64.plan").read_bytes())
    assert "FP16" in plan["builder_flags"] and "STRONGLY_TYPED" not in plan["network_flags"]
    assert "--fp16" in read_manifest(out / "svt_s_fp16_64x64.plan").engine.trtexec


def test_dynamic_hw_profile(doubles, onnx_cache, tmp_path):
    rc, out = _export(doubles, onnx_cache, tmp_path, "fp32", "--min-hw", "32", "--max-hw", "96", dynamic_hw=True)
    assert rc == 0
    plan = read_plan((out / "svt_s_fp32_64x64_dynhw.plan").read_bytes())
    assert plan["profiles"] == [{"input": [[1, 3, 32, 32], [2, 3, 64, 64], [4, 3, 96, 96]]}]
    assert plan["inputs"][0]["shape"][2:] != [64, 64]  # symbolic H/W in the graph


@pytest.mark.parametrize("level, trt_name, trtexec_name", [("ampere+", "AMPERE_PLUS", "ampere+"),
                                                          ("same-cc", "SAME_COMPUTE_CAPABILITY", "sameComputeCapability")])
def test_compatible_builds(doubles, onnx_cache, tmp_path, capsys, level, trt_name, trtexec_name):
    offered = hasattr(doubles.trt.HardwareCompatibilityLevel, trt_name)  # the double raises for a missing member
    rc, out = _export(doubles, onnx_cache, tmp_path, "fp32", "--hw-compat", level, "--version-compat")
    if not offered:  # the line's bindings lack the level: refused, with its name
        assert rc == 3 and f"no hardware compatibility level {trt_name}" in capsys.readouterr().err
        return
    assert rc == 0
    plan = read_plan((out / "svt_s_fp32_64x64.plan").read_bytes())
    assert plan["hardware_compatibility_level"] == trt_name and "VERSION_COMPATIBLE" in plan["builder_flags"]
    line = read_manifest(out / "svt_s_fp32_64x64.plan").engine.trtexec
    assert f"--hardwareCompatibilityLevel={trtexec_name}" in line and "--versionCompatible" in line


def test_timing_cache_is_per_tensorrt_version_and_reused(doubles, onnx_cache, tmp_path):
    rc, out = _export(doubles, onnx_cache, tmp_path, "fp32")
    assert rc == 0
    info = read_manifest(out / "svt_s_fp32_64x64.plan").engine.build
    cache = Path(info["timing_cache"])
    assert cache.name == f"trt-{doubles.trt.__version__}-sm90.timing-cache" and cache.is_file()
    assert not info["timing_cache_loaded"]
    saved = json.loads(cache.read_bytes())
    assert saved["version"] == doubles.trt.__version__ and saved["entries"]
    rc, out = _export(doubles, onnx_cache, tmp_path, "fp32", "--force")
    assert rc == 0 and read_manifest(out / "svt_s_fp32_64x64.plan").engine.build["timing_cache_loaded"]
    loads = doubles.calls("IBuilderConfig.create_timing_cache")
    assert any(bytes(c["serialized_timing_cache"]) for c in loads)  # the saved cache was read back
    assert all(c["ignore_mismatch"] is False for c in doubles.calls("IBuilderConfig.set_timing_cache"))


@pytest.mark.parametrize("line", RUNTIME_LINES)
def test_timing_cache_none_and_explicit_path(doubles, onnx_cache, tmp_path):
    assert timing_cache_path(TrtBuildOptions(timing_cache=None), "10.13.0.35") is None
    assert timing_cache_path(TrtBuildOptions(timing_cache="/x/c"), "10.13.0.35") == Path("/x/c")
    rc, out = _export(doubles, onnx_cache, tmp_path, "fp32", "--timing-cache", "none")
    assert rc == 0
    assert read_manifest(out / "svt_s_fp32_64x64.plan").engine.build["timing_cache"] is None
    assert not doubles.calls("ITimingCache.combine")


@pytest.mark.parametrize("line", RUNTIME_LINES)
def test_parser_failure_is_one_clear_error(doubles, onnx_cache, tmp_path, capsys, monkeypatch):
    from trt_doubles.fake_trt import OnnxParserB

    monkeypatch.setattr(OnnxParserB, "_parse", lambda self, model, path: self._fail("Unsupported operator Foo"))
    rc, out = _export(doubles, onnx_cache, tmp_path, "fp32")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[0].startswith("error: ") and "could not build svt_s_fp32_64x64.onnx" in err[0]
    assert any("Unsupported operator Foo" in e for e in err)
    assert not (out / "svt_s_fp32_64x64.plan").exists() and not list(out.glob("*.partial"))


def test_build_failure_quotes_tensorrt(doubles, tmp_path):
    from trt_doubles.fake_trt import BuilderB
    from twins_deploy.engines.trt.build import build_engine
    from twins_deploy.engines.trt.profile import Profile

    onnx = tmp_path / "m.onnx"
    _tiny_onnx(onnx)
    shapes = Profile("input", (1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 8, 8))
    data, info = build_engine(onnx, shapes, TrtBuildOptions(timing_cache=None), PrecisionPlan())
    assert data.startswith(PLAN_MAGIC) and info.trt_version == doubles.trt.__version__
    BuilderB.build_serialized_network, real = (lambda self, network, config, *e: None), BuilderB.build_serialized_network
    try:
        with pytest.raises(ExportError, match="could not build m.onnx"):
            build_engine(onnx, shapes, TrtBuildOptions(timing_cache=None), PrecisionPlan())
    finally:
        BuilderB.build_serialized_network = real
    with pytest.raises(InputShapeError, match="precision must be one of"):  # the plan is typed: no 'int4' reaches TensorRT
        build_engine(onnx, shapes, TrtBuildOptions(timing_cache=None), PrecisionPlan("int4", "fp32"))


def _tiny_onnx(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "g",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 8, 8])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_chain_is_lazy_and_checked_on_cpu(doubles, tmp_path):
    """Constructing the Polygraphy chain calls no TensorRT; calling it does."""
    from twins_deploy.engines.trt.build import engine_loader
    from twins_deploy.engines.trt.profile import Profile

    before = len(doubles.trt.calls)
    build, info = engine_loader(tmp_path / "m.onnx", Profile("input", (1, 3, 8, 8), (1, 3, 8, 8), (2, 3, 8, 8)),
                                TrtBuildOptions(timing_cache=None),
                                PrecisionPlan("fp16", "strong" if doubles.line != "8.6" else "weak"),
                                doubles.trt, None)
    assert len(doubles.trt.calls) == before and callable(build)
    assert info.route in ("strong", "weak")


def test_hw_compat_level_missing_is_refused(doubles, tmp_path, monkeypatch):
    from twins_deploy.engines.trt.build import engine_loader
    from twins_deploy.engines.trt.profile import Profile

    monkeypatch.setattr(doubles.trt, "HardwareCompatibilityLevel", type("H", (), {}))
    with pytest.raises(BackendUnavailableError, match="no hardware compatibility level AMPERE_PLUS"):
        engine_loader("m.onnx", Profile("input", (1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 8, 8)),
                      TrtBuildOptions(hw_compat="ampere+"), PrecisionPlan(), doubles.trt, None)


# -- the runner --------------------------------------------------------------------------------
@pytest.fixture
def engine(doubles, onnx_cache, tmp_path):
    rc, out = _export(doubles, onnx_cache, tmp_path, "fp32")
    assert rc == 0
    return out / "svt_s_fp32_64x64.plan"


@pytest.mark.parametrize("line", RUNTIME_LINES)
def test_runner_infer_numpy(doubles, engine):
    from twins_deploy.engines.opening import open_runner

    with open_runner(engine) as r:
        y = r.infer(np.ones((3, 3, 64, 64), np.float32))
        assert [o.shape for o in y] == [(3, 1000)] and y[0].dtype == np.float32
        launch = doubles.device.launches[-1]
        assert launch["shapes"] == {"input": (3, 3, 64, 64), "logits": (3, 1000)}
        assert all(addr % 256 == 0 for addr, _ in launch["addresses"].values())
        copies = [c["kind"] for c in doubles.device.copies]
        assert copies[-2:] == ["cudaMemcpyHostToDevice", "cudaMemcpyDeviceToHost"]
        with pytest.raises(InputShapeError, match=r"batch 1\.\.4"):
            r.infer(np.zeros((5, 3, 64, 64), np.float32))
        assert r.describe()["cuda_graph"] is False
    assert not doubles.device.memory and not doubles.device.streams  # everything freed
    assert doubles.calls("Runtime.engine_host_code_allowed=") == []  # only version-compatible plans run host code


@pytest.mark.parametrize("line", RUNTIME_LINES)
def test_runner_refuses_a_shape_tensorrt_refuses(doubles, engine, monkeypatch):
    from trt_doubles.fake_trt import IExecutionContextB
    from twins_deploy.engines.opening import open_runner

    monkeypatch.setattr(IExecutionContextB, "set_input_shape", lambda self, name, shape: False)
    with open_runner(engine) as r, pytest.raises(InputShapeError, match="TensorRT refused input shape"):
        r.infer(np.zeros((2, 3, 64, 64), np.float32))


@pytest.mark.parametrize("line", RUNTIME_LINES)
def test_plan_sha256_checked_on_load(doubles, engine):
    from twins_deploy.engines.opening import open_runner

    data = bytearray(engine.read_bytes())
    data[-2] ^= 1
    engine.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256 differs"):
        open_runner(engine)


@pytest.mark.parametrize("line", RUNTIME_LINES)
def test_foreign_plan_is_refused_before_tensorrt_sees_it(doubles, engine, monkeypatch):
    from twins_deploy.engines.opening import open_runner

    monkeypatch.setattr(doubles.trt, "__version__", "7.2.3")
    with pytest.raises(ArtifactError, match="built with TensorRT"):
        open_runner(engine).activate()
    assert not doubles.calls("Runtime.deserialize_cuda_engine")


@pytest.mark.parametrize("line", RUNTIME_LINES)
def test_bench_loop_with_cuda_graph_and_rebind(doubles, engine):
    from twins_deploy.engines.opening import open_runner

    r = open_runner(engine, use_cuda_graph=True)
    with r:
        r.prepare(np.ones((2, 3, 64, 64), np.float32))
        assert r.describe()["cuda_graph"] is True and "cuda_graph_fallback" not in r.describe()
        r.step()
        assert doubles.device.launches[-1]["replayed"] == 1
        # a larger batch reallocates the buffers: the graph must not replay onto freed memory
        r.infer(np.ones((4, 3, 64, 64), np.float32))
        assert r.describe()["cuda_graph"] is False
        r.step()  # plain launch on the current bindings
        assert "graph" not in doubles.device.launches[-1]
        r.prepare(np.ones((4, 3, 64, 64), np.float32))
        r.step()
        assert doubles.device.launches[-1]["replayed"] == 1


@pytest.mark.parametrize("line", RUNTIME_LINES)
def test_failed_capture_falls_back_and_says_so(doubles, engine):
    from twins_deploy.engines.opening import open_runner

    doubles.device.capturable = False
    with open_runner(engine, use_cuda_graph=True) as r:
        r.prepare(np.ones((2, 3, 64, 64), np.float32))
        info = r.describe()
        assert info["cuda_graph"] is False and "returned False during capture" in info["cuda_graph_fallback"]
        r.step()
        assert "graph" not in doubles.device.launches[-1] and not doubles.device.captures


@pytest.mark.parametrize("line", RUNTIME_LINES)
def test_include_copies_uses_pinned_host_memory(doubles, engine):
    from twins_deploy.engines.opening import open_runner

    with open_runner(engine, use_cuda_graph=True) as r:
        r.prepare(np.ones((2, 3, 64, 64), np.float32), include_copies=True)
        n = len(doubles.device.copies)
        r.step()
        step_copies = doubles.device.copies[n:]
        assert [c["kind"] for c in step_copies] == ["cudaMemcpyHostToDevice", "cudaMemcpyDeviceToHost"]
        assert all(c["pinned"] for c in step_copies)
        assert len(doubles.device.pinned) == 2
    assert not doubles.device.pinned  # freed with the runner


def test_version_compatible_plan_loads_with_host_code_allowed(doubles, onnx_cache, tmp_path):
    from twins_deploy.engines.opening import open_runner

    rc, out = _export(doubles, onnx_cache, tmp_path, "fp32", "--version-compat")
    assert rc == 0
    with open_runner(out / "svt_s_fp32_64x64.plan") as r:
        r.infer(np.ones((1, 3, 64, 64), np.float32))
    assert doubles.calls("Runtime.engine_host_code_allowed=") == [{"value": True}]


# -- torch CUDA tensors in and out (zero-copy) --------------------------------------------------
@pytest.fixture
def torch_cuda(doubles, monkeypatch):
    from trt_doubles import fake_torch_cuda

    fake_torch_cuda.install(monkeypatch, doubles.device)
    return fake_torch_cuda


@pytest.mark.parametrize("line", RUNTIME_LINES)
def test_infer_torch_binds_the_callers_tensors_and_lets_go_of_them(doubles, engine, torch_cuda):
    import torch

    from twins_deploy.engines.opening import open_runner

    with open_runner(engine) as r:
        r.infer(np.ones((2, 3, 64, 64), np.float32))  # the runner's own buffers, bound first
        own = r.context.get_tensor_address("input")
        x = torch_cuda.CudaTensor(doubles.device, (3, 3, 64, 64), torch.float16)  # converted to the engine's FP32
        (y,) = r.infer_torch(x)
        launch = doubles.device.launches[-1]
        assert tuple(y.shape) == (3, 1000) and y.dtype == torch.float32 and y.is_cuda
        assert launch["shapes"] == {"input": (3, 3, 64, 64), "logits": (3, 1000)}
        assert launch["addresses"]["logits"][0] == y.data_ptr()
        assert launch["addresses"]["input"][0] not in (x.data_ptr(), own)  # the FP32 copy of x
        assert launch["stream"] in doubles.device.torch_streams
        # TensorRT's stream waits for the work that made x, the caller's stream waits for the
        # outputs, and x is kept until TensorRT has read it
        caller = torch.cuda.current_stream().cuda_stream
        assert [e for e in torch_cuda.ORDER if launch["stream"] in e[1:]] == [
            ("wait", launch["stream"], caller), ("wait", caller, launch["stream"]), ("sync", launch["stream"], None)]
        # afterwards the context no longer points at the caller's tensors
        assert r.context.get_tensor_address("input") == own
        assert r.context.get_tensor_address("logits") != y.data_ptr()


@pytest.mark.parametrize("line", RUNTIME_LINES)
def test_infer_torch_refuses_what_it_cannot_run(doubles, engine, torch_cuda, monkeypatch):
    import torch

    from trt_doubles.fake_trt import IExecutionContextB
    from twins_deploy.engines.opening import open_runner

    with open_runner(engine) as r:
        with pytest.raises(InputShapeError, match="needs a CUDA tensor on GPU 0"):
            r.infer_torch(torch.zeros(1, 3, 64, 64))
        with pytest.raises(InputShapeError, match="got one on cuda:1"):
            r.infer_torch(torch_cuda.CudaTensor(doubles.device, (1, 3, 64, 64), index=1))
        with pytest.raises(InputShapeError, match=r"batch 1\.\.4"):
            r.infer_torch(torch_cuda.CudaTensor(doubles.device, (5, 3, 64, 64)))
        monkeypatch.setattr(IExecutionContextB, "set_input_shape", lambda self, name, shape: False)
        with pytest.raises(InputShapeError, match="TensorRT refused input shape"):
            r.infer_torch(torch_cuda.CudaTensor(doubles.device, (2, 3, 64, 64)))
    assert not doubles.device.launches


# -- twins-bench with the TensorRT backends ----------------------------------------------------
@pytest.fixture(scope="module")
def bench_onnx(tmp_path_factory):
    """The ONNX models twins-bench makes for svt_s at 64x64 to build its engines from (no
    TensorRT involved): one engine per measured batch N, so for batch 1 and 4 the FP32 and FP16
    graphs of batch 1..N, each in the cache folder of its batch (``b<N>/``). onnxslim (most of an
    export's time, and not part of the reuse check) is left out."""
    from helpers_export import bench_engine_onnx

    cache = tmp_path_factory.mktemp("bench_cache")
    bench_engine_onnx(cache, ("fp32", "fp16"))  # the FP16 graph is the one the strong route builds from
    return cache


@pytest.mark.parametrize("line", ["10"])
@pytest.mark.parametrize("flags", [[], ["--cuda-graphs"], ["--cuda-graphs", "--include-copies"]],
                         ids=["plain", "cuda-graphs", "graphs+copies"])
def test_bench_runs_the_tensorrt_backends(doubles, torch_cuda, bench_onnx, tmp_path, flags):
    """The whole benchmark path: the pipeline builds (or reuses) both engines, the runner is
    timed with CUDA events; the doubles measure nothing, so every rate is empty (NaN)."""
    from twins_deploy.cli.bench import main as bench_main

    out = tmp_path / "bench"
    onnx = [f for f in bench_onnx.rglob("*") if f.is_file()]
    for f in onnx:  # the pipeline reuses these ONNX models from the cache
        (out / ".artifacts" / f.relative_to(bench_onnx)).parent.mkdir(parents=True, exist_ok=True)
        link_file(f, out / ".artifacts" / f.relative_to(bench_onnx))
    rc = bench_main(["--model", "svt_s", "--backends", "trt-fp32,trt-fp16", "--batch", "1,4", "--img-size", "64",
                     "--min-iters", "3", "--min-time", "0", "--warmup", "1", "--warmup-time", "0", "--out", str(out),
                     "--name", "t", "-q", *flags])
    assert rc == 0
    rows = json.loads((out / "t.json").read_text())["rows"]
    assert [(r["backend"], r["infer_batch_size"], r["status"]) for r in rows] == \
        [("trt-fp32", 1, "ok"), ("trt-fp32", 4, "ok"), ("trt-fp16", 1, "ok"), ("trt-fp16", 4, "ok")]
    assert all(r["infer_samples_per_sec"] is None and r["iterations"] >= 3 for r in rows)  # nothing measured
    graphs = "--cuda-graphs" in flags and "--include-copies" not in flags  # copies are timed as plain launches
    assert {r["runner"]["cuda_graph"] for r in rows} == {graphs}
    cache = out / ".artifacts"  # one engine per measured batch, in its batch's folder, profile 1 / N / N
    plans = {(p, b): cache / f"b{b}" / f"svt_s_{p}_64x64{'_b1' if b == 1 else ''}.plan"
             for p in ("fp32", "fp16") for b in (1, 4)}
    assert sorted(cache.rglob("*.plan")) == sorted(plans.values())
    for (_, b), plan in plans.items():
        profile = read_manifest(plan).engine.profile
        assert (profile["min"], profile["opt"], profile["max"]) == ([1, 3, 64, 64], [b, 3, 64, 64], [b, 3, 64, 64])
    assert [Path(r["runner"]["path"]) for r in rows] == [plans[p, b] for p in ("fp32", "fp16") for b in (1, 4)]
    assert all((cache / f.relative_to(bench_onnx)).samefile(f) for f in onnx)  # built from the ONNX made once
    replays = [launch for launch in doubles.device.launches if launch.get("replayed")]
    assert bool(replays) == graphs
    if "--include-copies" in flags:
        assert doubles.device.copies and all(c["pinned"] for c in doubles.device.copies[-2:])


# -- what the runner refuses before it runs ------------------------------------------------------
@pytest.mark.parametrize("line", ["10", "11"])
def test_runner_preflight_refuses_a_gpu_the_line_does_not_support(doubles, engine):
    """A plan copied onto a V100 (SM 7.0): TensorRT >= 10.5 no longer runs there; the runner
    says so before deserializing, not with a foreign-engine message."""
    from twins_deploy.engines.opening import open_runner

    doubles.device.compute_capability = (7, 0)
    with pytest.raises(BackendUnavailableError, match=r"compute capability 7\.5 and newer.*is 7\.0"):
        open_runner(engine).activate()
    assert not doubles.calls("Runtime.deserialize_cuda_engine")


@pytest.mark.parametrize("line", RUNTIME_LINES)
def test_runner_checks_the_execution_context(doubles, engine, monkeypatch):
    from trt_doubles.fake_trt import ICudaEngineB
    from twins_deploy.engines.opening import open_runner

    monkeypatch.setattr(ICudaEngineB, "create_execution_context", lambda self, *a, **k: None)
    with pytest.raises(ArtifactError, match="could not create an execution context"):
        open_runner(engine).activate()


@pytest.mark.parametrize("line", ["10", "11"])
def test_runner_refuses_io_it_cannot_feed_by_name(doubles, engine, monkeypatch):
    from trt_doubles.fake_trt import ICudaEngineB, _enum
    from twins_deploy.engines.opening import open_runner

    monkeypatch.setattr(ICudaEngineB, "get_tensor_dtype", lambda self, name: _enum(self.mod, "DataType").BF16)
    with pytest.raises(ArtifactError, match=r"tensor 'input' is BF16.*FP32 or FP16 I/O only"):
        open_runner(engine).activate()


# -- the asynchronous device: results, ordering, and the mistakes it must show ---------------------
def _onnx_reference(engine: Path, x: np.ndarray) -> np.ndarray:
    """What the double's execution computes (ONNX Runtime on the engine's ONNX file)."""
    from trt_doubles.fake_trt import onnx_session

    plan = read_plan(engine.read_bytes())
    return onnx_session(plan["onnx"]).run(None, {"input": x})[0]


def _check_infer(runner, engine: Path, batch: int = 2) -> None:
    """infer() returns the execution's outputs for *this* input (a fresh random one, so a
    stale buffer from an earlier call cannot pass)."""
    x = np.random.default_rng().standard_normal((batch, 3, 64, 64)).astype(np.float32)
    (y,) = runner.infer(x)
    np.testing.assert_allclose(y, _onnx_reference(engine, x), rtol=1e-5, atol=1e-5)


def _check_timing_path(runner, engine: Path) -> None:
    """prepare() captures a graph (after one plain run), and a replay computes this input's
    outputs. Batch 4: a shape no earlier call ran, so TensorRT's per-shape set-up is due."""
    from twins_deploy.engines.trt.cuda import copy_dtoh

    x = np.random.default_rng().standard_normal((4, 3, 64, 64)).astype(np.float32)
    runner.prepare(x)
    info = runner.describe()
    assert info["cuda_graph"] is True, info.get("cuda_graph_fallback")
    out = runner._buffers["logits"]  # the buffer the graph writes
    host = np.full((4, 1000), np.nan, np.float32)
    runner.step()
    copy_dtoh(host, out, runner.stream)
    runner.sync()
    np.testing.assert_allclose(host, _onnx_reference(engine, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("line", LINES)
def test_runner_returns_the_executions_outputs(doubles, engine):
    """Copies in, execution, copies out and the synchronize, in that order, on each line's
    runtime: the numbers are the execution's (ONNX Runtime's, never TensorRT's)."""
    from twins_deploy.engines.opening import open_runner

    with open_runner(engine, use_cuda_graph=True) as r:
        _check_infer(r, engine, 2)
        _check_infer(r, engine, 3)  # rebinds larger buffers
        _check_timing_path(r, engine)
    order = [w for w in doubles.device.completed if w != "wait"]
    assert order[:3] == ["cudaMemcpyHostToDevice", "execute", "cudaMemcpyDeviceToHost"]
    assert "graph:execute" in order
    assert not any(doubles.device.queues.values()) and not doubles.device.dropped  # nothing left undone


# Each plant is a real edit of the runner's source: (old text, new text, the failure it must
# cause). The old text must still be there: if the code moves, the plant is updated, never
# dropped. The checks above must fail on every one.
PLANTS = {
    "output copy before execute": (
        "        self._execute()\n        outs = [np.empty(shapes[n], dtype=self.np_dtype[n]) for n in self.output_names]\n"
        "        for name, arr in zip(self.output_names, outs):\n            copy_dtoh(arr, self._buffers[name], self.stream)\n",
        "        outs = [np.empty(shapes[n], dtype=self.np_dtype[n]) for n in self.output_names]\n"
        "        for name, arr in zip(self.output_names, outs):\n            copy_dtoh(arr, self._buffers[name], self.stream)\n"
        "        self._execute()\n", "Not equal to tolerance"),
    "missing synchronize": (
        "        self.stream.synchronize()\n        return [o.astype(np.float32, copy=False) for o in outs]\n",
        "        return [o.astype(np.float32, copy=False) for o in outs]\n", "Not equal to tolerance"),
    "missing warm-up before capture": (
        "        self._execute()  # first run outside any capture: TensorRT's lazy initialisation\n"
        "        self.stream.synchronize()\n", "        self.stream.synchronize()\n",
        "returned False during capture"),
    "wrong profile index": (
        "engine.get_tensor_profile_shape(self.input_name, 0)", "engine.get_tensor_profile_shape(self.input_name, 1)",
        "plan's profile for 'input' is missing"),
}


def _planted(monkeypatch, name: str) -> None:
    """Replace TrtRunner's methods with those of its source with plant ``name`` applied."""
    import twins_deploy.engines.runners.trt as module

    old, new, _ = PLANTS[name]
    ns = _mutant(module, old, new)
    changed = [attr for attr, value in vars(ns["TrtRunner"]).items() if callable(value) and not attr.startswith("__")
               and _code(value) != _code(vars(module.TrtRunner)[attr])]
    assert changed, f"plant {name!r} changed no method"
    for attr in changed:  # only the planted methods (the others may use super(), bound to the real class)
        monkeypatch.setattr(module.TrtRunner, attr, vars(ns["TrtRunner"])[attr])


def _code(fn) -> tuple:
    return fn.__code__.co_code, fn.__code__.co_consts


@pytest.mark.parametrize("line", ["11"])
@pytest.mark.parametrize("plant", list(PLANTS))
def test_planted_ordering_mistakes_fail_the_checks(doubles, engine, monkeypatch, plant):
    from twins_deploy.engines.opening import open_runner

    _planted(monkeypatch, plant)
    with pytest.raises((AssertionError, ArtifactError), match=PLANTS[plant][2]):
        with open_runner(engine, use_cuda_graph=True) as r:
            _check_infer(r, engine)
            _check_timing_path(r, engine)


@pytest.mark.parametrize("line", ["10"])
def test_events_read_before_completion_raise(doubles, torch_cuda, engine, monkeypatch):
    """The benchmark's event timing reads only completed events: without the final
    synchronize, elapsed_time fails as torch's does ("device not ready")."""
    from twins_deploy.bench import timing
    from twins_deploy.engines.opening import open_runner

    x = np.ones((2, 3, 64, 64), np.float32)
    with open_runner(engine) as r:
        t = timing.time_runner(r, x, warmup=1, warmup_s=0, min_iters=3, min_time_s=0)
        assert t.iterations == 3 and all(np.isnan(t.latency_ms))  # the doubles time nothing
        ns = _mutant(timing, "    last.synchronize()\n", "")
        with pytest.raises(RuntimeError, match="device not ready"):
            ns["time_runner"](r, x, warmup=1, warmup_s=0, min_iters=3, min_time_s=0)


@pytest.mark.parametrize("line", ["10"])
def test_a_plan_built_for_another_gpu_or_version_is_refused(doubles, engine, monkeypatch):
    """Built on SM 9.0 with 10.13, opened on SM 8.6 or under 10.14: the manifest check says
    so first; without it (planted out), TensorRT's runtime refuses the plan itself."""
    import twins_deploy.engines.runners.trt as module
    from twins_deploy.engines.opening import open_runner

    doubles.device.compute_capability = (8, 6)
    with pytest.raises(ArtifactError, match="compute capability|GPU"):
        open_runner(engine).activate()
    monkeypatch.setattr(module, "check_engine_compat", lambda *a, **k: [])
    with pytest.raises(ArtifactError, match="could not deserialize"):
        open_runner(engine).activate()
    doubles.device.compute_capability = (9, 0)
    with open_runner(engine) as r:  # the same plan on its own GPU and version loads
        assert r.engine is not None
    monkeypatch.setattr(doubles.trt, "__version__", "10.14.1.48")
    with pytest.raises(ArtifactError, match="could not deserialize"):
        open_runner(engine).activate()


# -- what the builder and the parser refuse, per line ------------------------------------------
def _gelu_onnx(path: Path, opset: int, domain: str = "") -> None:
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Gelu", ["input"], ["logits"], domain=domain)], "g",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 8, 8])])
    ops = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    onnx.save(helper.make_model(g, opset_imports=ops), path)


def test_parser_refuses_what_the_line_lacks(doubles, tmp_path):
    """Gelu is an opset-20 op: 8.6's parser stops at opset 17; 10.x and 11.x import it.
    A custom-domain op needs a plugin on every line."""
    from twins_deploy.engines.trt.build import build_engine
    from twins_deploy.engines.trt.profile import Profile

    shapes = Profile("input", (1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 8, 8))
    _gelu_onnx(tmp_path / "gelu.onnx", 20)
    if doubles.line == "8.6":
        with pytest.raises(ExportError, match="opset 20"):
            build_engine(tmp_path / "gelu.onnx", shapes, TrtBuildOptions(timing_cache=None), PrecisionPlan())
    else:
        data, _ = build_engine(tmp_path / "gelu.onnx", shapes, TrtBuildOptions(timing_cache=None), PrecisionPlan())
        assert read_plan(data)["onnx"] == str((tmp_path / "gelu.onnx").resolve())
    _gelu_onnx(tmp_path / "custom.onnx", 17, domain="com.example")
    with pytest.raises(ExportError, match="No importer registered for op: Gelu"):
        build_engine(tmp_path / "custom.onnx", shapes, TrtBuildOptions(timing_cache=None), PrecisionPlan())


@pytest.mark.parametrize("line, cc, ok", [("8.6", (10, 0), False), ("8.6", (7, 0), True), ("10", (7, 0), False),
                                          ("10", (12, 0), True), ("11", (7, 0), False), ("11", (7, 5), True)])
def test_builder_refuses_a_gpu_the_line_does_not_support(doubles, tmp_path, cc, ok):
    """Below the preflight (which says it first): the builder itself refuses, as TensorRT's does."""
    from twins_deploy.engines.trt.build import build_engine
    from twins_deploy.engines.trt.profile import Profile

    doubles.device.compute_capability = cc
    _tiny_onnx(tmp_path / "m.onnx")
    shapes = Profile("input", (1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 8, 8))
    if ok:
        data, _ = build_engine(tmp_path / "m.onnx", shapes, TrtBuildOptions(timing_cache=None), PrecisionPlan())
        assert read_plan(data)["compute_capability"] == list(cc)
    else:
        with pytest.raises(ExportError, match=f"Unsupported SM: 0x{cc[0]}{cc[1]}"):
            build_engine(tmp_path / "m.onnx", shapes, TrtBuildOptions(timing_cache=None), PrecisionPlan())


@pytest.mark.parametrize("line", ["8.6", "11"])
def test_serialized_plans_are_buffers_not_bytes(doubles, tmp_path):
    """IHostMemory has the buffer protocol only: len() or slicing it is a TypeError on a GPU."""
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath

    _tiny_onnx(tmp_path / "m.onnx")
    network = NetworkFromOnnxPath(str(tmp_path / "m.onnx"), strongly_typed=doubles.line != "8.6")
    plan = EngineBytesFromNetwork(network, config=CreateConfig())()
    assert type(plan).__name__ == "IHostMemory" and plan and plan.nbytes == len(bytes(plan))
    assert bytes(memoryview(plan)).startswith(PLAN_MAGIC)
    for misuse in (len, lambda p: p[:4], list, lambda p: b"x" + p):
        with pytest.raises(TypeError):
            misuse(plan)


# -- the default path: build, then validate against PyTorch, on every line ------------------------
@pytest.fixture(scope="module")
def validated_onnx(tmp_path_factory):
    """The ONNX an engine export reuses only when it was validated: made once per graph."""
    made: dict[tuple, Path] = {}

    def get(precision: str, io: list[str], out: Path) -> None:
        key = (precision, tuple(io))
        if key not in made:
            made[key] = tmp_path_factory.mktemp("validated")
            assert export_main([*MODEL, "--fmt", "onnx", "--precision", precision, "--out-dir", str(made[key]),
                                "-q", *io]) == 0
        out.mkdir(parents=True, exist_ok=True)
        for f in made[key].iterdir():
            link_file(f, out / f.name)

    return get


@pytest.mark.parametrize("precision, io", [("fp32", []), ("fp16", ["--io-fp16"])], ids=["fp32", "fp16-io-fp16"])
def test_default_export_builds_then_validates(doubles, validated_onnx, tmp_path, capsys, precision, io):
    """``twins-export --fmt trt`` as a user runs it (no --no-validate): the engine is built,
    opened with the TensorRT runner on this line's runtime, and compared with PyTorch. With
    --io-fp16 the engine's I/O is FP16 (8.6 has no strongly typed FP16 graph: refused)."""
    out = tmp_path / "o"
    if doubles.line != "8.6" or not io:
        validated_onnx(precision, io, out)
    rc = export_main([*MODEL, "--fmt", "trt", "--precision", precision, "--out-dir", str(out), "-q", *io])
    err = capsys.readouterr().err
    if io and doubles.line == "8.6":
        assert rc != 0 and "--io-fp16" in err
        return
    assert rc == 0, err
    plan_file = out / f"svt_s_{precision}_64x64{'_iofp16' if io else ''}.plan"
    m, plan = read_manifest(plan_file), read_plan(plan_file.read_bytes())
    v = m.validation
    assert v["passed"] and v["candidate"] == f"trt-{precision}" and v["candidate_info"]["device"] == "cuda"
    assert v["reference"].startswith("torch-fp32")
    assert {s["case"] for s in v["stats"]} >= {"random b=1 64x64", "random b=4 64x64"}  # the profile's ends
    assert {t["dtype"] for t in plan["inputs"] + plan["outputs"]} == {"HALF" if io else "FLOAT"}
    if precision == "fp32":
        assert max(s["max_abs"] for s in v["stats"]) <= v["thresholds"]["atol"]


@pytest.mark.parametrize("line", ["10"])
def test_default_export_refuses_an_engine_whose_numbers_are_wrong(doubles, validated_onnx, tmp_path, capsys,
                                                                  monkeypatch):
    """The validation judges what the engine computed: an execution with a wrong result
    (here the logits' sign flipped) fails the export (exit 1); the plan stays, marked failed, as
    docs/validation.md says, so it is never reused as a good one."""
    from trt_doubles.fake_trt import ICudaEngineB

    real = ICudaEngineB.compute

    def flipped(self, io):
        real(self, io)
        addr, shape, _ = io["logits"]
        nbytes = int(np.prod(shape)) * 4
        self.mod._device.write(addr, (-np.frombuffer(self.mod._device.read(addr, nbytes), np.float32)).tobytes())

    monkeypatch.setattr(ICudaEngineB, "compute", flipped)
    out = tmp_path / "o"
    validated_onnx("fp32", [], out)
    rc = export_main([*MODEL, "--fmt", "trt", "--precision", "fp32", "--out-dir", str(out), "-q"])
    assert rc == 1 and "svt_s_fp32_64x64.plan failed validation" in capsys.readouterr().err
    assert read_manifest(out / "svt_s_fp32_64x64.plan").passed is False and not list(out.glob("*.partial"))
