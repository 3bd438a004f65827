"""API conformance of the TensorRT and cuda-python code against real API descriptions.

TensorRT cannot be installed here (its full wheels download from NVIDIA's index), so the
engine code is checked name by name: the builder against the TensorRT 10.13 stubs and
the 11.4 bindings binary, the runtime against the real 11.4 lean runtime module, and the
CUDA layer against the installed cuda-bindings.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from trt_doubles.harness import need
from trt_reference import (ENGINES, RUNTIME_CLASSES, _chain, full_bindings_so, resolves, scan_stubs, stub_text,
                           used_cudart_names, used_trt_names)

RUNTIME_FILES = ("runners/trt.py",)


def _package_files() -> list[Path]:
    import twins_deploy
    import twins_deploy.bench
    import twins_deploy.exporters

    roots = [ENGINES, Path(twins_deploy.__file__).parent, Path(twins_deploy.exporters.__file__).parent,
             Path(twins_deploy.bench.__file__).parent]
    return sorted({f.resolve() for r in roots for f in r.rglob("*.py")})


def _touches_full_tensorrt(tree: ast.AST) -> bool:
    """A module that imports ``tensorrt`` itself, defines or calls ``import_tensorrt``, or
    takes the module as a ``trt`` parameter (``engine_loader(..., trt, ...)``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "tensorrt" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and ((node.module or "").split(".")[0] == "tensorrt"
                                                 or any(a.name == "import_tensorrt" for a in node.names)):
            return True
        if isinstance(node, ast.FunctionDef) and node.name == "import_tensorrt":
            return True
        if isinstance(node, ast.arg) and node.arg == "trt":
            return True
    return False


def _builder_files() -> tuple[str, ...]:
    """Every package module outside the runtime runner that works with the full tensorrt
    module (engines/trt/*, exporters, the CLI and pipeline, bench), as paths under ENGINES
    where they live there."""
    out = []
    for f in _package_files():
        name = str(f.relative_to(ENGINES)) if f.is_relative_to(ENGINES) else str(f)
        if name not in RUNTIME_FILES and _touches_full_tensorrt(ast.parse(f.read_text())):
            out.append(name)
    return tuple(out)


BUILDER_FILES = _builder_files()


def _dynamic_trt_names(*files: str) -> tuple[set[tuple[str, ...]], list[str]]:
    """Names reached by string on the tensorrt module, which the attribute scanner cannot
    see: ``hasattr(trt, "Builder")``, ``getattr(trt.X, "Y")``, and ``getattr(trt.X, TABLE[k])``
    over a module-level dict of names (``HW_LEVELS``); with the calls it could not resolve."""
    chains: set[tuple[str, ...]] = set()
    unresolved: list[str] = []
    for f in files:
        tree = ast.parse((ENGINES / f).read_text())
        tables = {t.id: [v.value for v in node.value.values if isinstance(v, ast.Constant)]
                  for node in tree.body if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                  for t in node.targets if isinstance(t, ast.Name)}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("getattr", "hasattr") and len(node.args) >= 2):
                continue
            owner, key = _chain(node.args[0]), node.args[1]
            if not owner or owner[0] != "trt":
                continue
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                names = [key.value]
            elif isinstance(key, ast.Subscript) and isinstance(key.value, ast.Name) and key.value.id in tables:
                names = tables[key.value.id]
            else:
                unresolved.append(f"{f}:{node.lineno}: {ast.unparse(node)}")
                continue
            chains |= {(*owner[1:], n) for n in names}
    return chains, unresolved


def builder_names() -> tuple[set[tuple[str, str]], set[tuple[str, ...]]]:
    """(class, member) pairs and ``trt.X[.Y]`` chains the builder side uses, by attribute
    and by string."""
    members, chains = used_trt_names(*BUILDER_FILES)
    dynamic, unresolved = _dynamic_trt_names(*BUILDER_FILES)
    assert unresolved == [], "name the TensorRT attribute, or teach _dynamic_trt_names the pattern"
    return members, chains | dynamic


@pytest.fixture(scope="module")
def stubs():
    text = stub_text()
    need(text is not None, "tensorrt-stubs in .venv/trt-reference")
    return scan_stubs(text)


@pytest.fixture(scope="module")
def lean():
    try:
        import tensorrt_lean_bindings as mod
    except ImportError:
        mod = None
    need(mod is not None, "tensorrt-lean-cu12-bindings")
    assert mod.__version__.startswith("11.")
    return mod


@pytest.fixture(scope="module")
def so11():
    data = full_bindings_so()
    need(data is not None, "the tensorrt-cu12-bindings 11.x wheel in .venv/trt-reference")
    return data


