"""twins-bench on the TensorRT routes, under the test doubles: one engine per measured batch,
its profile tuned for that batch (as trtexec --shapes), each batch validated and timed on its
own engine. The doubles compute and time nothing: these tests assert which engine was built
for what and which one ran, never numbers."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from trt_doubles import harness
from trt_doubles.fake_trt import read_plan
from twins_deploy.cli.bench import main as bench_main
from twins_deploy.manifest import read_manifest


@pytest.fixture
def doubles(monkeypatch, tmp_path):
    """TensorRT 10's double with torch.cuda over the same fake GPU (what twins-bench's CUDA
    timing touches); the timing cache under the test's folder."""
    from trt_doubles import fake_torch_cuda

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    d = harness.install(monkeypatch, "10")
    fake_torch_cuda.install(monkeypatch, d.device)
    return d


def test_each_batch_is_validated_and_timed_on_an_engine_tuned_for_it(doubles, tmp_path, monkeypatch):
    import twins_deploy.bench.harness as bench_harness
    import twins_deploy.exporters.onnx_export as onnx_export

    # each batch's engine is built from an export of its own; onnxslim (most of an export's
    # time, and nothing this test looks at) is left out
    monkeypatch.setattr(onnx_export, "simplify", lambda graph, spec, info: graph)
    timed: list = []

    def time_runner(runner, x, **kw):
        timed.append((Path(runner.path), len(x)))
        return real_time_runner(runner, x, **kw)

    real_time_runner = bench_harness.time_runner
    monkeypatch.setattr(bench_harness, "time_runner", time_runner)
    out = tmp_path / "bench"
    rc = bench_main(["--model", "svt_s", "--backends", "trt-fp32", "--batch", "1,4", "--img-size", "64", "--validate",
                     "--min-iters", "2", "--min-time", "0", "--warmup", "0", "--warmup-time", "0", "--out", str(out),
                     "--name", "t", "-q"])
    assert rc == 1  # the doubles compute nothing, so validation fails; every row is still timed and written
    res = json.loads((out / "t.json").read_text())
    rows = res["rows"]
    assert [(r["infer_batch_size"], r["status"]) for r in rows] == [(1, "ok"), (4, "ok")]
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
