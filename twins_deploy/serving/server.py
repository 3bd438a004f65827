"""``twins-serve``: Triton Inference Server answering for the project's Runners, through PyTriton.

The ``nvidia-pytriton`` wheel bundles a real ``tritonserver`` (2.51.0 with 0.7.0) with only
the python backend: there is no native ONNX Runtime or TensorRT backend to load
``model.onnx``/``model.plan`` with. So each repository entry is bound into PyTriton with the
same shape, batching and instance count its ``config.pbtxt`` declares, and executed by the
Runner :func:`twins_deploy.engines.opening.open_runner` gives for the copied artifact (after the
manifest checks): ONNX Runtime on the CPU here, ONNX Runtime CUDA or TensorRT where present.
Clients see Triton's HTTP/gRPC protocol and Triton's dynamic batcher either way.

What this module handles for the user, because each bit was found failing:

* the python backend's stub returns empty outputs under numpy 2: refused up front;
* the stub loads ``libpython3.X.so`` through the dynamic loader, so a virtual environment
  made from another build of the same Python (pyenv, conda) loads the system's copy and fails
  (``'_thread.RLock' object has no attribute '_recursion_count'``): the interpreter's own
  ``lib/`` is put first on ``LD_LIBRARY_PATH``;
* a server started in the background inherits SIGINT ignored, and SIGTERM on the Python
  process alone left ``tritonserver`` and its stub running: SIGINT, SIGTERM and SIGHUP are
  handled, also during the start, and the workspace (a temporary folder, not
  ``~/.cache/pytriton``) is removed;
* under load, tritonserver waits its whole exit timeout for the clients' open connections,
  then exits without finalizing its stubs, and PyTriton's tensor store processes (below the
  stubs) die with their ``psm_*`` segments still in ``/dev/shm``: the processes of the server
  are followed (:class:`ServerTree`) until they are gone, killed after a few seconds, and the
  regions they mapped are removed and counted (:meth:`ServerTree.sweep_shm`);
* an artifact whose sha256 is not its manifest's is refused (:func:`check_artifact_hashes`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from twins_deploy.artifacts import hash_mismatch
from twins_deploy.engines.opening import open_runner
from twins_deploy.errors import ArtifactError, BackendUnavailableError, InputShapeError, OptionError, quoted
from twins_deploy.manifest import Manifest, read_manifest
from twins_deploy.registry import MIN_IMAGE_SIDE
from twins_deploy.serving.triton_repo import (
    CONFIG_FILE,
    RepoEntry,
    TritonModel,
    TritonRepoOptions,
    check_scheduling,
    find_entries,
    model_for,
    read_entry,
)

NUMPY_TYPES = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16}
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
SHM_PREFIX = "pytrtion"  # PyTriton's own spelling of its shared-memory region prefix
PY_SHM_PREFIX = "psm_"  # multiprocessing.shared_memory's names: PyTriton's tensor store segments
SHM_DIR = Path("/dev/shm")
EXIT_TIMEOUT_S = 2      # tritonserver's wait for open connections and in-flight requests at a stop
STOP_GRACE_S = 5.0      # from the stop signal: then what is left of the server is killed
ORPHAN_GRACE_S = 0.5    # for the stubs once tritonserver has exited
SCAN_PERIOD_S = 2.0     # how often a serving server notes the regions its backends map
WORKSPACE_PREFIX = "twins-serve-"
SOCKET_PATH_MAX = 107  # bytes in a Unix socket path (sun_path is 108 with its NUL)


@dataclass(frozen=True)
class ServeOptions:
    """Where and how ``twins-serve`` listens; ``None`` keeps what each config.pbtxt says."""

    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    instances: int | None = None
    max_batch: int | None = None       # at most the artifact's; 1 serves one request per execution
    queue_delay_us: int | None = None
    threads: int | None = None         # ONNX Runtime intra-op threads per instance (default: cores / instances)
    workspace: Path | None = None      # parent of the temporary PyTriton workspace (default: the system's temp)
    verbose: bool = False
    allow_hash_mismatch: bool = False  # serve an ONNX file whose sha256 is not its manifest's, with a warning

    def __post_init__(self) -> None:
        ports = (self.http_port, self.grpc_port, self.metrics_port)
        if len(set(ports)) != 3 or not all(0 < p < 65536 for p in ports):
            raise OptionError(f"HTTP, gRPC and metrics ports must be three different ports in 1..65535, got {ports}")
        for what, v in (("max batch", self.max_batch), ("threads", self.threads)):
            if v is not None and v < 1:
                raise OptionError(f"{what} must be >= 1, got {v}")
        check_scheduling(self.instances, self.queue_delay_us)


@dataclass(frozen=True)
class ServedModel:
    model: TritonModel
    artifact: Path
    manifest: Manifest


# -- the environment -------------------------------------------------------------------------------
def _serve_env_fix(command: str) -> str:
    return (f"make serve-env, then .venv-serve/bin/{command} (outside a checkout: python -m venv .venv-serve "
            "&& .venv-serve/bin/pip install 'twins-deploy[serve]', Linux with glibc >= 2.35)")


def check_environment(command: str = "twins-serve ...") -> None:
    """Refuse, in one line naming the fix, an environment the bundled python backend cannot
    serve from; ``command`` is what to run again from the serving environment."""
    tool = command.split(" ", 1)[0]
    major = int(np.__version__.split(".")[0])
    if major >= 2:
        raise BackendUnavailableError(
            f"{tool} needs the serving environment (numpy<2 with nvidia-pytriton): this one has numpy "
            f"{np.__version__}, with which Triton's python backend (PyTriton's bundled tritonserver) returns "
            f"empty outputs; {_serve_env_fix(command)}")
    try:
        import pytriton  # noqa: F401
        import tritonclient.grpc  # noqa: F401
    except ImportError as e:
        raise BackendUnavailableError(
            f"{tool} needs the serving environment (numpy<2 with nvidia-pytriton): this one lacks "
            f"{e.name or 'nvidia-pytriton'} ({e}); {_serve_env_fix(command)}") from None


def python_lib_dir() -> str | None:
    """The folder holding this interpreter's own shared libpython, if it was built with one."""
    libdir, lib = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir and lib and os.path.isfile(os.path.join(libdir, lib)):
        return str(libdir)
    return None