def test_scanner_sees_known_api(stubs):
    module, classes = stubs
    assert {"Builder", "OnnxParser", "BuilderFlag", "ICudaEngine"} <= module
    assert "build_serialized_network" in classes["Builder"]
    assert "FP16" in classes["BuilderFlag"] and "STRONGLY_TYPED" in classes["NetworkDefinitionCreationFlag"]
    assert "made_up_method" not in classes["Builder"]
    assert {"__version__", "nptype", "volume"} <= module


def test_code_uses_tensorrt_objects_by_convention():
    members, chains = used_trt_names(*BUILDER_FILES, *RUNTIME_FILES)
    used_classes = {c for c, _ in members}
    # the builder's TensorRT calls are Polygraphy's now: executed under the doubles (test_trt_double.py)
    assert {"Runtime", "ICudaEngine", "IExecutionContext"} <= used_classes
    assert ("IExecutionContext", "execute_async_v3") in members
    assert ("MemoryPoolType", "WORKSPACE") in chains


def test_builder_side_is_found_by_the_scan():
    """The scan finds the modules and the calls it must: a broken scan would make the
    name tests below pass on nothing."""
    assert {"trt/build.py", "trt/env.py", "trt/preflight.py"} <= set(BUILDER_FILES)
    assert not {"trt/compat.py", "trt/trtexec.py"} & set(BUILDER_FILES)  # manifests and options, no TensorRT
    members, chains = builder_names()
    assert {("IBuilderConfig", "create_timing_cache"), ("IBuilderConfig", "set_timing_cache")} <= members
    assert {("MemoryPoolType", "WORKSPACE"), ("Builder",), ("OnnxParser",), ("__version__",),
            ("HardwareCompatibilityLevel", "AMPERE_PLUS"), ("HardwareCompatibilityLevel", "SAME_COMPUTE_CAPABILITY")
            } <= chains


def test_every_builder_name_exists_in_tensorrt_10_stubs(stubs):
    module, classes = stubs
    members, chains = used_trt_names(*RUNTIME_FILES)
    b_members, b_chains = builder_names()
    members, chains = members | b_members, chains | b_chains
    missing = [f"{c}.{m}" for c, m in sorted(members) if m not in classes.get(c, set())]
    for chain in sorted(chains):
        if chain[0] not in module:
            missing.append(".".join(chain))
        elif len(chain) == 2 and chain[1] not in classes.get(chain[0], set()):
            missing.append(".".join(chain))
    assert missing == []


def test_runtime_names_exist_in_the_real_11_4_lean_module(lean):
    members, chains = used_trt_names(*RUNTIME_FILES)
    missing = [f"{c}.{m}" for c, m in sorted(members) if c in RUNTIME_CLASSES and not hasattr(getattr(lean, c), m)]
    missing += [".".join(chain) for chain in sorted(chains) if not resolves(lean, chain)]
    assert missing == []


# Builder-side names our code may use although the 11.x bindings lack them, each with why.
ABSENT_FROM_11 = {
    # TensorRT 11.0 release notes: weak typing removed (BuilderFlag.FP16) and networks are always
    # explicit-batch; reachable only below 11 (through Polygraphy's fp16=/explicit batch, see
    # test_names_removed_in_11_are_not_used_by_the_builder), never by name on the 11.x branch.
    "FP16": "removed in 11.0",
    "EXPLICIT_BATCH": "removed in 11.0",
}


def _bound(so: bytes, name: str) -> bool:
    """pybind11 stores every bound name as a NUL-terminated C string (the linker may store a
    short one as the tail of a longer one, so the test is name + NUL)."""
    return name.encode() + b"\x00" in so


def test_builder_names_exist_in_the_11_4_bindings_binary(so11):
    """Every class, member and ``trt.X.Y`` name the builder side uses (the modules
    :func:`_builder_files` finds, by attribute and by string) is bound in the 11.4 binary,
    but for the commented allow-list; the allow-list names only names really absent."""
    members, chains = builder_names()
    names = {c for c, _ in members} | {m for _, m in members} | {p for chain in chains for p in chain}
    assert len(names) >= 10
    absent = sorted(n for n in names if not _bound(so11, n))
    assert [n for n in absent if n not in ABSENT_FROM_11] == []
    assert [n for n in ABSENT_FROM_11 if _bound(so11, n)] == []  # a bound name needs no allowance


def test_names_removed_in_11_are_confirmed_absent_there(lean):
    flags = set(lean.BuilderFlag.__members__)
    assert "TF32" in flags and "VERSION_COMPATIBLE" in flags
    assert "FP16" not in flags and "INT8" not in flags  # weak typing is gone in 11
    assert "AMPERE_PLUS" in lean.HardwareCompatibilityLevel.__members__


