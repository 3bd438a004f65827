"""twins-bench on the TensorRT routes, under the test doubles: one engine per measured batch,
its profile tuned for that batch (as trtexec --shapes), each batch validated and timed on its
own engine; a TensorRT backend that fails, or cannot run here, is its rows' result and the
other rows are measured. The doubles time nothing (an engine's outputs are computed by ONNX
Runtime on its ONNX): these tests assert which engine was built for what and which one ran,
and what the run wrote and said, never timings."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from trt_doubles import harness
from trt_doubles.fake_device import FakeDevice
from trt_doubles.fake_trt import read_plan
from twins_deploy.cli.bench import main as bench_main
from twins_deploy.manifest import read_manifest

FAST = ["--min-iters", "2", "--min-time", "0", "--warmup", "0", "--warmup-time", "0", "-q"]


@pytest.fixture
def doubles(monkeypatch, tmp_path):
    """TensorRT 10's double with torch.cuda over the same fake GPU (what twins-bench's CUDA
    timing touches); the timing cache under the test's folder."""
    from trt_doubles import fake_torch_cuda

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    d = harness.install(monkeypatch, "10")
    fake_torch_cuda.install(monkeypatch, d.device)
    return d


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory):
    """The FP32 ONNX models a run of svt_s at 64x64, batch 1 and 4, builds its engines from
    (``b1/``, ``b4/``: batch 1..N) and runs in ONNX Runtime (batch 1..4, the cache's top
    folder), exported once (no TensorRT involved; onnxslim, most of an export's time and not
    part of the reuse check, left out)."""
    from helpers_export import bench_engine_onnx

    cache = tmp_path_factory.mktemp("onnx")
    b4 = bench_engine_onnx(cache, ("fp32",))  # batch 1..4: also what a route not tuned per batch runs
    for f in (b4, b4.with_name(b4.name + ".json")):
        os.link(f, cache / f.name)
    return cache


def _cache(onnx: Path, out: Path) -> None:
    """``onnx``'s files linked into ``out``'s artifacts cache, where the pipeline reuses them."""
    for f in (f for f in onnx.rglob("*") if f.is_file()):
        dst = out / ".artifacts" / f.relative_to(onnx)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.link(f, dst)


def test_each_batch_is_validated_and_timed_on_an_engine_tuned_for_it(doubles, fp32_onnx, tmp_path, monkeypatch):
    import twins_deploy.bench.harness as bench_harness

    timed: list = []

    def time_runner(runner, x, **kw):
        timed.append((Path(runner.path), len(x)))
        return real_time_runner(runner, x, **kw)

    real_time_runner = bench_harness.time_runner
    monkeypatch.setattr(bench_harness, "time_runner", time_runner)
    out = tmp_path / "bench"
    _cache(fp32_onnx, out)  # each batch's engine is built from an export of its own, made once here
    rc = bench_main(["--model", "svt_s", "--backends", "trt-fp32", "--batch", "1,4", "--img-size", "64", "--validate",
                     "--out", str(out), "--name", "t", *FAST])
    assert rc == 0
    res = json.loads((out / "t.json").read_text())
    rows = res["rows"]
    assert [(r["infer_batch_size"], r["status"]) for r in rows] == [(1, "ok"), (4, "ok")]
    assert res["complete"] is True and all(r["validation"]["passed"] for r in rows)
    cache = out / ".artifacts"
    plans = {1: cache / "b1" / "svt_s_fp32_64x64_b1.plan", 4: cache / "b4" / "svt_s_fp32_64x64.plan"}
    assert sorted(cache.rglob("*.plan")) == sorted(plans.values())  # two engines, neither replacing the other
    for b, plan in plans.items():
        (profile,) = read_plan(plan.read_bytes())["profiles"]  # what the builder was given
        assert profile["input"] == [[1, 3, 64, 64], [b, 3, 64, 64], [b, 3, 64, 64]]
        assert read_manifest(plan).engine.profile["opt"] == [b, 3, 64, 64]
    assert timed == [(plans[1], 1), (plans[4], 4)]  # each batch timed on its own engine
    assert [Path(r["runner"]["path"]) for r in rows] == [plans[1], plans[4]]
    assert [r["validation"]["cases"] for r in rows] == [["random b=1 64x64"], ["random b=4 64x64"]]
    assert "trt-fp32: one engine per measured batch N, profile min 1 / opt N / max N" in res["method"]


