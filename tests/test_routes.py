"""The route table: every backend is a row, read by every command; nothing else spells one.

* a throwaway route (one row plus its Runner class) is listed by every CLI, opened by
  ``open_runner``, judged by ``twins-validate`` and measured by ``twins-bench``, with
  nothing else changed;
* every CLI that chooses a route lists exactly the table's routes;
* outside the CLI layer, only the table and the opening module compare backend names.
"""
from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

import pytest
from helpers_export import export_to

import twins_deploy
import twins_deploy.bench as bench_pkg
import twins_deploy.engines as engines_pkg
import twins_deploy.exporters as exporters_pkg
from twins_deploy.engines.opening import open_model, open_runner
from twins_deploy.engines.routes import (
    MODEL,
    ONNX_FP16,
    ONNX_FP32,
    ONNX_INT8,
    PLAN_FP16,
    PLAN_FP32,
    PLAN_INT8,
    ROUTES,
    TENSORRT,
    Route,
    artifact_routes,
    get_route,
    judged_precision,
    route_for,
    routes_help,
)
from twins_deploy.engines.runners.base import RunTarget
from twins_deploy.engines.runners.onnxrt import OrtRunner
from twins_deploy.engines.runners.pytorch import TorchRunner
from twins_deploy.errors import OptionError
from twins_deploy.exporters.spec import BatchRange
from twins_deploy.manifest import read_manifest


class EchoRunner(OrtRunner):
    """The throwaway route's Runner: ONNX Runtime with one thread, under a class of its own."""

    opened: list[str] = []

    @classmethod
    def from_route(cls, route: Route, target: RunTarget) -> EchoRunner:
        cls.opened.append(route.name)
        runner = cls(target.path, threads=1)
        runner.name = route.name
        return runner


ECHO = Route("echo-cpu", "Test", "a throwaway route for the tests", (ONNX_FP32, ONNX_FP16), "cpu", EchoRunner)


@pytest.fixture()
def echo_route(monkeypatch):
    """The table with one row more, for one test."""
    monkeypatch.setitem(ROUTES, ECHO.name, ECHO)
    EchoRunner.opened.clear()
    yield ECHO


@pytest.fixture(scope="module")
def onnx_artifact(tmp_path_factory) -> Path:
    path, _ = export_to(tmp_path_factory.mktemp("routes"), "pcpvt_s", img_size=(32, 32), batch=BatchRange(1, 1, 2))
    return path


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return next(a for a in parser._actions if flag in a.option_strings)


def _flat(text: str) -> str:
    """Without whitespace: argparse wraps lines, also at hyphens."""
    return "".join(text.split())


def _help(parser: argparse.ArgumentParser) -> str:
    return _flat(parser.format_help())