def stub_library_path(current: str | None) -> str | None:
    """``LD_LIBRARY_PATH`` with this interpreter's libpython first, so the python backend stub
    embeds the same Python build as the environment it imports packages from."""
    libdir = python_lib_dir()
    if libdir is None:
        return current
    rest = [p for p in (current or "").split(os.pathsep) if p and p != libdir]
    return os.pathsep.join([libdir, *rest])


def check_ports(opts: ServeOptions) -> None:
    """A port already listened on would make tritonserver fail after a long start; say so first."""
    for flag, port in (("--http-port", opts.http_port), ("--grpc-port", opts.grpc_port),
                       ("--metrics-port", opts.metrics_port)):
        with socket.socket(socket.AF_INET6 if ":" in opts.host else socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((opts.host, port))
            except OSError as e:
                raise OptionError(f"cannot listen on {opts.host}:{port} ({e.strerror or e}); "
                                  f"choose another {flag}") from None


def check_socket_paths(workspace_parent: Path, models: list[TritonModel]) -> None:
    """PyTriton talks to the python backend over Unix sockets inside its workspace; a path
    over the kernel's limit makes every model load time out, so refuse it up front."""
    ws = Path(workspace_parent).resolve() / f"{WORKSPACE_PREFIX}xxxxxxxx" / "pytriton"
    for m in models:
        for sock in (f"{m.name}-config.sock", f"{m.name}-data.sock", f"{m.name}_0_{m.instances - 1}-server.sock"):
            n = len(os.fsencode(ws / sock))
            if n > SOCKET_PATH_MAX:
                raise OptionError(f"the server's socket path for {m.name} would be {n} bytes, over the "
                                  f"{SOCKET_PATH_MAX} Unix sockets allow: pass a shorter --workspace "
                                  f"(now {ws.parent.parent}) or a shorter model name")


# -- what is served -----------------------------------------------------------------------------------
def resolve_targets(targets: list[Path]) -> list[ServedModel]:
    """Repositories (every entry), entry folders, or artifacts (served under their stem)."""
    if not targets:
        raise OptionError("nothing to serve: give a Triton model repository, an entry of one, or an artifact")
    entries: list[RepoEntry] = []
    for t in targets:
        if t.is_file():
            manifest = read_manifest(t)
            entries.append(RepoEntry(model_for(manifest, TritonRepoOptions(repo=t.parent)), t))
        elif (t / CONFIG_FILE).is_file():
            entries.append(read_entry(t))
        elif t.is_dir():
            entries += find_entries(t)
        else:
            raise ArtifactError(f"{quoted(str(t))} is neither an artifact, a Triton model repository, "
                                "nor an entry of one")
    names = [e.model.name for e in entries]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise OptionError(f"two models would be served as {', '.join(dupes)}; serve them from different repositories")
    return [ServedModel(e.model, e.artifact, _checked_manifest(e)) for e in entries]


def _checked_manifest(entry: RepoEntry) -> Manifest:
    """The manifest beside the model file, which must agree with the config about the I/O."""
    manifest = read_manifest(entry.artifact)
    derived = model_for(manifest, TritonRepoOptions(repo=entry.artifact.parent), name=entry.model.name)
    m = entry.model
    for what, a, b in (("platform", m.platform, derived.platform),
                       ("max_batch_size", m.max_batch_size, derived.max_batch_size),
                       ("inputs", m.inputs, derived.inputs), ("outputs", m.outputs, derived.outputs)):
        if a != b:
            raise ArtifactError(f"{entry.artifact.parent.parent / CONFIG_FILE}: {what} {a} disagrees with the "
                                f"artifact's manifest ({b}); rewrite the entry with twins-export --triton-repo")
    return manifest


def check_artifact_hashes(served: list[ServedModel], allow_mismatch: bool = False) -> None:
    """Refuse to serve a file whose bytes are not the ones its manifest describes (edited,
    replaced, truncated, or a manifest copied beside another file): its validation report
    would vouch for something else. ``allow_mismatch`` turns the refusal into a warning on
    stderr, for ONNX files only: a TensorRT plan that is not its manifest's is refused when it
    is opened (:func:`twins_deploy.engines.opening.open_runner`; TensorRT may crash on it)."""
    for s in served:
        try:
            what = hash_mismatch(s.artifact, s.manifest.sha256)
        except OSError as e:
            raise ArtifactError(f"cannot read {quoted(str(s.artifact))} to check it against its manifest: "
                                f"{e.strerror or e}") from None
        if what is None:
            continue
        line = (f"{quoted(str(s.artifact))} is not the file its manifest describes: {what} "
                "(changed or replaced after export)")
        if allow_mismatch and not s.manifest.is_plan:
            print(f"warning: {line}; serving it anyway (--allow-hash-mismatch): its manifest's validation "
                  "does not vouch for it", file=sys.stderr, flush=True)
            continue
        fix = ("re-export it with twins-export (--triton-repo ... --force for a repository entry)"
               + ("" if s.manifest.is_plan else ", or pass --allow-hash-mismatch to serve it anyway"))
        raise ArtifactError(f"{line}; {fix}")


def with_overrides(model: TritonModel, opts: ServeOptions) -> TritonModel:
    """The config as served: the user's --instances/--max-batch/--queue-delay-us applied."""
    changes: dict[str, Any] = {}
    if opts.instances is not None:
        changes["instances"] = opts.instances
    if opts.max_batch is not None:
        if model.max_batch_size == 0:
            raise OptionError(f"{model.name} is a fixed-batch model (max_batch_size 0): --max-batch does not apply")
        if opts.max_batch > model.max_batch_size:
            raise OptionError(f"--max-batch {opts.max_batch} exceeds {model.name}'s max_batch_size "
                              f"{model.max_batch_size}")
        changes["max_batch_size"] = opts.max_batch
        changes["preferred_batch"] = tuple(b for b in model.preferred_batch if b <= opts.max_batch)
    if opts.queue_delay_us is not None and model.dynamic_batching:
        changes["queue_delay_us"] = opts.queue_delay_us
    if changes.get("max_batch_size") == 1:  # nothing to batch: one request per execution
        changes.update(queue_delay_us=None, preferred_batch=())
    return replace(model, **changes)


def describe(model: TritonModel) -> str:
    batching = ("dynamic batching " + (f"preferred {list(model.preferred_batch)}, " if model.preferred_batch else "")
                + f"queue delay {model.queue_delay_us} us") if model.dynamic_batching else "no dynamic batching"
    kind = "GPU" if model.instance_kind == "KIND_GPU" else "CPU"
    return (f"{model.name} ({model.kind}, max batch {model.max_batch_size}, {batching}, "
            f"{model.instances} {kind} instance{'s' if model.instances > 1 else ''})")


# -- execution ---------------------------------------------------------------------------------------
def make_infer_fn(runner: Any, model: TritonModel) -> Callable[[list[Any]], list[dict[str, np.ndarray]]]:
    """The callable PyTriton runs for one instance: the requests the dynamic batcher merged,
    concatenated into one batch for the Runner, split back per request."""
    in_name = model.inputs[0].name
    out = [(t.name, NUMPY_TYPES[t.data_type]) for t in model.outputs]
    in_dtype = NUMPY_TYPES[model.inputs[0].data_type]
    batched = model.max_batch_size > 0

    def check(x: np.ndarray) -> None:
        if x.ndim != 4 or x.shape[1] != 3 or min(x.shape[2:]) < MIN_IMAGE_SIDE:
            raise InputShapeError(f"{model.name}: input {quoted(in_name)} must be NCHW with 3 channels and H, W >= "
                                  f"{MIN_IMAGE_SIDE}, got shape {list(x.shape)}")

    def run(x: np.ndarray) -> list[np.ndarray]:
        check(x)
        outs = runner.infer(x)
        return [o.astype(dt, copy=False) for (_, dt), o in zip(out, outs)]

    def infer(requests: list[Any]) -> list[dict[str, np.ndarray]]:
        xs = [np.asarray(r[in_name], dtype=in_dtype) for r in requests]
        if not batched:
            return [dict(zip((n for n, _ in out), run(x))) for x in xs]
        sizes = np.cumsum([len(x) for x in xs])[:-1]
        outs = run(np.concatenate(xs) if len(xs) > 1 else xs[0])
        return [{n: part for (n, _), part in zip(out, parts)}
                for parts in zip(*(np.split(o, sizes) for o in outs))]

    return infer


def _open_runners(served: ServedModel, model: TritonModel, opts: ServeOptions) -> list[Any]:
    gpu = model.instance_kind == "KIND_GPU"
    # explicit, also for one instance: with ONNX Runtime's default (unset) thread count, served
    # requests took 2.7x as long on a 2-core machine as with the count set to the cores
    threads = opts.threads or max(1, (os.cpu_count() or 1) // model.instances)
    runners = []
    for _ in range(model.instances):
        runner = open_runner(served.artifact, served.manifest, device="cuda" if gpu else "cpu", threads=threads)
        runners.append(runner.activate())
    return runners


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line), from /proc (PyTriton runs on Linux only)."""
    table = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                table[int(d.name)] = (ppid, (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return table


def _is_tritonserver(cmd: str) -> bool:
    """The server itself (its stubs live in a folder named tritonserver too)."""
    return os.path.basename(cmd.split(" ")[0]) == "tritonserver"


def _below(table: dict[int, tuple[int, str]], roots: list[int]) -> list[int]:
    out, todo = [], list(roots)
    while todo:
        p = todo.pop()
        if p not in out:
            out.append(p)
            todo += [c for c, (ppid, _) in table.items() if ppid == p]
    return out


def server_processes(pid: int) -> list[int]:
    """The ``tritonserver`` processes ``pid`` started and everything below them (the python
    backend stubs and their helpers); not our own helpers such as multiprocessing's
    resource tracker, which ends with us and cleans up after us."""
    table = _process_table()
    return _below(table, [p for p, (ppid, cmd) in table.items() if ppid == pid and _is_tritonserver(cmd)])


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) of ``pid``; the start time tells a reused pid apart."""
    try:
        fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        return fields[0], int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] != "Z"