def _guards(tree: ast.AST, attr: str) -> list[str]:
    """The source of every enclosing ``if`` test around each use of ``.attr``."""
    found = []

    def visit(node: ast.AST, tests: list[str]) -> None:
        if isinstance(node, ast.Attribute) and node.attr == attr:
            found.append(" and ".join(tests))
        for child in ast.iter_child_nodes(node):
            visit(child, tests + [ast.unparse(node.test)] if isinstance(node, ast.If) and child in node.body else tests)

    visit(tree, [])
    return found


def test_names_removed_in_11_are_not_used_by_the_builder():
    """FP16/EXPLICIT_BATCH are reached only through Polygraphy (fp16=, explicit batch below
    10), never by name in our builder; the 11.x double refuses them (test_trt_double.py)."""
    tree = ast.parse((ENGINES / "trt/build.py").read_text())
    attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert not attrs & {"FP16", "EXPLICIT_BATCH", "BF16", "INT8"}


def test_cuda_runtime_names_exist_in_cuda_bindings():
    try:
        from cuda.bindings import runtime as rt
    except ImportError:
        rt = None
    need(rt is not None, "cuda-bindings")
    used = used_cudart_names("trt/cuda.py", "trt/env.py")
    assert ("cudaMalloc",) in used and ("cudaMemcpyKind", "cudaMemcpyHostToDevice") in used
    assert [".".join(chain) for chain in sorted(used) if not resolves(rt, chain)] == []


def test_ci_fails_instead_of_skipping_a_missing_reference(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="may not be skipped in CI"):
        need(False, "a reference")
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception):
        need(False, "a reference")


def test_doubles_are_unreachable_from_the_package():
    import twins_deploy

    roots = [Path(twins_deploy.__file__).parent, ENGINES, Path(__import__("twins_deploy.exporters").exporters.__file__).parent, Path(__import__("twins_deploy.bench").bench.__file__).parent]
    users = [str(f) for r in roots for f in r.rglob("*.py") if "trt_doubles" in f.read_text()]
    assert users == []


def test_polygraphy_loaders_used_by_the_builder_exist():
    """build.py reaches TensorRT through these Polygraphy loaders (``pg.X``), and the
    installed Polygraphy has each one."""
    import polygraphy.backend.trt as pg

    tree = ast.parse((ENGINES / "trt/build.py").read_text())
    used = {c[1] for n in ast.walk(tree) if isinstance(n, ast.Attribute) and (c := _chain(n)) and c[0] == "pg"}
    assert {"NetworkFromOnnxPath", "CreateConfig", "EngineBytesFromNetwork", "Profile"} <= used
    assert sorted(n for n in used if not hasattr(pg, n)) == []


def test_builder_names_used_by_polygraphy_path_exist_in_11_4_binary(so11, monkeypatch, tmp_path):
    """Every TensorRT class and member Polygraphy called for our builds under the 11.x double
    (whose surface is the 11.1 sources) is also bound in the 11.4 binary."""
    from test_trt_build_reports import _tiny_onnx
    from trt_doubles import harness
    from twins_deploy.engines.trt.build import build_engine
    from twins_deploy.engines.trt.options import TrtBuildOptions
    from twins_deploy.engines.trt.profile import Profile
    from twins_deploy.precision import PrecisionPlan

    doubles = harness.install(monkeypatch, "11")
    onnx = _tiny_onnx(tmp_path / "m.onnx")
    shapes = Profile("input", (1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 8, 8))
    cache = str(tmp_path / "c.timing-cache")
    for opts, plan in [(TrtBuildOptions(timing_cache=cache), PrecisionPlan()),  # twice: the cache is loaded
                       (TrtBuildOptions(timing_cache=cache, hw_compat="ampere+", version_compat=True, tf32=True,
                                        opt_level=5), PrecisionPlan("fp16", "strong"))]:
        build_engine(onnx, shapes, opts, plan)
    called = {part for name, _ in doubles.trt.calls for part in name.rstrip("=").split(".")}
    assert {"Builder", "create_network", "OnnxParser", "parse_from_file", "create_builder_config", "set_flag",
            "set_memory_pool_limit", "add_optimization_profile", "set_shape", "builder_optimization_level",
            "hardware_compatibility_level", "create_timing_cache", "set_timing_cache", "get_timing_cache",
            "build_serialized_network", "combine", "serialize"} <= called
    assert sorted(n for n in called if not _bound(so11, n)) == []
