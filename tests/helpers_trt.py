"""The TensorRT lines the double tests run under, and the fixtures that install a line's double.

Imported by each TensorRT test module (``from helpers_trt import LINES, doubles, line``), so a
test taking ``doubles`` runs once per line; ``@pytest.mark.parametrize("line", ...)`` narrows it.
"""
from __future__ import annotations

import pytest

from trt_doubles import harness

LINES = ["8.6", "10", "11"]


@pytest.fixture(params=LINES)
def line(request):
    return request.param


@pytest.fixture
def doubles(monkeypatch, line, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return harness.install(monkeypatch, line)