def _kill_leftovers(pids: list[int], grace_s: float = 5.0) -> list[int]:
    """SIGKILL whatever of ``pids`` outlived the orderly stop; returns those that had to be killed."""
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    killed = [p for p in pids if _alive(p)]
    for p in killed:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)
    return killed


# -- shared memory -----------------------------------------------------------------------------------
def _shm_names() -> set[str]:
    try:
        return set(os.listdir(SHM_DIR))
    except OSError:
        return set()


def _is_backend_shm(name: str, owner_pid: int) -> bool:
    """The two kinds of region the server's backends make: Triton's python backend names its
    regions after PyTriton's prefix (with the serving process's pid); PyTriton's tensor store
    (a process below each stub) makes multiprocessing.shared_memory segments (``psm_*``)."""
    return name.startswith(f"{SHM_PREFIX}{owner_pid}-") or name.startswith(PY_SHM_PREFIX)


def _shm_in_use(pid: int) -> set[str]:
    """The /dev/shm regions ``pid`` maps or holds open."""
    names = set()
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/maps", "rb") as f:
            for line in f:
                i = line.find(b" /dev/shm/")
                if i >= 0:
                    names.add(os.fsdecode(line[i + 10:].rstrip(b"\n").removesuffix(b" (deleted)")))
    with contextlib.suppress(OSError):
        for fd in os.scandir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(fd.path)
                if target.startswith("/dev/shm/"):
                    names.add(target[9:].removesuffix(" (deleted)"))
    return names


