"""Extract the Python surface of TensorRT from NVIDIA's pybind11 binding sources.

Run by hand (it reads a clone of github.com/NVIDIA/TensorRT; nothing here runs in the
test suite)::

    python tests/trt_doubles/extract_surface.py /path/to/TensorRT v8.6.1 8.6.1 \
        > tests/trt_doubles/data/trt-8.6.1.json

It reads, at the given tag, every ``python/src/**/*.cpp`` (pyCore, pyFoundationalTypes,
pyGraph, pyPlugin, pyOnnx, ...) and the package's ``tensorrt/__init__.py``, and records:

* classes (with their bound base classes), their constructors, methods, static methods
  and properties (read-only / read-write / write-only);
* enums and their members (nested enums too; ``export_values`` copies members onto the
  enclosing class);
* for every callable, each overload's parameter names from ``"x"_a`` / ``py::arg("x")``
  and how many are required (those without ``= default``). A callable bound without
  argument annotations takes positional-only arguments: their count comes from the
  lambda's parameter list when the callable is a lambda of the file, and is recorded as
  unknown (``null``) for a C++ member-function pointer;
* module attributes (``m.attr``), module functions (``m.def``) and what the package's
  ``__init__.py`` adds (``__version__``, ``nptype``, ``volume``, ``__enter__``/``__exit__``
  on some classes, ``Logger.<severity>``, ``DataType.itemsize``).

Everything inside ``#if`` blocks is included (the full bindings export them all).
"""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from typing import Any

OPEN, CLOSE = "([{", ")]}"


