"""The TensorRT preflight: every reason TensorRT cannot work here, found before any work.

The support table is checked against NVIDIA's documented facts; the whole preflight runs
against the TensorRT doubles with a configurable fake GPU (compute capability, driver, free
memory) and a faked TensorRT distribution (which CUDA major its wheel was built for).
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from trt_doubles import harness
from trt_doubles.fake_device import FakeDevice
from twins_deploy.cli.export import main as export_main
from twins_deploy.engines.trt import preflight as pf

GIB = 2**30


@pytest.mark.parametrize("version, sm, ok", [
    ("8.6.1.6", 90, True), ("8.6.1.6", 50, True), ("8.6.1.6", 100, False), ("8.6.1.6", 120, False),
    ("10.4.0.26", 70, True), ("10.5.0.18", 70, False), ("10.5.0.18", 75, True),
    ("10.7.0.23", 100, False), ("10.8.0.43", 100, True), ("10.13.0.35", 120, True),
    ("11.4.0.106", 70, False), ("11.4.0.106", 75, True), ("11.4.0.106", 121, True),
])
def test_gpu_support_follows_nvidias_support_matrices(version, sm, ok):
    problem = pf.sm_problem(version, sm, "GPU")
    assert (problem is None) == ok, problem


def test_gpu_problems_say_which_tensorrt_to_install():
    volta = pf.sm_problem("10.13.0.35", 70, "Tesla V100-SXM2-16GB")
    assert "7.5 and newer" in volta and "Tesla V100-SXM2-16GB is 7.0" in volta and "older than 10.5" in volta
    blackwell = pf.sm_problem("8.6.1.6", 100, "NVIDIA B200")
    assert "predates NVIDIA B200" in blackwell and "install TensorRT 10.8 or newer" in blackwell


@pytest.mark.parametrize("driver, needs, ok", [(12080, 12, True), (13000, 12, True), (12080, 13, False),
                                               (11080, 12, False), (12000, None, True)])
def test_driver_must_run_the_wheels_cuda_major(driver, needs, ok):
    problem = pf.driver_problem(driver, needs, "TensorRT 10.13 (tensorrt-cu13)")
    assert (problem is None) == ok
    if not ok:
        assert f"CUDA {needs}" in problem and pf.DRIVER_FOR_CUDA[needs] in problem


def test_no_driver_at_all_is_named():
    assert "none is installed" in pf.driver_problem(0, 12, "TensorRT")


def _dist(name: str, version: str, requires: list[str] | None = None) -> SimpleNamespace:
    return SimpleNamespace(metadata={"Name": name}, version=version, requires=requires)


def test_the_wheels_cuda_major_comes_from_the_distribution(monkeypatch):
    dists = [_dist("tensorrt_cu13_libs", "10.13.0.35"), _dist("tensorrt", "10.13.0.35", ["tensorrt_cu13==10.13.0.35"]),
             _dist("tensorrt-lean-cu12-bindings", "11.4.0.106"), _dist("numpy", "2.0")]
    monkeypatch.setattr(pf.metadata, "distributions", lambda: dists)
    assert pf.wheel_cuda_major("10.13.0.35") == (13, "tensorrt")
    assert pf.wheel_cuda_major("11.4.0.106") == (12, "tensorrt-lean-cu12-bindings")
    assert pf.wheel_cuda_major("8.6.1") == (None, "tensorrt")  # a tar install: nothing to compare
    eight = [_dist("tensorrt", "8.6.1", ["tensorrt-libs==8.6.1", "nvidia-cuda-runtime-cu12"])]
    monkeypatch.setattr(pf.metadata, "distributions", lambda: eight)
    assert pf.wheel_cuda_major("8.6.1.6") == (12, "tensorrt")


# -- the whole preflight under the doubles ------------------------------------------------------
@pytest.fixture
def wheel_cuda(monkeypatch):
    """The CUDA major the (double's) TensorRT wheel claims; cuda-bindings' follows the driver."""
    def set_major(major: int | None) -> None:
        monkeypatch.setattr(pf, "wheel_cuda_major", lambda version: (major, f"tensorrt-cu{major}"))
    monkeypatch.setattr(pf, "_cuda_bindings_major", lambda: None)
    set_major(12)
    return set_major


def _install(monkeypatch, tmp_path, line: str, **gpu) -> harness.Doubles:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return harness.install(monkeypatch, line, FakeDevice(**gpu))


@pytest.mark.parametrize("line", ["8.6", "10", "11"])
def test_a_supported_machine_passes(monkeypatch, tmp_path, wheel_cuda, line):
    d = _install(monkeypatch, tmp_path, line, compute_capability=(9, 0), driver=12080)
    found = pf.preflight(build=True, workspace_gib=4)
    assert found.problems == [] and found.gpu["sm"] == 90 and found.trt.__version__ == harness.LINES[line][0]
    assert found.gpu["driver"] == "12.8" and d.cudart.names("cudaDriverGetVersion") == ["cudaDriverGetVersion"]
    found.raise_if_failed()


def test_every_problem_is_listed_at_once(monkeypatch, tmp_path, wheel_cuda):
    _install(monkeypatch, tmp_path, "10", compute_capability=(7, 0), free_memory=2 * GIB)
    found = pf.preflight(build=True, workspace_gib=4)
    assert len(found.problems) == 2
    assert "compute capability 7.5 and newer" in found.problems[0]
    assert "2.0 GiB free" in found.problems[1] and "lower --workspace" in found.problems[1]
    with pytest.raises(pf.BackendUnavailableError) as e:
        found.raise_if_failed()
    assert e.value.exit_code == 3 and str(e.value).count("\n  - ") == 2


def test_an_old_driver_stops_before_any_gpu_call(monkeypatch, tmp_path, wheel_cuda):
    d = _install(monkeypatch, tmp_path, "11", driver=12080)
    wheel_cuda(13)
    found = pf.preflight(build=False)
    assert len(found.problems) == 1 and "needs a driver for CUDA 13 (R580 or newer)" in found.problems[0]
    assert "CUDA 12.8 at most" in found.problems[0]
    assert d.cudart.names("cudaGetDevice") == []  # they would fail with cudaErrorInsufficientDriver


def test_export_refuses_before_exporting(monkeypatch, tmp_path, wheel_cuda, capsys):
    _install(monkeypatch, tmp_path, "8.6", compute_capability=(10, 0))
    out = tmp_path / "o"
    rc = export_main(["--model", "svt_s", "--img-size", "64", "--fmt", "trt", "--out-dir", str(out), "-q"])
    err = capsys.readouterr().err
    assert rc == 3 and "TensorRT 8.6.1.6 predates" in err and not out.exists()


def test_cuda_bindings_must_fit_the_driver_too(monkeypatch, tmp_path, wheel_cuda):
    _install(monkeypatch, tmp_path, "10", driver=12080)
    monkeypatch.setattr(pf, "_cuda_bindings_major", lambda: 13)
    (problem,) = pf.preflight(build=True).problems
    assert problem.startswith("cuda-bindings (cuda-python) needs a driver for CUDA 13")


def test_a_missing_polygraphy_is_a_build_problem_only(monkeypatch, tmp_path, wheel_cuda):
    """Polygraphy builds the engines: without it building is refused, running a plan is not."""
    import sys

    _install(monkeypatch, tmp_path, "10")
    monkeypatch.setitem(sys.modules, "polygraphy.backend.trt", None)
    (problem,) = pf.preflight(build=True).problems
    assert problem.startswith("Polygraphy is not installed") and "pip install" in problem
    assert pf.preflight(build=False).problems == []


def test_no_gpu_is_one_clear_line(monkeypatch, tmp_path, wheel_cuda):
    _install(monkeypatch, tmp_path, "11", present=False)
    (problem,) = pf.preflight(build=True).problems
    assert "no usable CUDA GPU" in problem


def test_a_tensorrt_only_benchmark_stops_before_building_anything(tmp_path, capsys):
    """Here TensorRT is absent: twins-bench with only TensorRT routes exits 3 naming it, and
    writes nothing (no model built, no ONNX exported, no results folder)."""
    from twins_deploy.cli.bench import main as bench_main

    out = tmp_path / "bench"
    rc = bench_main(["--backends", "trt-fp32,trt-fp16", "--batch", "1", "--img-size", "64", "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert rc == 3 and "TensorRT cannot run here" in err and "pip install 'twins-deploy[trt]'" in err
    assert not out.exists()