def _shm_in_use_anywhere() -> set[str]:
    names: set[str] = set()
    for d in os.scandir("/proc"):
        if d.name.isdigit():
            names |= _shm_in_use(int(d.name))
    return names


class ServerTree:
    """What a server started, followed until it is gone: the ``tritonserver`` processes
    ``owner`` started and every process below them (remembered with their start times, so
    that they are found after being re-parented and a reused pid is never signalled), and
    the backend regions in /dev/shm (:func:`_is_backend_shm`) that any of them other than
    tritonserver maps (tritonserver alone also maps regions clients register with it)."""

    def __init__(self, owner: int) -> None:
        self.owner = owner
        self.started_ns = time.time_ns()
        self.shm_before = _shm_names()   # what was there before: never ours
        self.procs: dict[int, int] = {}  # pid -> start time
        self.servers: set[int] = set()   # which of them are tritonserver
        self.shm_seen: set[str] = set()

    def refresh(self) -> list[int]:
        """Find new processes below the server and the regions they map; the live ones."""
        table = _process_table()
        roots = [p for p, (ppid, cmd) in table.items() if ppid == self.owner and _is_tritonserver(cmd)]
        for p in _below(table, roots + self.alive()):
            st = _stat(p)
            if st is not None:
                self.procs.setdefault(p, st[1])
                if _is_tritonserver(table.get(p, (0, ""))[1]):
                    self.servers.add(p)
        alive = self.alive()
        for p in alive:
            if p not in self.servers:
                self.shm_seen |= {n for n in _shm_in_use(p) if _is_backend_shm(n, self.owner)}
        return alive

    def alive(self) -> list[int]:
        out = []
        for p, start in self.procs.items():
            st = _stat(p)
            if st is not None and st[1] == start and st[0] != "Z":
                out.append(p)
        return out

    def kill(self) -> int:
        """Freeze every live process of the server (SIGSTOP: none can make a region now),
        note the regions they map, then SIGKILL them; how many there were."""
        alive = self.refresh()
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for p in alive:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(p, sig)
            if sig == signal.SIGSTOP:
                alive = self.refresh()
        return len(alive)

    def sweep_shm(self) -> tuple[list[tuple[str, int]], list[str]]:
        """Remove the backend regions the server made, once its processes are gone: those
        its processes were seen mapping, those named after this process, and, for a region
        made while they were exiting, any new ``psm_*`` region made since the start that no
        live process maps. Returns ((name, bytes) removed, lines for what could not be)."""
        new = _shm_names() - self.shm_before
        ours = {n for n in new if n in self.shm_seen or n.startswith(f"{SHM_PREFIX}{self.owner}-")}
        late = set()
        for n in new - ours:
            with contextlib.suppress(OSError):
                if n.startswith(PY_SHM_PREFIX) and os.stat(SHM_DIR / n).st_ctime_ns >= self.started_ns:
                    late.add(n)
        if late:
            late -= _shm_in_use_anywhere()
        freed, left = [], []
        for n in sorted(ours | late):
            path = SHM_DIR / n
            try:
                size = path.stat().st_size
                path.unlink()
                freed.append((n, size))
            except FileNotFoundError:
                pass  # its maker (a resource tracker) removed it meanwhile
            except OSError as e:
                left.append(f"{path} ({e.strerror or e})")
        return freed, left


