"""API conformance of the TensorRT and cuda-python code against real API descriptions.

TensorRT cannot be installed here (its full wheels download from NVIDIA's index), so the
engine code is checked name by name: the builder against the TensorRT 10.13 stubs and
the 11.4 bindings binary, the runtime against the real 11.4 lean runtime module, and the
CUDA layer against the installed cuda-bindings.
"""
from __future__ import annotations

import ast
import re

import pytest

from trt_reference import (ENGINES, RUNTIME_CLASSES, full_bindings_so, resolves, scan_stubs, stub_text,
                           used_cudart_names, used_trt_names)

BUILDER_FILES = ("trt/build.py",)
RUNTIME_FILES = ("runners/trt.py",)


@pytest.fixture(scope="module")
def stubs():
    text = stub_text()
    if text is None:
        pytest.skip("tensorrt-stubs not installed in .venv/trt-reference (make setup installs them)")
    return scan_stubs(text)


@pytest.fixture(scope="module")
def lean():
    mod = pytest.importorskip("tensorrt_lean_bindings", reason="tensorrt-lean-cu12-bindings not installed")
    assert mod.__version__.startswith("11.")
    return mod


@pytest.fixture(scope="module")
def so11():
    data = full_bindings_so()
    if data is None:
        pytest.skip("tensorrt-cu12-bindings 11.x wheel not in .venv/trt-reference (make setup downloads it)")
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
    assert {"Builder", "IBuilderConfig", "OnnxParser", "Runtime", "ICudaEngine", "IExecutionContext"} <= used_classes
    assert ("IExecutionContext", "execute_async_v3") in members
    assert ("BuilderFlag", "TF32") in chains


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


def test_names_removed_in_11_are_only_used_on_older_versions():
    tree = ast.parse((ENGINES / "trt/build.py").read_text())
    explicit = _guards(tree, "EXPLICIT_BATCH")
    assert explicit and all(re.search(r"major < 10", g) for g in explicit)
    fp16 = _guards(tree, "FP16")
    assert fp16 and all("route == 'weak'" in g for g in fp16)


def test_cuda_runtime_names_exist_in_cuda_bindings():
    rt = pytest.importorskip("cuda.bindings.runtime", reason="cuda-bindings not installed")
    used = used_cudart_names("trt/cuda.py", "trt/env.py")
    assert ("cudaMalloc",) in used and ("cudaMemcpyKind", "cudaMemcpyHostToDevice") in used
    assert [".".join(chain) for chain in sorted(used) if not resolves(rt, chain)] == []
