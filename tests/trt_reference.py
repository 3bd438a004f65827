"""Readers for TensorRT's API descriptions and for the names our engine code uses.

Sources (installed by ``make setup``/``make test``):
* the real TensorRT 11.4 runtime module, ``tensorrt_lean_bindings`` (imports without a GPU);
* ``tensorrt-stubs`` 10.13 (.pyi of the full 10.x API), under ``.venv/trt-reference/stubs``;
* the TensorRT 11.4 full bindings wheel (its ``tensorrt.so``, unloadable without the
  libraries, still names every bound class, method and enum member), under
  ``.venv/trt-reference/wheels``.
"""
from __future__ import annotations

import ast
import re
import sys
import zipfile
from pathlib import Path

import twins_deploy.engines as engines_pkg

ENGINES = Path(engines_pkg.__file__).parent
REF = Path(sys.prefix) / "trt-reference"

# Variable names bound to TensorRT objects in engines/ (the convention the code follows).
RECEIVERS = {
    "builder": "Builder", "network": "INetworkDefinition", "parser": "OnnxParser",
    "config": "IBuilderConfig", "profile": "IOptimizationProfile", "cache": "ITimingCache",
    "err": "ParserError", "runtime": "Runtime", "engine": "ICudaEngine", "context": "IExecutionContext",
}
RUNTIME_CLASSES = {"Runtime", "ICudaEngine", "IExecutionContext"}


def stub_text() -> str | None:
    """The bindings' .pyi plus the package ``tensorrt/__init__.pyi`` (``__version__``,
    ``nptype``, ``volume`` are re-exported there)."""
    files = [REF / "stubs" / "tensorrt_bindings" / "tensorrt.pyi", REF / "stubs" / "tensorrt" / "__init__.pyi"]
    if not all(f.is_file() for f in files):
        return None
    return "\n".join(f.read_text() for f in files)


def full_bindings_so() -> bytes | None:
    wheels = sorted((REF / "wheels").glob("tensorrt_cu12_bindings-11.*.whl"))
    if not wheels:
        return None
    with zipfile.ZipFile(wheels[-1]) as z:
        return z.read("tensorrt_bindings/tensorrt.so")


def scan_stubs(text: str) -> tuple[set[str], dict[str, set[str]]]:
    """Module-level names and per-class members of a .pyi, tolerant of its syntax slips
    (e.g. a parameter named ``in``), which is why this is a line scanner and not ast."""
    module: set[str] = set()
    classes: dict[str, set[str]] = {}
    current: set[str] | None = None
    for line in text.splitlines():
        top = re.match(r"^class (\w+)", line)
        if top:
            module.add(top.group(1))
            current = classes.setdefault(top.group(1), set())
            continue
        if line and not line[0].isspace():
            current = None
            m = re.match(r"^from \S+ import (\w+)$", line) or re.match(r"^(?:def )?(\w+)", line)
            if m:
                module.add(m.group(1))
            continue
        if current is not None:
            m = re.match(r"^\s+(?:def |class )?(\w+)\s*[:(=]", line)
            if m:
                current.add(m.group(1))
    return module, classes


def _chain(node: ast.AST) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return None


def used_trt_names(*files: str) -> tuple[set[tuple[str, str]], set[tuple[str, ...]]]:
    """(class, member) pairs used on TensorRT objects, and ``trt.X[.Y]`` chains."""
    members: set[tuple[str, str]] = set()
    chains: set[tuple[str, ...]] = set()
    for f in files:
        tree = ast.parse((ENGINES / f).read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            chain = _chain(node)
            if not chain:
                continue
            if chain[0] == "trt" and len(chain) >= 2:
                chains.add(tuple(chain[1:3]))
            elif len(chain) == 2 and chain[0] in RECEIVERS:
                members.add((RECEIVERS[chain[0]], chain[1]))
            elif len(chain) == 3 and chain[0] == "self" and chain[1] in RECEIVERS:
                members.add((RECEIVERS[chain[1]], chain[2]))
    return members, chains


def used_cudart_names(*files: str) -> set[tuple[str, ...]]:
    """Names used on the cuda-python runtime module (``rt.X`` or ``cudart().X``)."""
    out: set[tuple[str, ...]] = set()
    for f in files:
        for node in ast.walk(ast.parse((ENGINES / f).read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            chain = _chain(node)
            if chain and chain[0] == "rt" and len(chain) >= 2:
                out.add(tuple(chain[1:]))
            base = node.value
            if isinstance(base, ast.Call) and isinstance(base.func, ast.Name) and base.func.id == "cudart":
                out.add((node.attr,))
    return out


def resolves(obj: object, chain: tuple[str, ...]) -> bool:
    """Whether ``obj.a.b...`` exists for ``chain == (a, b, ...)``."""
    for part in chain:
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True