def orphaned_shm(before: set[str], pid: int) -> list[str]:
    """Backend regions in /dev/shm that were not there in ``before`` and that no live process
    maps or holds open: what a server (``pid``) that has stopped must not have left."""
    new = {n for n in _shm_names() - before if _is_backend_shm(n, pid)}
    return sorted(str(SHM_DIR / n) for n in new - _shm_in_use_anywhere()) if new else []


# -- signals -----------------------------------------------------------------------------------------
class _Interrupted(BaseException):
    """A stop signal during the start (BaseException: library code catching Exception must
    not swallow it); raised once, in the main thread, to cut a blocking start short."""


class StopSignals:
    """SIGINT/SIGTERM/SIGHUP recorded in ``got`` (also SIGINT inherited as ignored, as by a
    job started with ``&``); the previous handlers come back afterwards. The handler takes no
    lock (that can deadlock the thread it interrupts). While ``interrupting`` is set it also
    raises :class:`_Interrupted`, once: it clears the flag itself first, so no later signal
    can raise into the clean-up."""

    def __init__(self) -> None:
        self.got: list[str] = []
        self.interrupting = False
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, _frame: Any) -> None:
        self.got.append(signal.Signals(signum).name)
        if self.interrupting:
            self.interrupting = False
            raise _Interrupted

    def __enter__(self) -> StopSignals:
        self._previous = {s: signal.signal(s, self._handler) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *_: Any) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)

    def code(self) -> int:
        """The exit code a shell gives a program the first signal stopped (130 for SIGINT)."""
        return 128 + int(signal.Signals[self.got[0]]) if self.got else 0


