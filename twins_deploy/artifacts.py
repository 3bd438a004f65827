"""Artifacts on disk: atomic writes, no silent overwrites, output directories, hashes.

Every stage writes a file the next stage reads, plus ``<artifact>.json`` beside it (the
manifest, :mod:`twins_deploy.manifest`). Files are written to a temporary name in the
same directory and renamed into place, so an interrupted run never leaves a file that
looks complete; a run that fails removes the directories it created.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from twins_deploy.errors import ArtifactError


def manifest_path(artifact: str | os.PathLike[str]) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    p = Path(artifact)
    return p.with_name(p.name + ".json")


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _missing_parents(d: Path) -> list[Path]:
    """``d`` and its ancestors that do not exist yet, outermost first."""
    missing = []
    while not d.exists() and d != d.parent:
        missing.append(d)
        d = d.parent
    return missing[::-1]


def check_output_dir(directory: str | os.PathLike[str]) -> Path:
    """Prove that ``directory`` can be created and written, before any work, leaving
    nothing behind: a run that fails on a bad argument must not create its output dir."""
    d = Path(directory)
    missing = _missing_parents(d)
    base = missing[0].parent if missing else d
    try:
        if not base.is_dir():
            raise NotADirectoryError(20, f"{str(base)!r} is not a directory")
        probe = tempfile.mkdtemp(dir=base, prefix=".twins-write-test-")
        os.rmdir(probe)
    except OSError as e:
        raise ArtifactError(f"cannot write to output directory {str(d)!r}: {e.strerror or e}") from None
    return d


@contextlib.contextmanager
def output_dir(directory: str | os.PathLike[str]) -> Iterator[Path]:
    """Create ``directory`` for a run; if the run fails, remove what it created and left empty."""
    d = check_output_dir(directory)
    created = _missing_parents(d)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ArtifactError(f"cannot create output directory {str(d)!r}: {e.strerror or e}") from None
    try:
        yield d
    except BaseException:
        for p in reversed(created):
            with contextlib.suppress(OSError):
                p.rmdir()  # only succeeds when empty: nothing written is ever removed here
        raise


def refuse_overwrite(paths: list[Path], force: bool) -> None:
    """Fail before doing any work if an artifact exists and ``--force`` was not given."""
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise ArtifactError(
            f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; "
            "pass --force to overwrite, or choose another --out-dir"
        )


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only on success."""
    final = Path(path)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".partial")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; use what open() would
        os.replace(tmp_path, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes | memoryview) -> None:
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


def tool_versions(extra: tuple[str, ...] = ()) -> dict[str, str | None]:
    """Installed versions of the tools that shaped an artifact (None if absent)."""
    names = ("twins-deploy", "torch", "onnx", "onnxruntime", "onnxslim",
             "onnxconverter-common", "timm", "numpy") + extra
    out: dict[str, str | None] = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
