"""twins-bench on CPU with tiny iteration counts: report structure, arithmetic, skips, errors,
interleaved rounds, validation verdicts, where results go.
No timing assertions: only that what is reported is consistent with what was measured."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from twins_deploy.bench.backends import Subject, make_runner, twins_subject
from twins_deploy.bench.harness import BenchConfig, add_speedups, run, step_count
from twins_deploy.bench.report import CSV_COLUMNS
from twins_deploy.bench.targets import paper_comparison
from twins_deploy.bench.timing import Timing, percentile, time_runner
from twins_deploy.cli.bench import main as bench_main
from twins_deploy.engines.runners.base import Runner
from twins_deploy.exporters.spec import BatchRange
from twins_deploy.manifest import read_manifest
from twins_deploy.progress import Steps

FAST = ["--min-iters", "2", "--min-time", "0", "--warmup", "1", "--warmup-time", "0", "-q"]


def QUIET(n: int) -> Steps:
    """run()'s progress printer in these tests: silent."""
    return Steps(n, quiet=True)


@pytest.fixture(autouse=True)
def quiet_machine(monkeypatch):
    """The machine as idle, whatever else runs beside the tests: its busy warning would add
    lines to the stderr these tests read (tests/test_bench_faults.py tests the warning)."""
    from twins_deploy.bench import machine

    monkeypatch.setattr(machine, "loadavg", lambda: [0.0, 0.0, 0.0])
    monkeypatch.setattr(machine, "system_cpu_seconds", lambda: None)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    import contextlib
    import io

    out = tmp_path_factory.mktemp("bench")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = bench_main(["--model", "pcpvt_s", "--backends", "torch,ort-cpu,torch-fp16,trt-fp16", "--batch", "1,2",
                         "--img-size", "64", "--threads", "2", "--out", str(out), "--name", "t", *FAST])
    assert rc == 0
    res = json.loads((out / "t.json").read_text())
    table = [line for line in printed.getvalue().splitlines() if line.startswith("| pcpvt_s |")]
    assert len(table) == len(res["rows"]) == 8  # the results are printed, not only written
    return out, res