@dataclass(frozen=True)
class StopReport:
    """How a server ended: the signals, whether it had been ready, how long the stop took,
    what had to be killed, the /dev/shm regions removed (name, bytes), and what is left."""

    signals: tuple[str, ...]
    ready: bool
    stop_s: float
    killed: int
    freed: tuple[tuple[str, int], ...]
    left: tuple[str, ...]
    cause: str = "server exit"  # what stopped it when no signal did

    def line(self) -> str:
        how = ", ".join(self.signals) or self.cause
        what = "stopped" if self.ready or not self.signals else "interrupted while starting"
        mib = sum(b for _, b in self.freed) / 2**20
        shm = (f"freed {len(self.freed)} shared-memory region{'s' if len(self.freed) != 1 else ''} "
               f"({mib:.1f} MiB) the server's backends left in {SHM_DIR}" if self.freed
               else f"no shared-memory region was left in {SHM_DIR}")
        killed = f"; killed {self.killed} server process{'es' if self.killed != 1 else ''} that outlived the stop" \
            if self.killed else ""
        left = (f"; LEFT BEHIND {len(self.left)}: {', '.join(self.left[:5])}" if self.left else
                "; nothing left running")
        return f"{what} ({how}) in {self.stop_s:.1f} s; {shm}{killed}{left}"


def serve(targets: list[Path], opts: ServeOptions = ServeOptions(),
          on_ready: Callable[[list[TritonModel]], None] | None = None,
          stop: threading.Event | None = None, on_start: Callable[[str], None] | None = None,
          signals: StopSignals | None = None, on_stop: Callable[[StopReport], None] | None = None) -> StopReport:
    """Serve ``targets`` until SIGINT/SIGTERM/SIGHUP (or ``stop`` is set), then stop within
    seconds. Nothing is left behind: no process, no workspace, no shared-memory region; the
    report says what was removed (given to ``on_stop`` also when the server failed, before
    its error propagates). ``signals``: handlers the caller installed already."""
    check_environment()
    if signals is None:
        with StopSignals() as own:
            return serve(targets, opts, on_ready, stop, on_start, own, on_stop)
    stop = stop or threading.Event()
    served = resolve_targets(targets)
    check_artifact_hashes(served, opts.allow_hash_mismatch)
    models = [with_overrides(s.model, opts) for s in served]
    check_ports(opts)
    check_socket_paths(opts.workspace or Path(tempfile.gettempdir()), models)
    if signals.got or stop.is_set():  # stopped during the checks: nothing was started
        report = StopReport(tuple(signals.got), False, 0.0, 0, (), (), cause="stop requested")
        if on_stop:
            on_stop(report)
        return report
    if on_start:  # every check passed: what follows is the server's start
        on_start(f"starting Triton Inference Server for {', '.join(m.name for m in models)} ...")
    os.environ["LD_LIBRARY_PATH"] = stub_library_path(os.environ.get("LD_LIBRARY_PATH")) or ""
    if opts.verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    else:  # its warnings during a stop under load ("exited with failure", "failed to release
        # block ... remote process is already closed") are what the stop does; the last line says how it ended
        logging.getLogger("pytriton").setLevel(logging.ERROR)
    # PyTriton's stop, in its thread, may clean its workspace after _shutdown removed it (and
    # checked that it is gone): its "could not clean workspace" would follow our last line
    from pytriton.utils.workspace import CleanupWarning

    warnings.filterwarnings("ignore", category=CleanupWarning)

    tree = ServerTree(os.getpid())
    base = Path(tempfile.mkdtemp(prefix=WORKSPACE_PREFIX, dir=opts.workspace))
    state: dict[str, Any] = {"triton": None, "ready": False}
    cause = "server failed"
    try:
        _start_and_serve(served, models, opts, base, tree, signals, stop, state, on_ready)
        cause = "stop requested"
    except _Interrupted:
        pass
    finally:
        report = replace(_shutdown(state["triton"], base, tree, signals, state["ready"]), cause=cause)
        if on_stop:
            on_stop(report)
    return report


