"""Planted mistakes: a module's own source with one real text edit, compiled and patched in.

A plant names the exact text it replaces; that text must be in the source exactly once, so
when the code moves the plant fails loudly and is updated, never silently dropped.
"""
from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


def mutant(module: ModuleType, old: str, new: str) -> dict[str, Any]:
    """The namespace of ``module``'s source with ``old`` (there exactly once: if the code moved,
    the plant is updated, never dropped) replaced by ``new``."""
    src = Path(module.__file__).read_text()
    assert src.count(old) == 1, f"the plant no longer matches {module.__name__}: update it to the code's new shape"
    ns: dict[str, Any] = {"__name__": module.__name__}
    exec(compile(src.replace(old, new), module.__file__, "exec"), ns)
    return ns


def _code(fn: Any) -> tuple:
    """What a function does, not where it is: its bytecode and constants, nested functions'
    likewise (code objects compare their line numbers, which an edit above them shifts)."""
    def key(code: Any) -> tuple:
        return code.co_code, tuple(key(c) if hasattr(c, "co_code") else c for c in code.co_consts)

    return key(getattr(fn, "__func__", fn).__code__)


def plant(monkeypatch: pytest.MonkeyPatch, module: ModuleType, old: str, new: str) -> list[str]:
    """Patch into ``module`` what the edit ``old`` -> ``new`` changed: its module-level functions
    and the methods of its classes whose code differs (the others stay, so ``super()`` and
    class identity keep working). Returns what was replaced; at least one thing must be."""
    ns = mutant(module, old, new)
    changed = []
    for name, value in vars(module).items():
        planted = ns.get(name)
        if getattr(value, "__module__", None) != module.__name__ or planted is None:
            continue
        if isinstance(value, type):
            for attr, member in vars(value).items():
                other = vars(planted).get(attr)
                if hasattr(getattr(member, "__func__", member), "__code__") and other is not None \
                        and _code(other) != _code(member):
                    monkeypatch.setattr(value, attr, other)
                    changed.append(f"{name}.{attr}")
        elif callable(value) and hasattr(value, "__code__") and _code(planted) != _code(value):
            monkeypatch.setattr(module, name, planted)
            changed.append(name)
    assert changed, f"the plant {old!r} -> {new!r} changed no function or method of {module.__name__}"
    return changed
