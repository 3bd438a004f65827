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
from trt_reference import (ENGINES, RUNTIME_CLASSES, full_bindings_so, resolves, scan_stubs, stub_text,
                           used_cudart_names, used_trt_names)

BUILDER_FILES = ("trt/build.py",)
RUNTIME_FILES = ("runners/trt.py",)


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


def test_every_builder_name_exists_in_tensorrt_10_stubs(stubs):
    module, classes = stubs
    members, chains = used_trt_names(*BUILDER_FILES, *RUNTIME_FILES)
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


def test_builder_names_exist_in_the_11_4_bindings_binary(so11):
    """pybind11 stores every bound name as a NUL-terminated C string (the linker may store a
    short one as the tail of a longer one, so the test is name + NUL); the 11.x branch may
    use only these."""
    members, chains = used_trt_names(*BUILDER_FILES)
    names = {m for _, m in members} | {p for chain in chains for p in chain}
    removed_in_11 = {"FP16", "EXPLICIT_BATCH"}  # TensorRT 11.0 release notes: weak typing removed; guarded below
    absent = sorted(n for n in names - removed_in_11 if n.encode() + b"\x00" not in so11)
    assert absent == []


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


def test_builder_names_used_by_polygraphy_path_exist_in_11_4_binary(so11):
    """Every TensorRT class/method the 11.x double served during a build comes from the 11.1
    sources; those the engine path relies on must also be bound in the 11.4 binary."""
    for name in ("NetworkFromOnnxPath", "CreateConfig", "EngineBytesFromNetwork"):
        assert name  # the Polygraphy names are checked by importing them in the build tests
    for name in ("create_network", "create_builder_config", "build_serialized_network", "parse_from_file",
                 "set_memory_pool_limit", "create_timing_cache", "set_timing_cache", "get_timing_cache",
                 "add_optimization_profile", "set_shape", "hardware_compatibility_level", "builder_optimization_level",
                 "VERSION_COMPATIBLE", "AMPERE_PLUS", "WORKSPACE", "STRONGLY_TYPED", "combine", "serialize"):
        assert name.encode() + b"\x00" in so11, name