def _start_and_serve(served: list[ServedModel], models: list[TritonModel], opts: ServeOptions, base: Path,
                     tree: ServerTree, signals: StopSignals, stop: threading.Event, state: dict[str, Any],
                     on_ready: Callable[[list[TritonModel]], None] | None) -> None:
    """Start (a stop signal cuts the start short: :class:`StopSignals`), then serve until asked to stop."""
    from pytriton.exceptions import PyTritonError
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    def stopping() -> bool:
        return bool(signals.got) or stop.is_set()

    log_file = base / "tritonserver.log"
    config = TritonConfig(
        http_address=opts.host, grpc_address=opts.host, metrics_address=opts.host, http_port=opts.http_port,
        grpc_port=opts.grpc_port, metrics_port=opts.metrics_port, exit_timeout_secs=EXIT_TIMEOUT_S,
        log_file=None if opts.verbose else log_file)
    try:
        signals.interrupting = True
        if stopping():
            return
        runners = {m.name: _open_runners(s, m, opts) for s, m in zip(served, models)}
        triton = state["triton"] = Triton(config=config, workspace=base / "pytriton")
        for m in models:
            triton.bind(
                model_name=m.name, infer_func=[make_infer_fn(r, m) for r in runners[m.name]],
                inputs=[Tensor(name=t.name, dtype=NUMPY_TYPES[t.data_type], shape=t.dims) for t in m.inputs],
                outputs=[Tensor(name=t.name, dtype=NUMPY_TYPES[t.data_type], shape=t.dims) for t in m.outputs],
                config=ModelConfig(
                    batching=m.max_batch_size > 0, max_batch_size=max(m.max_batch_size, 1),
                    batcher=DynamicBatcher(max_queue_delay_microseconds=m.queue_delay_us,
                                           preferred_batch_size=list(m.preferred_batch) or None)
                    if m.dynamic_batching else None),
                strict=True)
        try:
            # PyTriton echoes tritonserver's console (an NVML error on every machine
            # without a GPU) unless told otherwise; the log file keeps it all
            triton._initialize_server()
            triton._triton_server._verbose = opts.verbose
            triton.run()
        except (PyTritonError, TimeoutError, RuntimeError) as e:
            if stopping():
                return
            raise BackendUnavailableError(f"Triton did not start: {e}{_log_tail(log_file)}") from None
    finally:
        signals.interrupting = False
    tree.refresh()
    if stopping():
        return
    state["ready"] = True
    if on_ready:
        on_ready(models)
    next_scan = 0.0
    while not stopping():
        time.sleep(0.2)  # a signal interrupts the sleep; its handler runs here
        if time.monotonic() >= next_scan:  # the regions the backends map now, for the sweep at the end
            tree.refresh()
            next_scan = time.monotonic() + SCAN_PERIOD_S
        if not stopping() and not triton.is_alive():
            raise BackendUnavailableError(f"tritonserver stopped unexpectedly{_log_tail(log_file)}")


def _shutdown(triton: Any, base: Path, tree: ServerTree, signals: StopSignals, ready: bool) -> StopReport:
    """Stop the server within seconds and make sure of it: PyTriton stops tritonserver (which
    waits up to EXIT_TIMEOUT_S for connections and in-flight requests) in a thread; the
    processes of the server are followed until they are gone, and whatever of them is still
    there after STOP_GRACE_S, or at a second signal, is frozen and killed. Then the /dev/shm
    regions they made are removed and the workspace with them."""
    t0 = time.monotonic()
    n_signals = len(signals.got)
    tree.refresh()
    stopper = None
    if triton is not None:
        stopper = threading.Thread(target=_quietly, args=(triton.stop,), name="twins-serve-stop", daemon=True)
        stopper.start()
    deadline = t0 + STOP_GRACE_S
    while time.monotonic() < deadline and len(signals.got) <= n_signals:
        alive = tree.refresh()
        if not alive and (stopper is None or not stopper.is_alive()):
            break
        if not tree.servers & set(alive):
            # tritonserver is gone: stubs it did not finalize (it exits without doing so when
            # its exit timeout runs out) would wait for it forever; a moment, then they are killed
            deadline = min(deadline, time.monotonic() + ORPHAN_GRACE_S)
        time.sleep(0.1)
    killed = tree.kill()
    while tree.alive() and time.monotonic() < deadline + 5:  # SIGKILL cannot be refused; a few ms
        time.sleep(0.02)
    if stopper is not None:
        stopper.join(timeout=1.0)
    freed, left = tree.sweep_shm()
    left = [f"process {p}" for p in tree.alive()] + left
    shutil.rmtree(base, ignore_errors=True)
    if base.exists():
        left.append(str(base))
    return StopReport(tuple(signals.got), ready, time.monotonic() - t0, killed, tuple(freed), tuple(left))


