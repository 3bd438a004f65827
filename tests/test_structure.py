"""The package's shape: what imports what.

* ``import twins_deploy`` and every module in it load on a CPU-only machine without
  TensorRT, Polygraphy, pycuda or the CUDA Python bindings: those are imported inside the
  functions that use them.
* Data flows one way, CLI -> pipeline -> exporters / engines: nothing under exporters/ or
  engines/ imports the CLI or the pipeline, argparse lives only in the CLI, and the
  benchmark builds no ONNX file or engine of its own.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import twins_deploy
import twins_deploy.bench as bench_pkg
import twins_deploy.engines as engines_pkg
import twins_deploy.exporters as exporters_pkg

HEAVY = ("tensorrt", "tensorrt_lean", "tensorrt_bindings", "tensorrt_lean_bindings", "polygraphy", "pycuda", "cuda",
         "pytriton", "tritonclient")  # serving's packages live only in the serving environment
# Modules that may import HEAVY packages when imported (none today: every use is lazy).
ALLOWED_HEAVY: tuple[str, ...] = ()

# Imports every module of a package with two detectors: an ``__import__`` hook that sees
# each import statement executed at module level (even of a module torch already loaded,
# such as cuda.bindings), and the set of newly loaded modules (for importlib calls).
CHECKER = textwrap.dedent('''
    import builtins, importlib, json, pkgutil, sys
    import torch  # whatever torch loads itself is not ours
    heavy, allowed, roots = set(sys.argv[1].split(",")), set(sys.argv[2].split(",")), sys.argv[3].split(",")
    package = roots[0]
    found = {}
    real_import = builtins.__import__

    def hook(name, globals=None, locals=None, fromlist=(), level=0):
        caller = (globals or {}).get("__name__", "")
        if level == 0 and name.split(".")[0] in heavy and caller.startswith(package) and caller not in allowed:
            found.setdefault(caller, []).append(name)
        return real_import(name, globals, locals, fromlist, level)

    builtins.__import__ = hook
    names = []
    for root in roots:  # setuptools' package-dir maps subpackages outside the root's folder
        names += [root] + [m.name for m in pkgutil.walk_packages(importlib.import_module(root).__path__, root + ".")]
    baseline = {n for n in sys.modules if n.split(".")[0] in heavy}
    for name in names:
        if name in allowed:
            continue
        before = set(sys.modules)
        importlib.import_module(name)
        new = sorted(n for n in set(sys.modules) - before - baseline if n.split(".")[0] in heavy)
        if new:
            found.setdefault(name, []).extend(new)
    print(json.dumps({"modules": names, "found": found}))
''')


# The one bench/ module that exports a graph itself: timm's own export, the baseline of
# --compare timm-onnx (twins-bench --preset cpu-compare and onnx-vs-timm)
MEASUREMENT_SCRIPTS = ("timm_baseline.py",)

# The installed package's roots: twins_deploy and the folders mapped into it.
ROOTS = ("twins_deploy", "twins_deploy.exporters", "twins_deploy.engines", "twins_deploy.bench")


def run_checker(roots: tuple[str, ...], extra_path: list[Path] = ()) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*map(str, extra_path), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", CHECKER, ",".join(HEAVY), ",".join(ALLOWED_HEAVY), ",".join(roots)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def fake_heavy_packages(root: Path) -> Path:
    """Importable stand-ins named like the heavy packages, so that a planted import of one
    succeeds (and must then be caught) instead of failing with ImportError."""
    d = root / "fake_heavy"
    for name in ("tensorrt", "polygraphy", "pycuda"):
        (d / name).mkdir(parents=True)
        (d / name / "__init__.py").write_text("")
    return d


def test_no_module_imports_tensorrt_cuda_or_polygraphy_at_import_time(tmp_path):
    result = run_checker(ROOTS, [fake_heavy_packages(tmp_path)])
    mods = set(result["modules"])
    # the walk reaches the mapped subpackages, including the TensorRT ones
    assert {"twins_deploy.pipeline", "twins_deploy.engines.trt.build", "twins_deploy.engines.runners.trt",
            "twins_deploy.engines.trt.cuda", "twins_deploy.bench.harness", "twins_deploy.cli.export",
            "twins_deploy.serving.server", "twins_deploy.cli.serve"} <= mods
    assert result["found"] == {}


def test_the_checker_catches_a_planted_import(tmp_path):
    """The same checker on a package with a module-level ``import tensorrt``, one with
    ``from cuda.bindings import runtime`` (already loaded by torch) and one importing
    polygraphy through importlib."""
    pkg = tmp_path / "plantpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "clean.py").write_text("def f():\n    import tensorrt\n")
    (pkg / "planted_trt.py").write_text("import tensorrt\n")
    (pkg / "planted_cuda.py").write_text("from cuda.bindings import runtime\n")
    (pkg / "planted_poly.py").write_text("import importlib\nimportlib.import_module('polygraphy')\n")
    result = run_checker(("plantpkg",), [tmp_path, fake_heavy_packages(tmp_path)])
    assert set(result["found"]) == {"plantpkg.planted_trt", "plantpkg.planted_cuda", "plantpkg.planted_poly"}


def _imports(path: Path) -> set[str]:
    """Absolute module names imported anywhere in ``path`` (function bodies included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def _files(pkg) -> list[Path]:
    return sorted(Path(pkg.__file__).parent.rglob("*.py"))


def test_data_flows_one_way():
    for pkg in (exporters_pkg, engines_pkg):
        for f in _files(pkg):
            bad = {n for n in _imports(f) if n.startswith(("twins_deploy.cli", "twins_deploy.pipeline", "twins_deploy.bench"))}
            assert not bad, f"{f} imports {sorted(bad)}: data flows CLI -> pipeline -> exporters/engines"
            assert "argparse" not in _imports(f), f"{f}: argparse belongs in twins_deploy/cli"
    for f in _files(bench_pkg):
        assert "argparse" not in _imports(f), f"{f}: argparse belongs in twins_deploy/cli"
        assert "twins_deploy.cli" not in " ".join(_imports(f))


def test_serving_sits_on_both_sides_of_the_pipeline_without_a_cycle():
    """The repository writer is one more pipeline stage (it imports no pipeline, CLI or
    server); the server is a consumer of artifacts, like the CLI, that the pipeline never imports."""
    import twins_deploy.serving as serving_pkg

    repo_writer = Path(serving_pkg.__file__).parent / "triton_repo.py"
    assert not {n for n in _imports(repo_writer) if n.startswith(("twins_deploy.cli", "twins_deploy.pipeline",
                                                                   "twins_deploy.serving.server", "twins_deploy.bench"))}
    pipeline = Path(twins_deploy.__file__).parent / "pipeline.py"
    assert not {n for n in _imports(pipeline) if n.startswith(("twins_deploy.serving.server", "twins_deploy.cli"))}
    for f in _files(serving_pkg):
        assert "argparse" not in _imports(f), f"{f}: argparse belongs in twins_deploy/cli"
        assert not {n for n in _imports(f) if n.startswith("twins_deploy.cli")}, f"{f} imports the CLI"


def test_the_benchmark_builds_no_artifact_of_its_own():
    building = ("twins_deploy.exporters.onnx_export", "twins_deploy.exporters.fp16", "twins_deploy.engines.trt.build",
                "torch.onnx")
    exporting = set()
    for f in _files(bench_pkg):
        if {n for n in _imports(f) if n.startswith(building)} or "torch.onnx.export" in f.read_text():
            exporting.add(f.name)
    # timm's baseline export, on purpose, in its one module; everything else comes from the pipeline
    assert exporting == set(MEASUREMENT_SCRIPTS)


def test_twins_bench_is_the_only_benchmark_program():
    """One console script measures; no other module of the CLI or of bench/ runs as a program."""
    import importlib.util
    import pkgutil
    import tomllib

    import twins_deploy.cli as cli_pkg

    root = Path(__file__).resolve().parents[1]
    scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["twins-bench"] == "twins_deploy.cli.bench:main"
    assert [n for n, target in scripts.items() if "bench" in n or "compare" in target or "bench" in target] == ["twins-bench"]
    script_modules = {target.split(":")[0].rsplit(".", 1)[1] for target in scripts.values()}
    cli_modules = {m.name for m in pkgutil.iter_modules(cli_pkg.__path__)}
    assert cli_modules - script_modules == {"common"}, "every CLI module is a console script's (or shared)"
    for gone in ("twins_deploy.cli.cpu_compare", "twins_deploy.cli.onnx_compare", "twins_deploy.bench.cpu_compare",
                 "twins_deploy.bench.onnx_compare"):
        assert importlib.util.find_spec(gone) is None, gone
    for f in _files(bench_pkg):
        assert "__main__" not in f.read_text(), f"{f} runs as a program of its own: it belongs in twins-bench"


def test_package_docstrings_say_what_they_hold():
    for pkg in (twins_deploy, exporters_pkg, engines_pkg, bench_pkg):
        doc = (pkg.__doc__ or "").strip()
        assert len(doc) > 60 and "filled in" not in doc, pkg.__name__
