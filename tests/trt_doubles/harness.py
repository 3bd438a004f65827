"""Putting a version's doubles in place of ``tensorrt`` and ``cuda.bindings.runtime``.

``LINES`` names the three TensorRT lines the project supports and where each double's
surface comes from. With ``CI=true`` a missing API reference fails the test run instead
of skipping it (``need``): CI must never pass by not looking.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from . import surface as S
from .fake_cuda import FakeCudart
from .fake_device import FakeDevice
from .fake_trt import FakeTrtModule, make_tensorrt

REF = Path(sys.prefix) / "trt-reference"
STUBS = REF / "stubs" / "tensorrt_bindings" / "tensorrt.pyi"
STUBS_INIT = REF / "stubs" / "tensorrt" / "__init__.pyi"

# line -> (version the double reports, where its surface comes from)
LINES = {
    "8.6": ("8.6.1.6", "NVIDIA/TensorRT v8.6.1 binding sources (data/trt-8.6.1.json)"),
    "10": ("10.13.0.35", "tensorrt-stubs 10.13.0.35.1 (.venv/trt-reference/stubs)"),
    "11": ("11.4.0.106", "NVIDIA/TensorRT v11.1 binding sources (data/trt-11.1.0.json) with the runtime "
                         "classes of the real tensorrt_lean_bindings 11.4.0.106"),
}


def need(condition: bool, what: str) -> None:
    """Skip without ``what`` locally; fail under CI (``CI=true``), where it must be present."""
    if condition:
        return
    msg = f"{what} is missing (make setup installs it)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true: {msg}; the API reference tests may not be skipped in CI", pytrace=False)
    pytest.skip(msg)


_SURFACES: dict[str, dict[str, Any]] = {}


def surface(line: str) -> dict[str, Any]:
    if line in _SURFACES:
        return _SURFACES[line]
    if line == "8.6":
        out = S.load_json("8.6.1")
    elif line == "10":
        need(STUBS.is_file() and STUBS_INIT.is_file(), "the TensorRT 10.13 stubs (tensorrt-stubs)")
        out = S.from_stubs(STUBS.read_text(), STUBS_INIT.read_text())
    elif line == "11":
        try:
            import tensorrt_lean_bindings as lean
        except ImportError:
            lean = None
        need(lean is not None, "the TensorRT 11.4 lean runtime module (tensorrt-lean-cu12-bindings)")
        top = S.from_module(lean)
        out = S.overlay(S.load_json("11.1.0"), top, {n.split(".")[0] for n in top["classes"]})
    else:
        raise ValueError(line)
    _SURFACES[line] = out
    return out


def reset_polygraphy() -> None:
    """Polygraphy caches the tensorrt module (LazyModule) and its TensorRT logger: forget
    both so each test sees its own double."""
    for name, module in list(sys.modules.items()):
        if not name.startswith("polygraphy"):
            continue
        for value in list(vars(module).values()):
            if type(value).__name__ == "LazyModule":
                object.__setattr__(value, "module", None)
    util = sys.modules.get("polygraphy.backend.trt.util")
    if util is not None:
        util.TRT_LOGGER = None


@dataclass
class Doubles:
    line: str
    trt: FakeTrtModule
    cudart: FakeCudart
    device: FakeDevice

    def calls(self, prefix: str) -> list[dict[str, Any]]:
        return [kw for name, kw in self.trt.calls if name == prefix]


def install(monkeypatch: pytest.MonkeyPatch, line: str, device: FakeDevice | None = None) -> Doubles:
    """Make ``import tensorrt`` and ``from cuda.bindings import runtime`` return the doubles
    of ``line`` for the rest of the test (monkeypatch undoes it)."""
    import cuda.bindings
    import cuda.bindings.runtime as real_rt

    device = device or FakeDevice()
    version = LINES[line][0]
    trt = make_tensorrt(surface(line), version, device)
    cudart = FakeCudart(real_rt, device)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    for lean in ("tensorrt_lean", "tensorrt_lean_bindings"):
        monkeypatch.setitem(sys.modules, lean, None)  # import fails: only the double is TensorRT here
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cudart)
    monkeypatch.setattr(cuda.bindings, "runtime", cudart)
    reset_polygraphy()
    monkeypatch.setattr(sys.modules[__name__], "_cleanup", reset_polygraphy, raising=False)
    return Doubles(line, trt, cudart, device)
