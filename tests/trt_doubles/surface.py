"""TensorRT's Python surface per version, read from NVIDIA's own descriptions.

One shape for every source (``dict``): ``classes[name] = {bases, init, methods, static,
properties, enum, exported, attrs}``, ``functions[name] = [overload, ...]`` and
``module_attrs[name] = "Enum.MEMBER" | None``; an overload is ``{"params": [names] | None,
"required": n, "positional_only": bool}`` (``params`` None: positional arguments of
unknown count). Sources:

* 8.6 and 11.x: the binding sources of github.com/NVIDIA/TensorRT at a release tag,
  extracted by ``extract_surface.py`` into ``data/trt-<version>.json`` (origin, tag and
  commit recorded in the file);
* 10.x: the TensorRT 10.13 type stubs (``tensorrt-stubs``, installed by ``make setup``);
* 11.4: the real lean runtime module (``tensorrt_lean_bindings``), introspected: its
  classes replace the 11.1 source's for the runtime (names, writable properties, enum
  members, and each overload's signature from pybind11's docstrings).
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

DATA = Path(__file__).parent / "data"
Surface = dict[str, Any]


def load_json(version: str) -> Surface:
    return json.loads((DATA / f"trt-{version}.json").read_text())


# -- Python signatures (stubs and pybind11 docstrings) ---------------------------------------
def _split_top(s: str) -> list[str]:
    out, depth, cur = [], 0, []
    for c in s:
        if c in "([{<":
            depth += 1
        elif c in ")]}>":
            depth -= 1
        if c == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


def parse_params(text: str, drop_self: bool) -> dict[str, Any]:
    """``a: int, b: str = ...`` -> overload dict (``*args``/``**kwargs`` make it open)."""
    names, required, optional = [], 0, False
    parts = _split_top(text)
    if drop_self and parts and re.match(r"^(self|this)\b", parts[0]):
        parts = parts[1:]
    for p in parts:
        if p in ("/", "*"):
            continue
        if p.startswith("*"):
            return {"params": None, "required": None}
        name = re.match(r"^(\w+)", p).group(1)  # type: ignore[union-attr]
        names.append(name)
        if "=" in p:
            optional = True
        elif not optional:
            required += 1
    if names and all(re.match(r"arg\d+$", n) for n in names):  # pybind11's names for unannotated arguments
        return {"params": names, "required": required, "positional_only": True}
    return {"params": names, "required": required}


def _empty_class() -> dict[str, Any]:
    return {"bases": [], "init": [], "methods": {}, "static": {}, "properties": {}, "enum": None, "attrs": []}


def from_stubs(text: str, init_text: str = "") -> Surface:
    """Read a pybind11-stubgen ``.pyi`` line by line (the generated file is not valid Python
    everywhere, e.g. a required parameter after defaults, so ``ast`` cannot read it)."""
    classes: dict[str, dict[str, Any]] = {}
    functions: dict[str, list[dict[str, Any]]] = {}
    module_attrs: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    decorators: list[str] = []
    classvars: dict[str, list[tuple[str, str]]] = {}
    in_doc = False
    for line in text.splitlines():
        if in_doc:
            in_doc = '"""' not in line
            continue
        if line.strip().startswith('"""'):
            in_doc = line.count('"""') == 1
            continue
        if not line.strip() or line.strip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        while stack and indent <= stack[-1][0]:
            stack.pop()
        owner = stack[-1][1] if stack else None
        if owner is not None and owner not in classes:
            continue  # a function's body
        s = line.strip()
        if s.startswith("@"):
            decorators.append(s[1:])
            continue
        m = re.match(r"^class (\w+)(?:\((.*)\))?:", s)
        if m:
            name = f"{owner}.{m.group(1)}" if owner else m.group(1)
            c = classes.setdefault(name, _empty_class())
            c["bases"] = [b.strip().split(".")[-1] for b in (m.group(2) or "").split(",")
                          if b.strip() and b.strip() not in ("object",) and not b.strip().startswith("pybind11")]
            stack.append((indent, name))
            decorators = []
            continue
        m = re.match(r"^def (\w+)\((.*)\)(?:\s*->.*)?:", s)
        if m:
            fname, params = m.group(1), m.group(2)
            if owner is None:
                functions.setdefault(fname, []).append(parse_params(params, drop_self=False))
            else:
                c = classes[owner]
                if "property" in decorators:
                    c["properties"][fname] = "r"
                elif any(d.endswith(".setter") for d in decorators):
                    c["properties"][fname] = "rw"
                elif "staticmethod" in decorators and fname not in ("__enter__", "__exit__"):
                    c["static"].setdefault(fname, []).append(parse_params(params, drop_self=False))
                elif fname == "__init__":
                    c["init"].append(parse_params(params, drop_self=True))
                elif fname in ("__enter__", "__exit__"):
                    c["attrs"].append(fname)
                else:
                    c["methods"].setdefault(fname, []).append(parse_params(params, drop_self=True))
            decorators = []
            stack.append((indent, f"{owner}.{fname}" if owner else fname))  # swallow the body
            continue
        value = re.search(r"#\s*value = <(\w+)\.(\w+):", s)
        m = re.match(r"^(\w+): ([^#]*?)\s*(?:#.*)?$", s)
        if m and not s.startswith(('"""', "'")):
            attr, typ = m.group(1), m.group(2)
            if owner is None:
                if attr != "__version__":
                    module_attrs[attr] = f"{value.group(1)}.{value.group(2)}" if value else None
            elif owner in classes:
                cv = re.match(r"typing\.ClassVar\[(.*)\]$", typ)
                if cv:
                    classvars.setdefault(owner, []).append((attr, cv.group(1)))
                else:
                    classes[owner]["properties"][attr] = "rw"
        decorators = []
    for owner, cvs in classvars.items():
        c = classes[owner]
        names = {a for a, _ in cvs}
        if "__members__" in names:
            c["enum"] = [a for a, t in cvs if a != "__members__" and t.split(".")[-1] == owner.split(".")[-1]]
            c["methods"], c["init"] = {}, []  # an enum: int-like, see fake_trt
            c["properties"] = {k: v for k, v in c["properties"].items() if k not in ("name", "value", "__members__")}
        else:
            c["exported"] = [a for a, t in cvs if not a.startswith("_")]
    for m in re.finditer(r"^(\w+)\s*=", init_text, re.M):
        module_attrs.setdefault(m.group(1), None)
    for m in re.finditer(r"^from tensorrt_bindings import (\w+)$", init_text, re.M):
        if m.group(1) not in functions and m.group(1) not in classes:
            functions.setdefault(m.group(1), [{"params": None, "required": None}])
    module_attrs["__version__"] = None
    return {"classes": classes, "functions": functions, "module_attrs": module_attrs}


