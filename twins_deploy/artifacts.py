"""Artifacts on disk: atomic writes, no silent overwrites, and the JSON manifest.

Every stage writes a file the next stage reads, plus ``<artifact>.json`` beside it.
Files are written to a temporary name in the same directory and renamed into place, so
an interrupted run never leaves a file that looks complete.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from twins_deploy.errors import ArtifactError

MANIFEST_SCHEMA = 1


def manifest_path(artifact: str | os.PathLike[str]) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    p = Path(artifact)
    return p.with_name(p.name + ".json")


def ensure_writable_dir(directory: str | os.PathLike[str]) -> Path:
    """Create ``directory`` if needed and prove we can write there, before any work."""
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=d, prefix=".twins-write-test-"):
            pass
    except OSError as e:
        raise ArtifactError(f"cannot write to output directory {str(d)!r}: {e.strerror or e}") from None
    return d


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


def read_manifest(artifact: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and sanity-check the manifest beside ``artifact``."""
    art = Path(artifact)
    if not art.is_file():
        raise ArtifactError(f"artifact {str(art)!r} does not exist")
    mp = manifest_path(art)
    if not mp.is_file():
        raise ArtifactError(
            f"no manifest {str(mp)!r} beside {art.name}; twins-deploy artifacts are written "
            "with one (re-export with twins-export)"
        )
    try:
        manifest = json.loads(mp.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ArtifactError(f"manifest {str(mp)!r} is not valid JSON: {e}") from None
    for key in ("schema", "model", "artifact", "input"):
        if key not in manifest:
            raise ArtifactError(f"manifest {str(mp)!r} lacks {key!r}; is it a twins-deploy manifest?")
    return manifest


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