def _quietly(fn: Callable[[], Any]) -> None:
    with contextlib.suppress(Exception):
        fn()


def _log_tail(log_file: Path, lines: int = 8) -> str:
    try:
        text = log_file.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    errors = [ln for ln in text if ln[:1] == "E" or "error" in ln.lower()] or text
    return "; tritonserver said: " + " | ".join(ln.strip()[:300] for ln in errors[-lines:]) if errors else ""


def ready_lines(models: list[TritonModel], opts: ServeOptions) -> list[str]:
    """What ``twins-serve`` prints once every model is loaded (the tests wait for 'ready')."""
    return ([f"serving {describe(m)}" for m in models]
            + [f"HTTP http://{opts.host}:{opts.http_port}  gRPC {opts.host}:{opts.grpc_port}  "
               f"metrics http://{opts.host}:{opts.metrics_port}/metrics",
               f"ready (pid {os.getpid()}); Ctrl-C, SIGTERM or SIGHUP stops the server"])


def main_entry(targets: list[Path], opts: ServeOptions) -> int:
    """What the console script runs: serve, print progress, and how it ended. Exit 0 after a
    requested stop of a ready server; 128 + the signal (130 Ctrl-C, 143 SIGTERM) when one
    interrupted the start; 3 when something of the server could not be removed."""
    def ready(models: list[TritonModel]) -> None:
        print("\n".join(ready_lines(models, opts)), flush=True)

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    # installed before any work and kept until the last line is printed: a signal during
    # the checks or the stop is recorded, never a traceback or a half-done clean-up
    with StopSignals() as signals:
        report = serve(targets, opts, on_ready=ready, on_start=say, signals=signals,
                       on_stop=lambda r: say(r.line()))
    if report.left:
        return BackendUnavailableError.exit_code
    return 0 if report.ready or not report.signals else signals.code()


# -- a server in a subprocess (the load test and the tests start it as a user does) ---------------------
def free_ports(n: int = 3, host: str = "127.0.0.1") -> list[int]:
    """``n`` ports nothing listens on now (the kernel's choice; a race with another process
    is possible but then the server refuses the port with a clear error)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class ServerProcess:
    """``twins-serve TARGETS ARGS`` in a subprocess on free localhost ports, its output in
    ``workdir``; ``ignore_sigint`` starts it as a shell's ``&`` does (SIGINT ignored)."""

    def __init__(self, targets: list[str | os.PathLike[str]], args: list[str], workdir: Path,
                 ignore_sigint: bool = False) -> None:

        self.http, self.grpc, self.metrics = free_ports(3)
        self.workdir = workdir
        self.out, self.err = workdir / "serve.out", workdir / "serve.err"
        cmd = [sys.executable, "-m", "twins_deploy.cli.serve", *map(str, targets), *args,
               "--http-port", str(self.http), "--grpc-port", str(self.grpc),
               "--metrics-port", str(self.metrics), "--workspace", str(workdir)]
        preexec = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None
        self.shm_before = _shm_names()
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, preexec_fn=preexec)
        self.children: list[int] = []

    def wait_ready(self, timeout_s: float = 300.0) -> ServerProcess:
        """Block until the server prints 'ready'; a deadline for failure, not a measurement."""
        deadline = time.monotonic() + timeout_s
        while "ready (pid" not in self.out.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                tail = self.err.read_text(errors="replace").strip().splitlines()[-3:]
                raise BackendUnavailableError(f"twins-serve did not become ready (exit {self.proc.returncode}): "
                                              + " | ".join(tail))
            time.sleep(0.3)
        self.children = server_processes(self.proc.pid)
        return self

    def metric(self, name: str, model: str) -> float:
        """A Prometheus counter of ``model`` (e.g. nv_inference_count, nv_inference_exec_count)."""

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=30) as r:
            text = r.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name + "{") and f'model="{model}"' in line)

    def stop(self, sig: int = signal.SIGINT, timeout_s: float = 300.0) -> int:
        """Ask the server to stop with ``sig``; its exit code (0 for a clean stop)."""

        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.proc.returncode)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        _kill_leftovers(self.children, grace_s=0)

    def leftovers(self) -> list[str]:
        """What a clean stop must not leave: live server processes, the workspace, and backend
        regions in /dev/shm that were not there at the start and that no live process uses
        (judged from /dev/shm itself, not from what the server says it removed)."""
        left = [f"process {p}" for p in self.children if _alive(p)]
        left += orphaned_shm(self.shm_before, self.proc.pid)
        left += [str(p) for p in self.workdir.glob(f"{WORKSPACE_PREFIX}*")]
        return left
