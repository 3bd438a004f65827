"""Artifacts on disk: atomic writes, no silent overwrites, output directories, hashes.

Every stage writes a file the next stage reads, plus ``<artifact>.json`` beside it (the
manifest, :mod:`twins_deploy.manifest`). Files are written to a temporary name in the
same directory and renamed into place, so an interrupted run never leaves a file that
looks complete; a run that fails removes the directories it created.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import os
import platform
import re
import shlex
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from twins_deploy.errors import ArtifactError, OptionError, quoted


def manifest_path(artifact: str | os.PathLike[str]) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    p = Path(artifact)
    return p.with_name(p.name + ".json")


# An artifact's kind (a manifest's "kind"), which is also twins-export's --fmt that makes it:
# spelled once, here; what runs each kind is the route table's business (engines/routes.py).
ONNX_KIND, PLAN_KIND = "onnx", "trt"
_FILE_STEM = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
MAX_STEM_LEN = 128  # a file name holds 255 bytes; staging names add a prefix and a random suffix


def check_file_stem(name: str, what: str) -> str:
    """A name that becomes a file (or folder) name inside an output directory: no path
    separators or ``..`` (which would write outside the directory the run checked), not
    hidden, and short enough for a file name with its suffixes."""
    if not _FILE_STEM.match(name) or ".." in name:
        raise OptionError(f"{what} {quoted(name)} may hold only letters, digits, '_', '.' and '-' (no '..'), "
                          "and may not start with '.' or '-'")
    if len(name) > MAX_STEM_LEN:
        raise OptionError(f"{what} is {len(name)} characters long; at most {MAX_STEM_LEN}")
    return name


def path_kind(path: str | os.PathLike[str]) -> str:
    """What ``path`` is, in words, without opening it (opening a FIFO would block): "a file",
    "a folder", "missing", "a named pipe (FIFO)", "a socket", "a device", "a symlink loop", "a
    broken symlink", "a path with a name too long for this system", "a path through a file",
    "a path that cannot be inspected (...)"."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        try:
            os.lstat(path)
        except OSError:
            return "missing"
        return "a broken symlink"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symlink loop"
        if e.errno == errno.ENAMETOOLONG:
            return "a path with a name too long for this system"
        if e.errno == errno.ENOTDIR:
            return "a path through a file"
        return f"a path that cannot be inspected ({e.strerror or e})"
    except ValueError:  # an embedded NUL byte
        return "not a valid path"
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def existing_file(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` if it is a file; otherwise one line saying what it is instead (missing, a
    folder, or a manifest given where its artifact was meant)."""
    p = Path(path)
    kind = path_kind(p)
    if kind == "a file":
        if p.name.endswith(".json") and p.name != ".json":
            artifact = p.with_name(p.name[:-len(".json")])
            if artifact.is_file() and artifact.suffix in (".onnx", ".plan", ".engine"):
                raise ArtifactError(f"{quoted(str(p))} is the manifest of {artifact.name}; "
                                    f"pass {quoted(str(artifact))} itself")
        return p
    if kind == "missing":
        raise ArtifactError(f"{what} {quoted(str(p))} does not exist")
    raise ArtifactError(f"{what} {quoted(str(p))} is {kind}, not a file")


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_bounded(path: str | os.PathLike[str], limit: int, size_note: str) -> bytes:
    """The bytes of ``path``, read only when it is a regular file of at most ``limit`` bytes:
    a FIFO is never opened (it would block), a 100 GB file never read. Refusals are
    :class:`ArtifactError` reasons without the path, which the caller names ("manifest 'x':
    is a folder, not a file"); ``size_note`` says how large such a file really is."""
    kind = path_kind(path)
    if kind != "a file":
        raise ArtifactError(f"is {kind}, not a file")
    try:  # O_NONBLOCK: should a FIFO have replaced the file since, opening it does not wait
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise ArtifactError(f"cannot be read: {e.strerror or type(e).__name__}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ArtifactError("is not a regular file")
        if st.st_size > limit:
            raise ArtifactError(f"is {st.st_size:,} bytes; {size_note} and at most {limit:,} bytes are read")
        try:
            raw = f.read(limit + 1)
        except OSError as e:
            raise ArtifactError(f"cannot be read: {e.strerror or type(e).__name__}") from None
    if len(raw) > limit:
        raise ArtifactError(f"grew beyond {limit:,} bytes while being read")
    return raw


def hash_mismatch(path: str | os.PathLike[str], expected: str | None) -> str | None:
    """Why the file at ``path`` is not the one a manifest describes, for an error line (its
    sha256 differs, or the manifest records none); None when it is. The one check behind
    reusing an artifact, opening a plan, serving a file and copying one into a Triton entry."""
    actual = file_sha256(path)
    if not expected:
        return f"sha256 {actual[:12]}... and its manifest records none to check it against"
    if actual != expected:
        return f"sha256 differs: {actual[:12]}... where its manifest records {expected[:12]}..."
    return None


def _missing_parents(d: Path) -> list[Path]:
    """``d`` and its ancestors that do not exist yet, outermost first."""
    missing = []
    while not os.path.lexists(d) and d != d.parent:
        missing.append(d)
        d = d.parent
    return missing[::-1]


def _check_name_limits(d: Path, base: Path) -> None:
    """Refuse a path the OS cannot create (a component longer than NAME_MAX, the whole longer
    than PATH_MAX) with one line, before any work; mkdir would only say ENAMETOOLONG later."""
    try:
        name_max = os.pathconf(base, "PC_NAME_MAX")
        path_max = os.pathconf(base, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    for part in d.parts:
        if len(os.fsencode(part)) > name_max:
            raise ArtifactError(f"cannot create {quoted(str(d))}: the name {quoted(part, 60)} is "
                                f"{len(os.fsencode(part))} bytes long; this file system takes at most {name_max}")
    if len(os.fsencode(str(d.absolute()))) >= path_max:
        raise ArtifactError(f"cannot create {quoted(str(d))}: the path is longer than this system's "
                            f"limit of {path_max} bytes")


def check_output_dir(directory: str | os.PathLike[str]) -> Path:
    """Prove that ``directory`` can be created and written, before any work, leaving
    nothing behind: a run that fails on a bad argument must not create its output dir.
    What is in the way (a file, a FIFO, a symlink loop, a name too long) is named."""
    d = Path(directory)
    kind = path_kind(d)
    if kind not in ("a folder", "missing", "a path through a file"):  # the last: named below
        raise ArtifactError(f"output directory {quoted(str(d))} is {kind}, not a folder")
    missing = _missing_parents(d)
    base = missing[0].parent if missing else d
    base_kind = path_kind(base)
    if base_kind != "a folder":
        raise ArtifactError(f"cannot create output directory {quoted(str(d))}: {quoted(str(base))} is {base_kind}, "
                            "not a folder")
    _check_name_limits(d, base)
    try:
        probe = tempfile.mkdtemp(dir=base, prefix=".twins-write-test-")
        os.rmdir(probe)
    except OSError as e:
        raise ArtifactError(f"cannot write to output directory {quoted(str(d))}: {e.strerror or e}") from None
    return d


REPORT_KEYS = frozenset({"passed", "candidate", "stats"})  # what every validation report holds


def check_report_path(path: str | os.PathLike[str], artifact: str | os.PathLike[str] | None = None) -> Path:
    """A file to write a validation report into: its folder must exist and take files; it
    must not be a folder, the artifact or its manifest, and an existing file is replaced only
    if it is a report already (a typo must not cost the user an unrelated file)."""
    p = Path(path)
    kind = path_kind(p)
    if kind == "a folder":
        raise ArtifactError(f"report path {quoted(str(p))} is a directory; give a file name")
    if kind not in ("a file", "missing"):
        raise ArtifactError(f"report path {quoted(str(p))} is {kind}; give the name of a regular file")
    if artifact is not None and p.exists():
        for own in (Path(artifact), manifest_path(artifact)):
            if own.exists() and p.samefile(own):
                raise ArtifactError(f"report path {quoted(str(p))} is the artifact's own "
                                    f"{'manifest' if own.suffix == '.json' else 'file'}; give another file name")
    if p.exists() and not _is_report(p):
        raise ArtifactError(f"report path {quoted(str(p))} exists and is not a validation report; "
                            "give another file name, or remove it first")
    parent = p.parent
    parent_kind = path_kind(parent)
    if parent_kind == "missing":
        raise ArtifactError(f"cannot write the report {quoted(str(p))}: folder {quoted(str(parent))} does not exist")
    if parent_kind != "a folder":
        raise ArtifactError(f"cannot write the report {quoted(str(p))}: {quoted(str(parent))} is {parent_kind}, "
                            "not a folder")
    _check_name_limits(p, parent)
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".twins-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ArtifactError(f"cannot write the report {quoted(str(p))}: {e.strerror or e}") from None
    return p


def _is_report(path: Path) -> bool:
    if path_kind(path) != "a file":
        return False
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(16 << 20))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and REPORT_KEYS <= data.keys()


LOCK_NAME = ".twins-deploy.lock"  # who holds a folder: written while held, removed after


def _make_dirs(d: Path) -> list[Path]:
    """Create ``d`` and its missing parents; return only those this call's ``mkdir`` made.
    Another run may create the same folders at the same moment: what it made is not ours
    to remove, so "missing before" is never taken to mean "made by us"."""
    made = []
    for p in _missing_parents(d):
        try:
            os.mkdir(p)
        except FileExistsError:
            if not p.is_dir():
                raise ArtifactError(f"cannot create output directory {quoted(str(d))}: {quoted(str(p))} is "
                                    f"{path_kind(p)}, not a folder") from None
            continue
        made.append(p)
    return made


def _lock_holder(d: Path) -> str:
    """Who holds ``d``, from its lock note: "pid N, CMD, since T", or "" when unknown."""
    try:
        if path_kind(d / LOCK_NAME) != "a file":
            return ""
        with open(d / LOCK_NAME, "rb") as f:
            note = json.loads(f.read(4096))
        return f"pid {int(note['pid'])}, {quoted(str(note['command']), 120)}, since {quoted(str(note['since']), 40)}"
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return ""


def _write_lock_note(d: Path) -> None:
    """Say who holds ``d`` (read by the loser of a race), and report a note a killed run left."""
    stale = _lock_holder(d)
    if stale:
        print(f"note: {d}: a run that no longer holds this folder left a lock note ({stale}); "
              "it was killed or crashed, and its leftovers are cleaned up below", file=sys.stderr)
    note = {"pid": os.getpid(), "command": shlex.join(sys.argv)[:1000], "since": now_iso()}
    with contextlib.suppress(OSError):  # the lock itself is the flock; the note only informs
        write_json_atomic(d / LOCK_NAME, note)


_PARTIAL = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.partial$")
_PREVIOUS = re.compile(r"^\.(?P<name>.+)\.previous$")


def recover_leftovers(d: Path) -> list[str]:
    """What a killed run (SIGKILL, a power cut) left in ``d``, which this run now holds:
    staged ``.NAME.XXXXXXXX.partial`` files are removed; ``.NAME.previous`` backups of an
    install that did not finish are put back as a pair (the new pair is incomplete) or
    removed (the new pair is whole). Returns what was done, also printed as notes."""
    done: list[str] = []
    try:
        names = sorted(os.listdir(d))
    except OSError:
        return done
    for name in names:
        p = d / name
        probe = name.startswith(".twins-write-test-")  # check_output_dir's, of a run killed at that moment
        if not (_PARTIAL.match(name) or probe):
            continue
        kind = path_kind(p)
        if kind == "a file":
            size, remove = p.stat().st_size, p.unlink
        elif kind == "a folder" and probe:
            size, remove = 0, p.rmdir
        else:
            continue
        with contextlib.suppress(OSError):
            remove()
            done.append(f"removed {name} ({size / 2**20:.1f} MiB), left by a run that was killed")
    pairs: dict[str, tuple[Path, Path]] = {}
    for name in names:
        m = _PREVIOUS.match(name)
        if m and (d / name).is_file():
            orig = m.group("name")
            art = orig[:-len(".json")] if orig.endswith(".json") else orig
            pairs[art] = (d / art, manifest_path(d / art))
    for art, (apath, mpath) in pairs.items():
        backups = [(x.with_name(f".{x.name}.previous"), x) for x in (apath, mpath)]
        whole = apath.is_file() and mpath.is_file()
        for backup, orig in backups:
            if not backup.is_file():
                continue
            with contextlib.suppress(OSError):
                if whole:
                    backup.unlink()
                    done.append(f"removed {backup.name}, the backup of an install that finished")
                else:
                    os.replace(backup, orig)
                    done.append(f"restored {orig.name} from {backup.name}: a killed run had not finished "
                                "installing its replacement")
    for line in done:
        print(f"note: {d}: {line}", file=sys.stderr)
    return done


_held: dict[tuple[int, str], int] = {}  # folders held: (pid, real path) -> depth; a forked child holds none


@contextlib.contextmanager
def output_dir(directory: str | os.PathLike[str], option: str | None = "--out-dir") -> Iterator[Path]:
    """Create ``directory`` for a run and hold it: a second run into the same directory
    fails at once, naming the holder, instead of interleaving its files with this one's.
    Creating and locking is race-free: the run that holds the lock removes, if it fails,
    only the empty folders its own ``mkdir`` made; a refused run removes nothing. What a
    killed run left is cleaned up once the lock is held (:func:`recover_leftovers`).

    Re-entrant within a process: an export holds its --out-dir and its Triton repository for
    the whole run, and they may be one folder (a second ``flock`` on a new descriptor would
    refuse this very process). ``option`` names what to change in the refusal."""
    d = check_output_dir(directory)
    key = (os.getpid(), os.path.realpath(d))
    if key in _held:
        _held[key] += 1
        try:
            yield d
        finally:
            _held[key] -= 1
        return
    with _locked_dir(d, option):
        _held[key] = 1
        try:
            yield d
        finally:
            del _held[key]


@contextlib.contextmanager
def _locked_dir(d: Path, option: str | None) -> Iterator[Path]:
    import fcntl

    try:
        made = _make_dirs(d)
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise ArtifactError(f"cannot create output directory {quoted(str(d))}: {e.strerror or e}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a lock on the directory itself
        except OSError:
            holder = _lock_holder(d)
            for _ in range(40):  # the holder writes its note just after locking: give it a moment
                if holder:
                    break
                time.sleep(0.025)
                holder = _lock_holder(d)
            raise ArtifactError(f"another twins-deploy run{f' ({holder})' if holder else ''} is writing into "
                                f"{quoted(str(d))}; wait for it to finish"
                                f"{f' or choose another {option}' if option else ''}") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(d))
        except OSError:
            same = False
        if not same:  # removed (by a failed run that made it) or replaced before we locked it
            raise ArtifactError(f"output directory {quoted(str(d))} was removed or replaced while this run "
                                "was starting; run again")
        _write_lock_note(d)
        try:
            recover_leftovers(d)
            yield d
        except BaseException:
            _remove_lock_note(d)
            for p in reversed(made):
                with contextlib.suppress(OSError):
                    p.rmdir()  # only succeeds when empty: nothing written is ever removed here
            raise
        finally:
            _remove_lock_note(d)
    finally:
        os.close(fd)  # releases the lock


def _remove_lock_note(d: Path) -> None:
    with contextlib.suppress(OSError):
        (d / LOCK_NAME).unlink()


def refuse_overwrite(paths: list[Path], force: bool) -> None:
    """Fail before doing any work if an artifact exists and ``--force`` was not given."""
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise ArtifactError(
            f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; "
            "pass --force to overwrite, or choose another --out-dir"
        )


@contextlib.contextmanager
def staged_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary file beside ``path`` for an artifact in the making; removed if the body
    fails or the file is never installed (see :func:`install_artifact`)."""
    final = Path(path)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".partial")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only on success."""
    with staged_file(path) as tmp:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; use what open() would
        os.replace(tmp, path)


def refuse_non_files(paths: list[Path]) -> None:
    """Refuse, before any work, a folder (or other non-file) where an artifact or manifest
    goes: installing would move it aside and could not put a file in its place."""
    for p in paths:
        kind = path_kind(p)
        if kind not in ("a file", "missing"):
            raise ArtifactError(f"{quoted(str(p))} is {kind}, where the output file goes; twins-deploy replaces files "
                                "only (--force included): move it, or choose another --out-dir")


def install_artifact(staged: Path, final: Path, manifest: dict[str, Any]) -> None:
    """Put a staged artifact and its manifest in place as one step: afterwards either both
    new files are there, or (on any failure, Ctrl-C included) the previous pair is back."""
    mpath = manifest_path(final)
    with staged_file(mpath) as mtmp:
        _write_json(mtmp, manifest)
        os.chmod(staged, 0o666 & ~_umask())
        os.chmod(mtmp, 0o666 & ~_umask())
        moved: list[tuple[Path, Path]] = []  # (backup, original)
        try:
            for p in (final, mpath):
                if p.exists():
                    backup = p.with_name(f".{p.name}.previous")
                    os.replace(p, backup)
                    moved.append((backup, p))
            os.replace(staged, final)
            os.replace(mtmp, mpath)
        except BaseException:
            for p in (final, mpath):
                if not any(orig == p for _, orig in moved):
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()  # a new file of a half-done install
            for backup, orig in moved:
                os.replace(backup, orig)
            raise
        for backup, _ in moved:
            backup.unlink()


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


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN and infinities as None: strict JSON, which every consumer parses."""
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(json_safe(obj), indent=2, sort_keys=False, default=str, allow_nan=False) + "\n").encode()


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "wb") as f:
        f.write(_json_bytes(obj))
        f.flush()
        os.fsync(f.fileno())


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    write_bytes_atomic(path, _json_bytes(obj))


# How NVIDIA's wheels name TensorRT, and how their requirements name the CUDA major they need
TRT_DIST = re.compile(r"^tensorrt(?:[-_]lean|[-_]dispatch)?(?:[-_]cu(\d+))?(?:[-_](?:libs|bindings))?$")
CUDA_IN_REQUIREMENT = re.compile(r"^(?:nvidia-[a-z-]+|tensorrt[-_a-z]*)[-_]cu(\d+)\b")


@dataclass(frozen=True)
class TrtDistribution:
    """The pip distribution that installed TensorRT: its name, version and CUDA major."""

    name: str
    version: str
    cuda_major: int | None


def trt_distributions() -> list[TrtDistribution]:
    """Every installed TensorRT distribution (tensorrt, tensorrt-cu12, tensorrt_lean_cu12_libs,
    ...), with the CUDA major its name or its requirements name (``cu12``)."""
    found: dict[str, TrtDistribution] = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        m = TRT_DIST.match(name)
        if m is None or name in found:
            continue
        cuda = int(m.group(1)) if m.group(1) else None
        if cuda is None:
            majors = {int(r.group(1)) for req in dist.requires or []
                      if (r := CUDA_IN_REQUIREMENT.match(req.lower().replace("_", "-")))}
            cuda = majors.pop() if len(majors) == 1 else None
        found[name] = TrtDistribution(name, dist.version, cuda)
    return sorted(found.values(), key=lambda d: d.name)


def trt_distribution() -> tuple[str, str] | None:
    """(name, version) of the pip distribution TensorRT was installed from, or None: of those
    :func:`trt_distributions` finds, the full TensorRT before the lean runtime (as the runner
    imports them), then one that names its CUDA major, then the shortest name (the one a user
    installs: ``tensorrt-cu12`` rather than its ``tensorrt-cu12-bindings``). NVIDIA's wheels install TensorRT as tensorrt-cu12,
    tensorrt-cu13, tensorrt_lean_cu12_bindings, ...; ``tensorrt`` itself may be absent."""
    dists = trt_distributions()
    if not dists:
        return None
    best = min(dists, key=lambda d: (any(w in d.name for w in ("lean", "dispatch")), d.cuda_major is None,
                                     len(d.name), d.name))
    return best.name, best.version


def tool_versions(extra: tuple[str, ...] = ()) -> dict[str, str | None]:
    """Installed versions of the tools that shaped an artifact (None if absent); for
    ``tensorrt``, the version of whichever distribution provides it, named in ``tensorrt-dist``."""
    names = ("twins-deploy", "torch", "onnx", "onnxruntime", "onnxslim",
             "onnxconverter-common", "timm", "numpy") + extra
    out: dict[str, str | None] = {"python": platform.python_version()}
    for n in names:
        if n == "tensorrt":
            dist = trt_distribution()
            out[n], out["tensorrt-dist"] = (dist[1], dist[0]) if dist else (None, None)
            continue
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