def _doc_overloads(doc: str | None, name: str) -> list[dict[str, Any]]:
    """Overloads from a pybind11 docstring: ``name(self: X, a: T, b: T = ...) -> R``."""
    out = []
    for m in re.finditer(rf"(?:^|\n)(?:\d+\. )?{re.escape(name)}\((.*?)\)(?: -> [^\n]*)?\n", (doc or "") + "\n"):
        if m.group(1) in ("*args, **kwargs",):
            continue
        out.append(parse_params(m.group(1), drop_self=True))
    return out or [{"params": None, "required": None}]


def from_module(mod: ModuleType) -> Surface:
    """The surface of a real, importable TensorRT module (the 11.4 lean runtime)."""
    classes: dict[str, dict[str, Any]] = {}

    def visit(cls: type, name: str) -> None:
        c = classes.setdefault(name, _empty_class())
        c["bases"] = [b.__name__ for b in cls.__bases__ if b.__module__ == cls.__module__]
        members = getattr(cls, "__members__", None)
        if isinstance(members, dict):
            c["enum"] = list(members)
        for attr, val in vars(cls).items():
            if isinstance(val, property):
                if members is not None:
                    continue
                c["properties"][attr] = ("r" if val.fget else "") + ("w" if val.fset else "")
            elif isinstance(val, staticmethod):
                c["static"][attr] = _doc_overloads(val.__func__.__doc__, attr)
            elif attr == "__init__":
                if re.search(r"__init__\(self", getattr(val, "__doc__", "") or ""):
                    c["init"] = _doc_overloads(val.__doc__, "__init__")
            elif isinstance(val, type):
                visit(val, f"{name}.{attr}")
            elif callable(val) and "instancemethod" in type(val).__name__:
                if members is None and attr != "_pybind11_conduit_v1_" and attr not in ("__setstate__", "__getstate__", "__repr__", "__str__", "__int__", "__index__",
                                "__eq__", "__ne__", "__hash__"):
                    c["methods"][attr] = _doc_overloads(val.__doc__, attr)
            elif members is not None and attr in members:
                pass
            elif members is None and not attr.startswith("__") and not callable(val):
                c.setdefault("exported", []).append(attr)
        if "__enter__" in vars(cls):
            c["attrs"] += ["__enter__", "__exit__"]

    for attr in dir(mod):
        val = getattr(mod, attr)
        if isinstance(val, type) and val.__module__.startswith(mod.__name__):
            visit(val, attr)
    return {"classes": classes, "functions": {}, "module_attrs": {}}


def overlay(base: Surface, top: Surface, names: set[str]) -> Surface:
    """``base`` with the classes ``names`` (and their nested ones) taken from ``top``."""
    out = copy.deepcopy(base)
    for name, cls in top["classes"].items():
        if name.split(".")[0] in names:
            out["classes"][name] = copy.deepcopy(cls)
    return out