def test_a_failing_tensorrt_backend_is_named_and_every_other_row_is_written(doubles, fp32_onnx, tmp_path,
                                                                           monkeypatch, capsys):
    """TensorRT's parser refuses the model: the TensorRT rows are errors quoting it, ONNX
    Runtime's rows are measured, every result file is written, and the command exits 1 naming
    the failure on stderr."""
    from trt_doubles.fake_trt import OnnxParserB

    monkeypatch.setattr(OnnxParserB, "_parse", lambda self, model, path: self._fail("Unsupported operator Roll"))
    out = tmp_path / "bench"
    _cache(fp32_onnx, out)
    rc = bench_main(["--model", "svt_s", "--backends", "ort-cpu,trt-fp32", "--batch", "1,4", "--img-size", "64",
                     "--out", str(out), "--name", "t", *FAST])
    err = capsys.readouterr().err.splitlines()
    assert rc == 1
    res = json.loads((out / "t.json").read_text())
    assert res["complete"] is True
    by = {(r["backend"], r["infer_batch_size"]): r for r in res["rows"]}
    assert [(b, n, r["status"]) for (b, n), r in by.items()] == [
        ("ort-cpu", 1, "ok"), ("ort-cpu", 4, "ok"), ("trt-fp32", 1, "error"), ("trt-fp32", 4, "error")]
    assert all(by["ort-cpu", n]["infer_samples_per_sec"] > 0 for n in (1, 4))  # ONNX Runtime really ran
    for n, onnx in ((1, "svt_s_fp32_64x64_b1.onnx"), (4, "svt_s_fp32_64x64.onnx")):
        reason = by["trt-fp32", n]["reason"]
        assert reason.startswith(f"TensorRT {doubles.trt.__version__} could not build {onnx}") and "Roll" in reason
        assert f"failed: svt_s / trt-fp32 / batch {n}: {reason}" in err
    assert err[-1].startswith("error: 2 failure(s) above; every other row was measured")
    assert {p.name for p in out.iterdir() if p.is_file()} == {"t.json", "t.csv", "t.md", "t.png"}
    assert not list((out / ".artifacts").rglob("*.plan"))


@pytest.mark.parametrize("backends", ["torch,trt-fp32", "trt-fp32,trt-fp16"])
def test_tensorrt_that_cannot_run_here_is_found_first(monkeypatch, tmp_path, capsys, backends):
    """TensorRT 10 on a GPU it does not support (compute capability 7.0, where 10.5 and newer
    need 7.5): mixed with another route, the TensorRT rows are skipped with the preflight's
    reason, no engine or ONNX is made for them, the other route is measured and the run
    succeeds; TensorRT routes only, the run stops (exit 3) before any model is built."""
    from twins_deploy.engines.trt import preflight as pf

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(pf, "wheel_cuda_major", lambda version: (12, "tensorrt-cu12"))
    monkeypatch.setattr(pf, "_cuda_bindings_major", lambda: None)
    d = harness.install(monkeypatch, "10", FakeDevice(compute_capability=(7, 0), driver=12080))
    out = tmp_path / "bench"
    rc = bench_main(["--model", "pcpvt_s", "--backends", backends, "--batch", "1,2", "--img-size", "32",
                     "--out", str(out), "--name", "t", *FAST])
    err = capsys.readouterr().err
    problem = f"TensorRT {d.trt.__version__} supports GPUs of compute capability 7.5 and newer"
    if backends.startswith("trt"):
        assert rc == 3 and "TensorRT cannot run here:" in err and problem in err
        assert not out.exists()  # nothing built, exported or written
        return
    assert rc == 0
    rows = json.loads((out / "t.json").read_text())["rows"]
    assert [(r["backend"], r["infer_batch_size"], r["status"]) for r in rows] == [
        ("torch", 1, "ok"), ("torch", 2, "ok"), ("trt-fp32", 1, "skipped"), ("trt-fp32", 2, "skipped")]
    for r in rows[2:]:
        assert r["reason"].startswith(f"TensorRT cannot run here: {problem}")
    assert not [f for f in (out / ".artifacts").rglob("*") if f.is_file()]