def test_report_files_and_structure(result):
    out, res = result
    assert {p.name for p in out.iterdir() if p.is_file()} == {"t.json", "t.csv", "t.md", "t.png"}
    assert (out / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert res["environment"]["machine"]["cpu"] and res["environment"]["tools"]["torch"]
    rows = res["rows"]
    assert len(rows) == 4 * 2  # every backend x batch appears, measured or skipped
    header = next(csv.reader((out / "t.csv").read_text().splitlines()))
    assert header == CSV_COLUMNS
    for col in ("infer_samples_per_sec", "infer_step_time", "infer_batch_size", "infer_img_size", "param_count"):
        assert col in header
    md = (out / "t.md").read_text()
    assert "| pcpvt_s | torch | 1 |" in md and "skipped" in md


def test_measured_rows_are_consistent(result):
    _, res = result
    ok = [r for r in res["rows"] if r["status"] == "ok"]
    assert {r["backend"] for r in ok} == {"torch", "ort-cpu"}
    for r in ok:
        assert r["iterations"] >= 2 and r["infer_samples_per_sec"] > 0
        # throughput is batch x iterations over the loop's wall time
        assert r["infer_samples_per_sec"] == pytest.approx(r["infer_batch_size"] * r["iterations"] / r["total_s"], rel=0.01)
        assert r["infer_step_time"] <= r["latency_ms_p90"] <= r["latency_ms_p99"] or r["iterations"] < 3
        assert r["param_count"] == 24_106_216 and r["infer_gmacs"] > 0
        assert r["achieved_gflops"] == pytest.approx(2 * r["infer_gmacs"] * r["infer_samples_per_sec"], rel=0.01)
        assert r["infer_img_size"] == "64x64"
    torch_b1 = next(r for r in ok if r["backend"] == "torch" and r["infer_batch_size"] == 1)
    ort_b1 = next(r for r in ok if r["backend"] == "ort-cpu" and r["infer_batch_size"] == 1)
    assert torch_b1["speedup_vs_torch"] == 1.0
    assert ort_b1["speedup_vs_torch"] == pytest.approx(ort_b1["infer_samples_per_sec"] / torch_b1["infer_samples_per_sec"], rel=1e-2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: GPU backends run instead of skipping")
def test_gpu_backends_are_skipped_with_reasons(result):
    _, res = result
    skipped = {r["backend"]: r["reason"] for r in res["rows"] if r["status"] == "skipped"}
    assert skipped["torch-fp16"] == "no CUDA GPU visible to PyTorch"
    # the TensorRT preflight's reason, every problem on the row's one line
    assert skipped["trt-fp16"].startswith("TensorRT cannot run here: ") and "\n" not in skipped["trt-fp16"]
    assert "TensorRT is not installed; install it with" in skipped["trt-fp16"] or "GPU" in skipped["trt-fp16"]


def test_unknown_backend_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        bench_main(["--backends", "torch,tensorflow", "--out", str(tmp_path)])
    assert e.value.code == 2
    assert "unknown backend(s) tensorflow" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown route .tflite."):
        make_runner("tflite", twins_subject("svt_s", (64, 64), 1, tmp_path))


def test_percentiles_and_speedups_arithmetic():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 90) == pytest.approx(90.1)
    assert percentile(values, 99) == pytest.approx(99.01)
    t = Timing(batch=8, iterations=10, total_s=2.0, latency_ms=[200.0] * 10, method="x")
    assert t.images_per_s == 40.0 and t.summary()["latency_ms_p99"] == 200.0
    rows = [{"model": "m", "backend": "torch", "infer_batch_size": 8, "infer_samples_per_sec": 40.0, "status": "ok"},
            {"model": "m", "backend": "trt-fp16", "infer_batch_size": 8, "infer_samples_per_sec": 68.0, "status": "ok"},
            {"model": "m", "backend": "trt-fp32", "infer_batch_size": 16, "infer_samples_per_sec": 50.0, "status": "ok"},
            {"model": "m", "backend": "ort-cuda", "infer_batch_size": 8, "status": "skipped", "reason": "r"}]
    add_speedups(rows)
    assert [r["speedup_vs_torch"] for r in rows] == [1.0, 1.7, None, None]
    assert [r["speedup_vs_timm_onnx"] for r in rows] == [None] * 4  # timm's export did not run
    rows += [{"model": "timm-onnx:m", "backend": "ort-cpu", "infer_batch_size": 8, "infer_samples_per_sec": 34.0,
              "status": "ok"}]
    add_speedups(rows)
    assert [r["speedup_vs_timm_onnx"] for r in rows] == [1.176, 2.0, None, None, 1.0]
    assert rows[-1]["speedup_vs_torch"] is None  # timm's export has no PyTorch row of its own
    paper = paper_comparison(rows, model="m", batch=8)
    assert [(p["backend"], p["measured_speedup"], p["paper_speedup"]) for p in paper] == \
        [("trt-fp16", 1.7, 1.7), ("ort-cuda", None, 1.7)]


class _OomAbove(Runner):
    """A Runner whose device 'runs out of memory' above a batch size, and fails outright on
    a batch of 3: tests the harness's failure handling (no TensorRT is involved)."""

    name, device = "oom-test", "cpu"

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.output_names = ["logits"]

    def _activate(self) -> None:
        return None

    def infer(self, x):
        if len(x) == 3:
            raise RuntimeError("compile failed: unsupported op")
        if len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [np.zeros((len(x), 1000), np.float32)]


def test_out_of_memory_is_reported_per_row_and_the_run_goes_on(tmp_path, monkeypatch):
    import twins_deploy.bench.harness as harness

    subject = Subject("svt_s", lambda: torch.nn.Identity(), (64, 64), 4, tmp_path)
    monkeypatch.setattr(harness, "make_runner", lambda *a, **k: _OomAbove(limit=2))
    cfg = BenchConfig(("svt_s",), ("torch",), (1, 4, 3, 2), warmup=1, warmup_s=0, min_iters=2, min_time_s=0)
    rows = run([subject], cfg, progress=QUIET)
    assert [(r["infer_batch_size"], r["status"]) for r in rows] == [(1, "ok"), (4, "oom"), (3, "error"), (2, "ok")]
    assert "out of memory" in rows[1]["reason"] and "unsupported op" in rows[2]["reason"]


def test_time_runner_honours_minimums():
    class Counting(_OomAbove):
        calls = 0

        def infer(self, x):
            Counting.calls += 1
            return super().infer(x)

    r = Counting(limit=8).activate()
    t = time_runner(r, np.zeros((2, 3, 8, 8), np.float32), warmup=3, warmup_s=0, min_iters=7, min_time_s=0)
    assert t.iterations == 7 and len(t.latency_ms) == 7 and Counting.calls == 3 + 7
    t2 = time_runner(r, np.zeros((2, 3, 8, 8), np.float32), warmup=0, warmup_s=0, min_iters=1, min_time_s=0.05)
    assert t2.total_s >= 0.05 and t2.iterations >= 1


def test_torch_runner_leaves_the_callers_model_alone():
    from twins_deploy import create_model
    from twins_deploy.engines.runners.pytorch import TorchRunner

    model = create_model("pcpvt_s")
    with TorchRunner(model, dtype=torch.float64) as r:
        out = r.infer(np.zeros((1, 3, 64, 64), np.float32))
    assert out[0].dtype == np.float32 and out[0].shape == (1, 1000)
    assert next(model.parameters()).dtype == torch.float32


def test_artifacts_are_reused_only_while_every_input_matches(result, tmp_path):
    """The run above exported pcpvt_s (64x64, batch 1..2) for ort-cpu into its cache."""
    from twins_deploy.bench.backends import subject_artifact

    out, _ = result
    cache = out / ".artifacts"
    same = subject_artifact(twins_subject("pcpvt_s", (64, 64), 2, cache), "ort-cpu")
    assert same.reused and same.manifest.spec.batch == BatchRange(1, 2, 2)

    other_batch = subject_artifact(twins_subject("pcpvt_s", (64, 64), 3, cache), "ort-cpu")
    assert not other_batch.reused and other_batch.path == same.path  # rebuilt in place
    assert other_batch.manifest.spec.batch == BatchRange(1, 3, 3)
    assert read_manifest(other_batch.path).spec.batch == BatchRange(1, 3, 3)

    other_size = subject_artifact(twins_subject("pcpvt_s", (96, 96), 3, cache), "ort-cpu")
    assert not other_size.reused and other_size.path != same.path
    assert subject_artifact(twins_subject("pcpvt_s", (96, 96), 3, cache), "ort-cpu").reused


def test_a_preset_gives_defaults_and_typed_flags_win():
    from twins_deploy.cli.bench import config_from_args, parse_args

    _, args = parse_args(["--preset", "paper", "--batch", "8"])
    cfg = config_from_args(args)
    assert cfg.batches == (8,) and cfg.models == ("svt_s",) and "trt-fp16" in cfg.backends
    _, args = parse_args(["--preset", "paper", "--model", "pcpvt_s", "--img-size", "256"])
    cfg = config_from_args(args)
    assert cfg.batches == (192,) and cfg.models == ("pcpvt_s",) and cfg.img_size == (256, 256)
    plain = config_from_args(parse_args([])[1])
    assert plain.batches == (1, 8) and plain.rounds == 1 and not plain.validate and plain.compare == ()
    assert not plain.targets and plain.out == Path("bench_out")


def test_the_comparison_presets_are_runs_of_the_same_harness():
    from twins_deploy.cli.bench import config_from_args, parse_args

    argv = ["--preset", "cpu-compare", "--out", "results"]
    cfg = config_from_args(parse_args(argv)[1], argv)
    assert (cfg.models, cfg.batches, cfg.img_size, cfg.threads, cfg.rounds) == (("svt_s",), (1, 8), (224, 224), 2, 5)
    assert cfg.backends == ("torch", "ort-cpu", "openvino-f32", "openvino-bf16")
    assert cfg.validate and cfg.targets and cfg.compare == ("timm-onnx",) and cfg.name == "cpu_compare"
    assert cfg.command == "twins-bench --preset cpu-compare --out results"
    cfg = config_from_args(parse_args(["--preset", "cpu-compare", "--no-validate", "--rounds", "2", "--name", "x"])[1])
    assert not cfg.validate and cfg.rounds == 2 and cfg.name == "x" and cfg.targets
    cfg = config_from_args(parse_args(["--preset", "onnx-vs-timm"])[1])
    assert cfg.models == ("svt_s", "pcpvt_s") and cfg.backends == ("torch", "ort-cpu") and cfg.rounds == 3
    assert cfg.compare == ("timm-onnx",) and not cfg.validate and not cfg.targets and cfg.name == "onnx_vs_timm_cpu"
    cfg = config_from_args(parse_args(["--compare", "swin_t,timm-onnx,swin_t"])[1])
    assert cfg.compare == ("swin_t", "timm-onnx")


class _Scripted(_OomAbove):
    """A Runner that logs when it opens and closes; what it 'measures' comes from a script."""

    def __init__(self, tag: str, log: list) -> None:
        super().__init__(limit=64)
        self.tag, self.log = tag, log

    def _activate(self) -> None:
        self.log.append(("open", self.tag))

    def _deactivate(self) -> None:
        self.log.append(("close", self.tag))


def test_rounds_interleave_reverse_and_report_the_median(tmp_path, monkeypatch):
    import twins_deploy.bench.harness as harness

    log: list = []
    ips = {("torch", 1): [10.0, 30.0, 20.0], ("torch", 2): [40.0, 44.0, 42.0],
           ("ort-cpu", 1): [25.0, 15.0, 35.0], ("ort-cpu", 2): [80.0, 90.0, 85.0]}

    def scripted_time(runner, x, **kw):
        b = len(x)
        log.append(("time", runner.tag, b))
        v = ips[(runner.tag, b)][sum(1 for e in log if e[:3] == ("time", runner.tag, b)) - 1]
        return Timing(batch=b, iterations=2, total_s=2 * b / v, latency_ms=[1e3 * b / v] * 2, method="scripted")

    monkeypatch.setattr(harness, "make_runner", lambda backend, *a, **k: _Scripted(backend, log))
    monkeypatch.setattr(harness, "time_runner", scripted_time)
    subject = Subject("m", lambda: torch.nn.Identity(), (32, 32), 2, tmp_path)
    cfg = BenchConfig(("m",), ("torch", "ort-cpu"), (1, 2), rounds=3)
    rows = run([subject], cfg, progress=QUIET)
    t, o = ("time", "torch"), ("time", "ort-cpu")
    assert log == [("open", "torch"), ("open", "ort-cpu"),
                   (*t, 1), (*t, 2), (*o, 1), (*o, 2),    # round 1
                   (*o, 1), (*o, 2), (*t, 1), (*t, 2),    # round 2: reversed
                   (*t, 1), (*t, 2), (*o, 1), (*o, 2),    # round 3
                   ("close", "torch"), ("close", "ort-cpu")]
    by = {(r["backend"], r["infer_batch_size"]): r for r in rows}
    assert by[("torch", 1)]["rounds_samples_per_sec"] == [10.0, 30.0, 20.0]
    assert by[("torch", 1)]["infer_samples_per_sec"] == 20.0 and by[("ort-cpu", 1)]["infer_samples_per_sec"] == 25.0
    assert by[("ort-cpu", 2)]["infer_samples_per_sec"] == 85.0 and by[("ort-cpu", 2)]["iterations"] == 6
    assert by[("ort-cpu", 1)]["speedup_vs_torch"] == 1.25 and by[("torch", 2)]["speedup_vs_torch"] == 1.0
    assert by[("torch", 1)]["infer_step_time"] == 50.0  # median latency over every round's steps
    # one round: each runner is opened, timed and closed before the next opens
    log.clear()
    run([subject], BenchConfig(("m",), ("torch", "ort-cpu"), (1,)), progress=QUIET)
    assert [e[0] for e in log] == ["open", "time", "close", "open", "time", "close"]


def _runner_off_by(delta: float, family: str):
    """make_runner, with the outputs (not the timed steps) of one route family's runners shifted by ``delta``."""
    from twins_deploy.bench.backends import make_runner as real
    from twins_deploy.engines.routes import get_route

    def make(backend, subject, **kw):
        runner = real(backend, subject, **kw)
        if get_route(backend).family == family:
            infer = runner.infer
            runner.infer = lambda x: [o + delta for o in infer(x)]
        return runner
    return make


def test_validate_records_a_verdict_per_row_and_a_failing_route_is_timed_and_recorded(result, tmp_path, monkeypatch,
                                                                                     capsys):
    import twins_deploy.bench.harness as harness
    from twins_deploy.engines.routes import ONNXRUNTIME

    out, _ = result
    shutil.copytree(out / ".artifacts", tmp_path / ".artifacts")  # the fixture's ONNX file, reused
    monkeypatch.setattr(harness, "make_runner", _runner_off_by(0.01, ONNXRUNTIME))
    capsys.readouterr()
    rc = bench_main(["--model", "pcpvt_s", "--backends", "torch,ort-cpu", "--batch", "1,2", "--img-size", "64",
                     "--validate", "--out", str(tmp_path), "--name", "v", *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and err[0].startswith("error: validation failed for pcpvt_s / ort-cpu"), err
    res = json.loads((tmp_path / "v.json").read_text())
    by = {(r["backend"], r["infer_batch_size"]): r for r in res["rows"]}
    assert set(by) == {("torch", 1), ("torch", 2), ("ort-cpu", 1), ("ort-cpu", 2)}
    for (backend, _), r in by.items():
        v = r["validation"]
        assert r["status"] == "ok" and r["infer_samples_per_sec"] > 0  # timed either way
        assert v["judged_as"] == "fp32" and v["cases"] == ["random b=1 64x64", "random b=2 64x64"]
        if backend == "torch":  # SDPA against the explicit attention path
            assert v["passed"] and v["failures"] == [] and v["max_abs"] < 1e-4 and v["top1_agreement"] == 1.0
        else:
            assert not v["passed"] and v["max_abs"] == pytest.approx(0.01, rel=0.05)
            assert v["failures"] and all("max abs error" in f for f in v["failures"])
    assert by[("ort-cpu", 1)]["runner"]["spinning"] is True  # threads not pinned: ONNX Runtime's default
    csv_rows = list(csv.DictReader((tmp_path / "v.csv").read_text().splitlines()))
    assert [(r["backend"], r["validated"]) for r in csv_rows] == [("torch", "pass")] * 2 + [("ort-cpu", "fail")] * 2
    md = (tmp_path / "v.md").read_text()
    assert md.count("| PASS (fp32)") == 2 and md.count("| FAIL (fp32): ") == 2
    assert "each runner validated against PyTorch FP32" in res["method"]


def _new_files(roots: list[Path], before: set[Path] | None = None) -> set[Path]:
    now = {p for root in roots for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    return now if before is None else now - before


def test_results_never_go_into_the_package_source(tmp_path, monkeypatch, capsys):
    """The default --out is relative to the working directory, never a folder of the package;
    an --out inside the package's source is refused before anything runs."""
    import twins_deploy
    import twins_deploy.bench
    import twins_deploy.engines
    import twins_deploy.exporters

    roots = [Path(m.__file__).resolve().parent for m in (twins_deploy, twins_deploy.bench, twins_deploy.engines,
                                                        twins_deploy.exporters)]
    before = _new_files(roots)
    monkeypatch.chdir(tmp_path)
    assert bench_main(["--model", "pcpvt_s", "--backends", "torch", "--batch", "1", "--img-size", "32", *FAST]) == 0
    assert sorted(p.name for p in (tmp_path / "bench_out").iterdir()) == [
        "pcpvt_s_torch.csv", "pcpvt_s_torch.json", "pcpvt_s_torch.md", "pcpvt_s_torch.png"]
    for inside in (roots[1], roots[1] / "results", roots[0] / "data" / "new"):
        capsys.readouterr()
        assert bench_main(["--model", "pcpvt_s", "--backends", "torch", "--batch", "1", "--out", str(inside),
                           *FAST]) == 2
        assert "lies inside the package source" in capsys.readouterr().err
    monkeypatch.chdir(roots[1])  # the relative default --out, from inside the package, is refused too
    assert bench_main(["--model", "pcpvt_s", "--backends", "torch", "--batch", "1", *FAST]) == 2
    assert "'bench_out' lies inside the package source" in capsys.readouterr().err
    assert _new_files(roots, before) == set()


def test_rerender_rewrites_table_and_chart_from_the_json(result, tmp_path, capsys):
    out, res = result
    copy = tmp_path / "t.json"
    copy.write_text((out / "t.json").read_text())
    assert bench_main(["--rerender", str(copy)]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "t.md"), str(tmp_path / "t.png")]
    assert (tmp_path / "t.md").read_text() == (out / "t.md").read_text()
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- failures are rows, results are written as they come in ------------------------------------------
class _Fake(_OomAbove):
    """A CPU Runner that computes nothing; its step raises ``fail_at[batch]`` at that batch, and
    closing it raises ``fail_at_close`` (a CUDA error freeing its memory)."""

    def __init__(self, fail_at: dict | None = None, fail_at_close: Exception | None = None) -> None:
        super().__init__(limit=64)
        self.fail_at, self.fail_at_close = fail_at or {}, fail_at_close

    def infer(self, x):
        if len(x) in self.fail_at:
            raise self.fail_at[len(x)]
        return [np.zeros((len(x), 1000), np.float32)]

    def _deactivate(self) -> None:
        if self.fail_at_close is not None:
            raise self.fail_at_close


def test_a_failing_backend_or_batch_is_an_error_row_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    """Not only the three exception types the harness once skipped: an export that fails (a
    TwinsDeployError), a CUDA error at one batch and one when closing are each their rows'
    result; every other row is measured, everything is written, and the exit status says so."""
    import twins_deploy.bench.harness as harness
    from twins_deploy.engines.trt.cuda import CudaError
    from twins_deploy.errors import ExportError

    export = "the ONNX exporter failed: unsupported operator aten::roll"
    launch = "cudaGraphLaunch failed: cudaErrorIllegalAddress (an illegal memory access)"
    freeing = "cudaFree failed: cudaErrorIllegalAddress"

    def make(backend, subject, **kw):
        if backend == "ort-cpu":
            raise ExportError(f"{export}\n  (the exporter's traceback follows)")
        return _Fake(fail_at={2: CudaError(launch)} if backend == "openvino-f32" else {},
                     fail_at_close=CudaError(freeing) if backend == "torch-compile" else None)

    monkeypatch.setattr(harness, "make_runner", make)
    rc = bench_main(["--model", "pcpvt_s", "--backends", "torch,ort-cpu,openvino-f32,torch-compile", "--batch", "1,2",
                     "--img-size", "32", "--out", str(tmp_path), "--name", "f", *FAST])
    out, err = capsys.readouterr()
    res = json.loads((tmp_path / "f.json").read_text())
    assert rc == 1 and res["complete"] is True
    by = {(r["backend"], r["infer_batch_size"]): (r["status"], r.get("reason")) for r in res["rows"]}
    closing = ("error", f"closing the runner failed: {freeing}")
    assert by == {("torch", 1): ("ok", None), ("torch", 2): ("ok", None),
                  ("ort-cpu", 1): ("error", export), ("ort-cpu", 2): ("error", export),
                  ("openvino-f32", 1): ("ok", None), ("openvino-f32", 2): ("error", launch),
                  ("torch-compile", 1): closing, ("torch-compile", 2): closing}
    ov = next(r for r in res["rows"] if (r["backend"], r["infer_batch_size"]) == ("openvino-f32", 1))
    assert ov["infer_samples_per_sec"] > 0 and ov["speedup_vs_torch"] is not None  # measured beside the failures
    assert err.splitlines()[:3] == [f"failed: pcpvt_s / ort-cpu / batch 1,2: {export}",
                                    f"failed: pcpvt_s / openvino-f32 / batch 2: {launch}",
                                    f"failed: pcpvt_s / torch-compile / batch 1,2: closing the runner failed: {freeing}"]
    assert len(err.splitlines()) == 4 and err.splitlines()[3].startswith("error: 3 failure(s) above")
    assert {p.name for p in tmp_path.iterdir() if p.is_file()} == {"f.json", "f.csv", "f.md", "f.png"}
    assert f"| pcpvt_s | ort-cpu | 1 | error: {export} |" in (tmp_path / "f.md").read_text()
    assert f"| pcpvt_s | ort-cpu | 1 | error: {export} |" in out  # the printed table says it too


@pytest.mark.parametrize("where", ["second backend opens", "second batch runs"])
def test_an_interrupted_run_keeps_every_row_it_measured(tmp_path, monkeypatch, capsys, where):
    """Ctrl-C while the second backend opens, or right after the first row (while the first
    backend runs its second batch): the run ends (it is not an error row), and the JSON and CSV
    on disk hold the rows measured until then, marked incomplete; each write along the way left
    a well-formed JSON with the rows measured until then."""
    import twins_deploy.bench.harness as harness
    import twins_deploy.bench.run as bench_run

    def make(backend, subject, **kw):
        if backend == "ort-cpu":
            raise KeyboardInterrupt
        return _Fake(fail_at={2: KeyboardInterrupt()} if where == "second batch runs" else {})

    seen: list = []

    def write_rows(out_dir, stem, result):
        paths = real_write_rows(out_dir, stem, result)
        on_disk = json.loads(paths[0].read_text())
        seen.append((on_disk["complete"], tuple((r["backend"], r["infer_batch_size"]) for r in on_disk["rows"])))
        return paths

    real_write_rows = bench_run.write_rows
    monkeypatch.setattr(bench_run, "write_rows", write_rows)
    monkeypatch.setattr(harness, "make_runner", make)
    (tmp_path / "i.json").write_text(json.dumps({"complete": True, "rows": []}))  # a finished earlier run's
    rc = bench_main(["--model", "pcpvt_s", "--backends", "torch,ort-cpu", "--batch", "1,2", "--img-size", "32",
                     "--out", str(tmp_path), "--name", "i", "--force", *FAST])
    err = capsys.readouterr().err
    assert rc == 130
    measured = [("torch", 1), ("torch", 2)] if where == "second backend opens" else [("torch", 1)]
    res = json.loads((tmp_path / "i.json").read_text())
    assert res["complete"] is False
    assert [(r["backend"], r["infer_batch_size"], r["status"]) for r in res["rows"]] == [(*m, "ok") for m in measured]
    assert all(r["infer_samples_per_sec"] > 0 for r in res["rows"])
    assert [r["backend"] for r in csv.DictReader((tmp_path / "i.csv").read_text().splitlines())] == ["torch"] * len(
        measured)
    assert not (tmp_path / "i.md").exists() and not (tmp_path / "i.png").exists()  # those come at the end
    assert {rows for _, rows in seen} == {tuple(measured[:n]) for n in range(len(measured) + 1)}
    assert [rows for _, rows in seen][:2] == [(), (("torch", 1),)]  # each row written as it was measured
    assert not any(complete for complete, _ in seen)
    assert f"the {len(measured)} row(s) measured before the interruption are in {tmp_path / 'i'}.json" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the GPU route runs instead of skipping")
def test_a_run_that_measured_nothing_fails(tmp_path, capsys):
    rc = bench_main(["--model", "pcpvt_s", "--backends", "torch-fp16", "--batch", "1", "--img-size", "32",
                     "--out", str(tmp_path), "--name", "n", *FAST])
    assert rc == 3 and "error: nothing was measured: every row was skipped" in capsys.readouterr().err
    rows = json.loads((tmp_path / "n.json").read_text())["rows"]
    assert [(r["status"], r["reason"]) for r in rows] == [("skipped", "no CUDA GPU visible to PyTorch")]


def test_a_route_tuned_per_batch_opens_validates_and_times_one_runner_per_batch(tmp_path, monkeypatch):
    """A route whose artifact is tuned to its batch (TensorRT's plans; here a copy of ort-cpu
    marked so): one runner per batch, its artifact made for that batch, validated and timed at
    that batch only; the other routes keep one runner for every batch."""
    import dataclasses

    import twins_deploy.bench.harness as harness
    from twins_deploy.engines.routes import ROUTES, get_route

    tuned = dataclasses.replace(get_route("ort-cpu"), name="ort-tuned", aliases=(), tuned_per_batch=True)
    monkeypatch.setitem(ROUTES, tuned.name, tuned)
    log: list = []

    class Tagged(_Fake):
        def __init__(self, tag) -> None:
            super().__init__()
            self.tag = tag

    def make(backend, subject, *, tuned_for=None, **kw):
        log.append(("open", backend, tuned_for))
        return Tagged((backend, tuned_for))

    def validate(subject, backend, runner, batches):
        log.append(("validate", *runner.tag, batches))
        runner.deactivate()
        return {"passed": True, "summary": "ok"}

    def time(runner, x, **kw):
        log.append(("time", *runner.tag, len(x)))
        return Timing(batch=len(x), iterations=1, total_s=1.0, latency_ms=[1.0], method="scripted")

    monkeypatch.setattr(harness, "make_runner", make)
    monkeypatch.setattr(harness, "validate_runner", validate)
    monkeypatch.setattr(harness, "time_runner", time)
    subject = Subject("m", lambda: torch.nn.Identity(), (32, 32), 4, tmp_path)
    rows = run([subject], BenchConfig(("m",), ("torch", "ort-tuned"), (1, 4), validate=True), progress=QUIET)
    assert log == [("open", "torch", None), ("validate", "torch", None, (1, 4)),
                   ("time", "torch", None, 1), ("time", "torch", None, 4),
                   ("open", "ort-tuned", 1), ("validate", "ort-tuned", 1, (1,)), ("time", "ort-tuned", 1, 1),
                   ("open", "ort-tuned", 4), ("validate", "ort-tuned", 4, (4,)), ("time", "ort-tuned", 4, 4)]
    assert [(r["backend"], r["infer_batch_size"], r["status"]) for r in rows] == [
        ("torch", 1, "ok"), ("torch", 4, "ok"), ("ort-tuned", 1, "ok"), ("ort-tuned", 4, "ok")]
    assert step_count([subject], BenchConfig(("m",), ("torch", "ort-tuned"), (1, 4))) == 3


def test_results_name_the_tensorrt_distribution_it_came_from(monkeypatch):
    """NVIDIA's wheels install TensorRT as tensorrt-cu12 (its module from tensorrt_cu12_bindings),
    tensorrt-cu13, the lean runtime, ...; ``tensorrt`` itself is often absent. The distributions
    are the ones the preflight finds; the full TensorRT is named before the lean runtime."""
    from importlib import metadata
    from types import SimpleNamespace

    from twins_deploy.artifacts import tool_versions

    def dist(name, version):
        return SimpleNamespace(metadata={"Name": name}, version=version, requires=None)

    installed = [dist("tensorrt_lean_cu13_bindings", "11.4.0.106"), dist("tensorrt_cu12_bindings", "10.13.0.35"),
                 dist("tensorrt-cu12", "10.13.0.35"), dist("tensorrt_cu12_libs", "10.13.0.35"), dist("numpy", "2.0")]
    monkeypatch.setattr(metadata, "distributions", lambda: list(installed))
    tools = tool_versions(("tensorrt",))
    assert (tools["tensorrt"], tools["tensorrt-dist"]) == ("10.13.0.35", "tensorrt-cu12")
    del installed[1:4]  # only the lean runtime
    tools = tool_versions(("tensorrt",))
    assert (tools["tensorrt"], tools["tensorrt-dist"]) == ("11.4.0.106", "tensorrt-lean-cu13-bindings")
    del installed[0]
    tools = tool_versions(("tensorrt",))
    assert (tools["tensorrt"], tools["tensorrt-dist"]) == (None, None)
