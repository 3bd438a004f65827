"""The TensorRT lines the double tests run under, and the fixtures that install a line's double.

Imported by each TensorRT test module (``from helpers_trt import LINES, doubles, line``), so a
test taking ``doubles`` runs once per line; ``@pytest.mark.parametrize("line", ...)`` narrows it.
:func:`link_file` puts ONNX models exported once into each test's output folder.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

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


def link_file(src: Path, dst: Path) -> None:
    """A hard link: the pipeline replaces files (temp + rename), never writes into them."""
    if dst.exists():
        if dst.samefile(src):
            return
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copy(src, dst)


def skip_without_int8_dot() -> None:
    """Skip a test whose INT8 export validates on this CPU when the CPU has no VNNI/AMX INT8
    instructions: ONNX Runtime's and OpenVINO's INT8 kernels saturate there, and the export's
    own validation (rightly) refuses the graphs (bench.machine.int8_cpu_warning, docs/int8.md)."""
    from twins_deploy.bench.machine import int8_cpu_warning

    if int8_cpu_warning() is not None:
        pytest.skip("this CPU has no VNNI/AMX INT8 instructions: ONNX Runtime's and OpenVINO's INT8 kernels "
                    "saturate here and the export's validation refuses the graphs (docs/int8.md)")