def _route_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every CLI that chooses one route per run, by name."""
    from twins_deploy.cli import predict, validate

    return {"twins-validate": validate.build_parser(), "twins-predict": predict.build_parser()}


def test_every_cli_lists_exactly_the_tables_routes():
    from twins_deploy.cli import bench

    for cli, parser in _route_parsers().items():
        action = _option(parser, "--backend")
        assert list(action.choices) == artifact_routes(), cli
        assert _flat(routes_help(artifact_routes())) in _help(parser), cli
    assert _flat(routes_help()) in _help(bench.build_parser())
    assert artifact_routes() == [n for n, r in ROUTES.items() if MODEL not in r.consumes]


def test_a_new_route_is_one_row_and_its_runner(echo_route, onnx_artifact, tmp_path, capsys):
    from twins_deploy.cli import bench
    from twins_deploy.cli.validate import main as validate_main
    from twins_deploy.pipeline import revalidate

    # every CLI offers it
    for cli, parser in _route_parsers().items():
        assert "echo-cpu" in _option(parser, "--backend").choices, cli
        assert _flat("echo-cpu: a throwaway route for the tests") in _help(parser), cli
    assert _flat("echo-cpu: a throwaway route for the tests") in _help(bench.build_parser())
    # opening, validation (with the artifact's own thresholds), the CLI's report
    runner = open_runner(onnx_artifact, route="echo-cpu")
    assert isinstance(runner, EchoRunner) and runner.name == "echo-cpu" and runner.threads == 1
    report = revalidate(onnx_artifact, route="echo-cpu", batches=[1], quiet=True)
    assert report.passed and report.candidate_info["name"] == "echo-cpu"
    out = tmp_path / "r.json"
    assert validate_main([str(onnx_artifact), "--backend", "echo-cpu", "--batch", "2", "-q", "--report", str(out)]) == 0
    assert json.loads(out.read_text())["candidate_info"]["name"] == "echo-cpu"
    # the benchmark measures it like any other row
    res = tmp_path / "bench"
    assert bench.main(["--model", "pcpvt_s", "--img-size", "32", "--backends", "torch,echo-cpu", "--batch", "1",
                       "--min-time", "0", "--min-iters", "2", "--warmup", "1", "--warmup-time", "0",
                       "--out", str(res), "--name", "echo", "-q"]) == 0
    rows = json.loads((res / "echo.json").read_text())["rows"]
    echo = next(r for r in rows if r["backend"] == "echo-cpu")
    assert echo["status"] == "ok" and echo["infer_samples_per_sec"] > 0 and echo["precision"] == "fp32"
    assert EchoRunner.opened.count("echo-cpu") >= 3
    capsys.readouterr()


def test_route_for_an_artifact_follows_the_table(onnx_artifact):
    m = read_manifest(onnx_artifact)
    assert route_for(m).name == "ort-cpu" and route_for(m, device="cuda").name == "ort-cuda"
    assert route_for(m, "ort").name == "ort-cpu"  # the old name still works
    assert judged_precision(route_for(m, "openvino-bf16"), m) == "bf16"
    assert judged_precision(route_for(m, "openvino-f32"), m) == "fp32"
    with pytest.raises(OptionError, match=r"is an ONNX model \(onnx-fp32\): it runs in ONNX Runtime and OpenVINO only \(ort-cpu, ort-cuda, "):
        route_for(m, "trt-fp16")
    with pytest.raises(OptionError, match="unknown route 'tflite'; choose from torch, "):
        get_route("tflite")
    plan = type(m)(**{**m.__dict__, "kind": "trt"})
    assert route_for(plan).name == "trt-fp32"  # a plan runs on the GPU whatever was asked
    with pytest.raises(OptionError, match=r"is a TensorRT plan \(plan-fp32\): it runs in TensorRT only \(trt-fp32\); route ort-cpu"):
        route_for(plan, "ort-cpu")


def test_model_routes_open_the_model_and_refuse_artifacts(onnx_artifact):
    from twins_deploy.factory import create_model

    model = create_model("pcpvt_s", seed=1)
    runner = open_model("torch-compile", model)
    assert isinstance(runner, TorchRunner) and runner.compile and runner.name == "torch-compile"
    with pytest.raises(ValueError, match="runs onnx-fp32, onnx-fp16 artifacts, not the model"):
        open_model("ort-cpu", model)
    with pytest.raises(OptionError, match="runs model"):
        open_runner(onnx_artifact, route="torch")


def test_rows_are_consistent():
    kinds = {MODEL, ONNX_FP32, ONNX_FP16, ONNX_INT8, PLAN_FP32, PLAN_FP16, PLAN_INT8}
    for name, r in ROUTES.items():
        assert r.name == name and r.consumes and set(r.consumes) <= kinds
        assert r.precision in ("fp32", "fp16", "bf16", "int8")
        assert r.makes is None if r.runs_model else r.makes[1] in ("fp32", "fp16", "int8")
        assert (r.int8_form is not None) == (r.precision == "int8")
        assert r.extra is None or r.extra in _extras(), f"{name}: extra {r.extra!r} is not in pyproject.toml"
        assert callable(getattr(r.runner, "from_route", None))
    assert [r.name for r in ROUTES.values() if r.baseline] == ["torch"]
    # TensorRT plans are tuned to their profile's batch: twins-bench builds one per measured batch
    assert {r.name for r in ROUTES.values() if r.tuned_per_batch} == {r.name for r in ROUTES.values()
                                                                     if r.family == TENSORRT}
    with pytest.raises(ValueError, match="not in"):
        Route("bad", "X", "bad kind", ("onnx-int3",), "cpu", OrtRunner)
    with pytest.raises(ValueError, match="names its Q/DQ form"):
        Route("bad", "X", "INT8 without its form", (ONNX_INT8,), "cpu", OrtRunner)
    with pytest.raises(ValueError, match="runs INT8 artifacts only"):
        Route("bad", "X", "INT8 beside FP32", (ONNX_FP32, ONNX_INT8), "cpu", OrtRunner, int8_form="u8s8")
    with pytest.raises(ValueError, match="no artifact to tune per batch"):
        Route("bad", "X", "tuned model", (MODEL,), "cpu", TorchRunner, tuned_per_batch=True)


def _extras() -> set[str]:
    import tomllib

    root = Path(__file__).resolve().parents[1]
    return set(tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"])


# -- nobody else compares backend names ------------------------------------------------------------
# The table and the opening module may; the CLI layer turns flags into names.
ALLOWED = {"engines/routes.py", "engines/opening.py"}
FAMILY_PREFIXES = ("trt", "ort", "openvino", "torch", "lean")


def backend_name_comparisons(source: str, names: set[str]) -> list[tuple[int, str]]:
    """(line, literal) for each ``==``/``!=``/``in``/``startswith``/``endswith`` whose string
    literal is a backend name, an alias, a family prefix, or a prefix of a route name."""
    def is_name(text: str) -> bool:
        return text in names or text in FAMILY_PREFIXES or any(
            n.startswith(text) and len(text) >= 3 and text.rstrip("-") != n for n in names if "-" in n)

    found = []
    for node in ast.walk(ast.parse(source)):
        literals: list[str] = []
        if isinstance(node, ast.Compare):
            for c in (node.left, *node.comparators):
                elts = c.elts if isinstance(c, (ast.Tuple, ast.List, ast.Set)) else [c]
                literals += [e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in ("startswith", "endswith"):
            for a in node.args:
                elts = a.elts if isinstance(a, ast.Tuple) else [a]
                literals += [e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        found += [(node.lineno, lit) for lit in literals if is_name(lit)]
    return found


def _names() -> set[str]:
    return {n for r in ROUTES.values() for n in (r.name, *r.aliases)}


def test_only_the_table_and_the_opening_module_compare_backend_names():
    pkg_root = Path(twins_deploy.__file__).parent
    files = {}
    for pkg in (twins_deploy, exporters_pkg, engines_pkg, bench_pkg):
        root = Path(pkg.__file__).parent
        for f in root.rglob("*.py"):
            rel = f"{root.name}/{f.relative_to(root)}" if root != pkg_root else f"twins_deploy/{f.relative_to(root)}"
            files[rel] = f
    assert "engines/routes.py" in files and "bench/harness.py" in files and "twins_deploy/pipeline.py" in files
    bad = {rel: hits for rel, f in sorted(files.items())
           if rel not in ALLOWED and not rel.startswith("twins_deploy/cli/")
           and (hits := backend_name_comparisons(f.read_text(), _names()))}
    assert bad == {}


@pytest.mark.parametrize("planted", [
    'if backend.startswith("trt"):\n    pass', 'x = name == "ort-cpu"', 'y = b in ("openvino-f32", "x")',
    'z = kind != "torch"', 'w = r["backend"].startswith(("tor", "x"))', 'v = "ort" == b',
])
def test_the_name_check_catches_planted_comparisons(planted):
    assert backend_name_comparisons(planted, _names()), planted
    assert not backend_name_comparisons('a = device == "cuda"\nb = p.startswith("fp")', _names())