def strip_comments(src: str) -> str:
    """Remove // and /* */ comments, keeping string literals intact."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            out.append(src[i:j + 1])
            i = j + 1
        elif src.startswith("//", i):
            i = src.find("\n", i)
            i = n if i < 0 else i
        elif src.startswith("/*", i):
            i = src.find("*/", i + 2) + 2
        elif c == "'":
            j = src.find("'", i + 1)
            out.append(src[i:j + 1])
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def matching(src: str, i: int) -> int:
    """Index just past the bracket that closes the one at ``src[i]`` (strings skipped;
    angle brackets are not tracked)."""
    depth, n = 0, len(src)
    while i < n:
        c = src[i]
        if c == '"':
            i += 1
            while src[i] != '"':
                i += 2 if src[i] == "\\" else 1
        elif c in OPEN:
            depth += 1
        elif c in CLOSE:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError("unbalanced brackets")


def split_args(s: str) -> list[str]:
    """Top-level comma split of an argument list (brackets, strings and template angle
    brackets outside lambda bodies respected)."""
    parts, depth, angle, cur, i = [], 0, 0, [], 0
    while i < len(s):
        c = s[i]
        if c == '"':
            j = i + 1
            while s[j] != '"':
                j += 2 if s[j] == "\\" else 1
            cur.append(s[i:j + 1])
            i = j + 1
            continue
        if c in OPEN:
            depth += 1
        elif c in CLOSE:
            depth -= 1
        elif depth == 0 and s.startswith("<<", i):
            cur.append("<<")
            i += 2
            continue
        elif depth == 0 and c == "<" and i > 0 and (s[i - 1].isalnum() or s[i - 1] in "_:>"):
            angle += 1
        elif depth == 0 and c == ">" and angle and s[i - 1] != "-":
            angle -= 1
        if c == "," and depth == 0 and angle == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


ARG_RE = re.compile(r'^(?:"(\w+)"_a|py::arg\("(\w+)"\))\s*(=)?')


HEADER_ARITY: dict[str, int | None] = {}  # "IBuilder::createBuilderConfig" -> 0, filled from include/*.h


def header_arities(headers: list[str]) -> dict[str, int | None]:
    """Parameter counts of the C++ interface methods declared in the public headers, per
    ``Class::method`` (None where overloads disagree)."""
    out: dict[str, int | None] = {}
    for text in headers:
        text = strip_comments(text)
        for cm in re.finditer(r"\bclass\s+(\w+)\s*(?::[^{;]*)?\{", text):
            start = cm.end() - 1
            try:
                body = text[start:matching(text, start)]
            except (ValueError, IndexError):
                continue
            for mm in re.finditer(r"\b(\w+)\s*\(", body):
                name = mm.group(1)
                if not re.match(r"[a-z]", name) or name in ("noexcept", "sizeof", "return", "if", "static_cast"):
                    continue
                pre = body[max(0, mm.start() - 120):mm.start()].split("\n")[-1]
                if not re.search(r"[\w>\*&]\s+$", pre) or re.search(r"\b(return|=|\.|->)\s*\w*\s*$", pre):
                    continue
                try:
                    end = matching(body, mm.end() - 1)
                except (ValueError, IndexError):
                    continue
                inner = body[mm.end():end - 1].strip()
                n = 0 if not inner or inner == "void" else len(split_args(inner))
                key = f"{cm.group(1)}::{name}"
                out[key] = n if out.get(key, n) == n else None
    return out


def lambda_arity(expr: str, lambdas: dict[str, int]) -> int | None:
    """Number of parameters of a callable expression (self included for a lambda, not
    for a member function), or None when it cannot be known."""
    for cls_name, meth in [c for c in re.findall(r"&(?:nvinfer1::|nvonnxparser::)?(\w+)::(\w+)", expr)
                           if c[0] not in ("lambdas", "utils", "pyonnx2trt")][:1]:
        n = HEADER_ARITY.get(f"{cls_name}::{meth}")
        return None if n is None else n + 1  # + self, as for lambdas
    m = re.search(r"\[[^\]]*\]\s*\(", expr)
    if m and expr.lstrip().startswith("["):
        start = m.end() - 1
        inner = expr[start + 1:matching(expr, start) - 1].strip()
        return 0 if not inner or inner == "void" else len(split_args(inner))
    for name in re.findall(r"lambdas::(\w+)", expr) + re.findall(r"^&?(\w+)$", expr.strip()):
        if name in lambdas:
            return lambdas[name]
    return None


def find_lambdas(src: str) -> dict[str, int]:
    """Parameter counts of the named lambdas/free functions a binding file defines."""
    out: dict[str, int] = {}
    for m in re.finditer(r"\b(\w+)\s*(?:=\s*\[[^\]]*\]\s*)?\(", src):
        name = m.group(1)
        if name in out or name in ("if", "for", "while", "switch", "return", "sizeof", "static_cast",
                                   "reinterpret_cast", "const_cast", "catch", "PY_ASSERT_RUNTIME_ERROR"):
            continue
        before = src[max(0, m.start() - 200):m.start()]
        is_lambda = "[" in m.group(0)
        # a definition: preceded by a type at line start (function) or `auto const` (lambda)
        line = before.split("\n")[-1]
        if not is_lambda and not re.match(r"^\s*(?:static\s+|inline\s+)*[\w:<>,\s\*&]+[\s\*&]$", line):
            continue
        if not is_lambda and re.match(r"^\s*(?:return|else|case|new|delete)\b", line):
            continue
        start = m.end() - 1
        try:
            end = matching(src, start)
        except (ValueError, IndexError):
            continue
        rest = src[end:end + 80].lstrip()
        if not is_lambda and not (rest.startswith("{") or rest.startswith("->") or rest.startswith("noexcept")
                                  or rest.startswith("const")):
            continue
        inner = src[start + 1:end - 1].strip()
        out[name] = 0 if not inner or inner == "void" else len(split_args(inner))
    return out


def callable_sig(args: list[str], lambdas: dict[str, int], has_self: bool) -> dict[str, Any]:
    """One overload: parameter names (None: positional-only, count unknown) and the
    number required."""
    names, required, optional_seen = [], 0, False
    for a in args[1:]:
        m = ARG_RE.match(a)
        if m:
            names.append(m.group(1) or m.group(2))
            if m.group(3):
                optional_seen = True
            elif not optional_seen:
                required += 1
    if names:
        return {"params": names, "required": required}
    n = lambda_arity(args[0], lambdas) if args else None
    if n is None:
        return {"params": None, "required": None}
    n -= 1 if has_self else 0
    return {"params": [f"arg{i}" for i in range(max(n, 0))], "required": max(n, 0), "positional_only": True}


def init_sig(expr: str, args: list[str], lambdas: dict[str, int]) -> dict[str, Any]:
    m = re.match(r"py::init<(.*)>\(\)$", expr.strip(), re.S)
    sig = callable_sig([""] + args, lambdas, has_self=False)
    if sig["params"]:
        return sig
    if m:
        inner = m.group(1).strip()
        n = len(split_args(inner)) if inner else 0
        return {"params": [f"arg{i}" for i in range(n)], "required": n, "positional_only": True}
    m = re.match(r"py::init\((.*)\)$", expr.strip(), re.S)
    if m:
        n = lambda_arity(m.group(1), lambdas)
        if n is not None:
            return {"params": [f"arg{i}" for i in range(n)], "required": n, "positional_only": True}
    return {"params": None, "required": None}


class Surface:
    def __init__(self) -> None:
        self.classes: dict[str, dict[str, Any]] = {}
        self.cpp_to_py: dict[str, str] = {}
        self.enum_values: dict[str, str] = {}  # "DataType::kFLOAT" -> "DataType.FLOAT"
        self.module_attrs: dict[str, str | None] = {}
        self.functions: dict[str, list[dict[str, Any]]] = {}

    def cls(self, name: str) -> dict[str, Any]:
        return self.classes.setdefault(name, {"bases": [], "init": [], "methods": {}, "static": {},
                                              "properties": {}, "enum": None, "attrs": []})


def parse_chain(s: Surface, src: str, pos: int, target: str, lambdas: dict[str, int], cpp: str) -> int:
    """Read ``.def(...)``/``.value(...)``... calls from ``pos`` onto class ``target``."""
    c = s.cls(target)
    while True:
        m = re.compile(r"\s*\.\s*(\w+)\s*\(").match(src, pos)
        if not m:
            return pos
        kind = m.group(1)
        end = matching(src, m.end() - 1)
        args = split_args(src[m.end():end - 1])
        pos = end
        name_m = re.match(r'^"([^"]+)"$', args[0]) if args else None
        name = name_m.group(1) if name_m else None
        if kind == "def" and args and args[0].startswith("py::init"):
            c["init"].append(init_sig(args[0], args[1:], lambdas))
        elif kind in ("def", "def_static") and name:
            sig = callable_sig(args[1:], lambdas, has_self=kind == "def")
            c["methods" if kind == "def" else "static"].setdefault(name, []).append(sig)
        elif kind in ("def_property", "def_property_readonly", "def_readonly", "def_readwrite",
                      "def_property_readonly_static", "def_property_static") and name:
            if kind in ("def_property_readonly", "def_readonly", "def_property_readonly_static"):
                mode = "r"
            elif kind == "def_readwrite":
                mode = "rw"
            else:
                getter = args[1].strip() if len(args) > 1 else ""
                setter = args[2].strip() if len(args) > 2 else ""
                mode = ("w" if getter == "nullptr" else "r") + ("w" if setter and setter != "nullptr" else "")
                mode = "rw" if mode == "rww" else mode
            c["properties"][name] = mode
        elif kind == "value" and name:
            c["enum"] = (c["enum"] or []) + [name]
            if len(args) > 1:
                s.enum_values[args[1].strip()] = f"{target}.{name}"
        elif kind == "export_values":
            c["export_values"] = True
        elif kind == "attr" and name:
            c["attrs"].append(name)


def parse_file(s: Surface, src: str) -> None:
    # preprocessor lines may split a binding chain (`#if ENABLE_INETWORK_SERIALIZE`): drop
    # the directives, keep what they guard
    src = re.sub(r"(?m)^\s*#\s*(if|ifdef|ifndef|else|elif|endif)\b.*$", "", strip_comments(src))
    lambdas = find_lambdas(src)
    var_to_class: dict[str, str] = {}
    for m in re.finditer(r"py::(class_|enum_)<", src):
        i = m.end()
        depth = 1
        while depth:
            depth += {"<": 1, ">": -1}.get(src[i], 0)
            i += 1
        tmpl = split_args(src[m.end():i - 1])
        rest = re.compile(r"\s*(\w+)?\s*([({])").match(src, i)
        if not rest:
            continue
        var = rest.group(1)
        open_at = rest.end() - 1
        close = matching(src, open_at)
        cargs = split_args(src[open_at + 1:close - 1])
        if len(cargs) < 2 or not re.match(r'^"\w+"$', cargs[1]):
            continue
        py_name = cargs[1].strip('"')
        scope = cargs[0].strip()
        cpp = tmpl[0].strip()
        if scope != "m" and scope in var_to_class:
            py_name_full = f"{var_to_class[scope]}.{py_name}"
        else:
            py_name_full = py_name
        s.cpp_to_py[cpp] = py_name_full
        c = s.cls(py_name_full)
        if m.group(1) == "enum_":
            c["enum"] = c["enum"] or []
        c["bases_cpp"] = [t.strip() for t in tmpl[1:]]
        if var:
            var_to_class[var] = py_name_full
        parse_chain(s, src, close, py_name_full, lambdas, cpp)
    # statements continuing a class held in a variable: `var.def(...)...;`
    for var, name in var_to_class.items():
        for m in re.finditer(rf"\b{var}\s*(?=\.\s*def)", src):
            parse_chain(s, src, m.end(), name, lambdas, "")
    for m in re.finditer(r'\bm\.attr\("(\w+)"\)\s*=\s*([^;]+);', src):
        s.module_attrs[m.group(1)] = m.group(2).strip()
    for m in re.finditer(r'\bm\.def\(', src):
        end = matching(src, m.end() - 1)
        args = split_args(src[m.end():end - 1])
        if args and re.match(r'^"\w+"$', args[0]):
            s.functions.setdefault(args[0].strip('"'), []).append(callable_sig(args[1:], lambdas, has_self=False))


def finish(s: Surface) -> None:
    for name, c in s.classes.items():
        c["bases"] = [s.cpp_to_py[b] for b in c.pop("bases_cpp", []) if b in s.cpp_to_py]
        if c.get("export_values") and "." in name:
            owner = s.classes[name.rsplit(".", 1)[0]]
            owner["exported"] = sorted(set(owner.get("exported", [])) | set(c["enum"] or []))
    s.module_attrs = {k: s.enum_values.get(v, None) for k, v in s.module_attrs.items()}


def parse_init_py(s: Surface, text: str) -> None:
    """What the package's ``__init__.py`` adds on top of the compiled module."""
    text = text.replace("##TENSORRT_MODULE##", "tensorrt").replace("##TENSORRT_PYTHON_VERSION##", "0")
    tree = ast.parse(re.sub(r"##\w+##", "False", text))  # remaining build-time placeholders
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            a = node.args
            params = [p.arg for p in a.args]
            s.functions[node.name] = [{"params": params, "required": len(params) - len(a.defaults)}]
        targets = node.targets if isinstance(node, ast.Assign) else []
        for t in targets:
            if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id in s.classes:
                s.classes[t.value.id]["attrs"].append(t.attr)
            elif isinstance(t, ast.Name) and t.id == "__version__":
                s.module_attrs["__version__"] = None
    if "setattr(Logger, attr, value)" in text and "Logger" in s.classes:
        s.classes["Logger"]["exported"] = list(s.classes["ILogger"].get("exported", []))
        s.classes["Logger"]["attrs"].append("Severity")
    for node in ast.walk(tree):  # Builder.__enter__ = ... inside an `if` on the module name
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if (isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id in s.classes
                        and t.attr not in s.classes[t.value.id]["attrs"]):
                    s.classes[t.value.id]["attrs"].append(t.attr)


