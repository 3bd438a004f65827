"""Atomic writes: complete files only, normal permissions, nothing left behind on failure."""
from __future__ import annotations

import os

import pytest

from twins_deploy.artifacts import atomic_output, write_bytes_atomic


def test_atomic_write_has_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_bytes_atomic(tmp_path / "a.onnx", b"data")
    finally:
        os.umask(old)
    assert (tmp_path / "a.onnx").read_bytes() == b"data"
    assert (tmp_path / "a.onnx").stat().st_mode & 0o777 == 0o644


def test_failed_write_leaves_neither_file_nor_temp(tmp_path):
    (tmp_path / "keep.onnx").write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "keep.onnx") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert (tmp_path / "keep.onnx").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.onnx"]