def git_show(repo: str, tag: str, path: str) -> str:
    return subprocess.run(["git", "-C", repo, "show", f"{tag}:{path}"], check=True, capture_output=True,
                          text=True).stdout


def extract(repo: str, tag: str) -> dict[str, Any]:
    files = subprocess.run(["git", "-C", repo, "ls-tree", "-r", "--name-only", tag, "python/src"], check=True,
                           capture_output=True, text=True).stdout.split()
    cpp = sorted(f for f in files if f.endswith(".cpp"))
    headers = subprocess.run(["git", "-C", repo, "ls-tree", "-r", "--name-only", tag, "include"], check=True,
                             capture_output=True, text=True).stdout.split()
    HEADER_ARITY.clear()
    HEADER_ARITY.update(header_arities([git_show(repo, tag, h) for h in headers if h.endswith(".h")]))
    s = Surface()
    for f in cpp:
        parse_file(s, git_show(repo, tag, f))
    finish(s)
    init = "python/packaging/bindings_wheel/tensorrt/__init__.py"
    parse_init_py(s, git_show(repo, tag, init))
    commit = subprocess.run(["git", "-C", repo, "rev-list", "-n1", tag], check=True, capture_output=True,
                            text=True).stdout.strip()
    return {"origin": "https://github.com/NVIDIA/TensorRT", "tag": tag, "commit": commit,
            "files": cpp + [init], "headers": [h for h in headers if h.endswith(".h")], "classes": s.classes, "module_attrs": s.module_attrs,
            "functions": s.functions}


def main(argv: list[str]) -> int:
    repo, tag, version = argv[1:4]
    data = extract(repo, tag)
    data = {"version": version, **data}
    json.dump(data, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
