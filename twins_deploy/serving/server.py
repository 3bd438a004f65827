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
  handled, the server is stopped, leftover children are killed, and the workspace (kept in a
  temporary folder, not ``~/.cache/pytriton``) and our ``/dev/shm`` regions are removed.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from twins_deploy.engines.opening import open_runner
from twins_deploy.errors import ArtifactError, BackendUnavailableError, InputShapeError, OptionError
from twins_deploy.manifest import Manifest, read_manifest
from twins_deploy.registry import MIN_IMAGE_SIDE
from twins_deploy.serving.triton_repo import (
    CONFIG_FILE,
    RepoEntry,
    TritonModel,
    TritonRepoOptions,
    find_entries,
    model_for,
    read_entry,
)

NUMPY_TYPES = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16}
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
SHM_PREFIX = "pytrtion"  # PyTriton's own spelling of its shared-memory region prefix
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

    def __post_init__(self) -> None:
        ports = (self.http_port, self.grpc_port, self.metrics_port)
        if len(set(ports)) != 3 or not all(0 < p < 65536 for p in ports):
            raise OptionError(f"HTTP, gRPC and metrics ports must be three different ports in 1..65535, got {ports}")
        for what, v in (("instances", self.instances), ("max batch", self.max_batch), ("threads", self.threads)):
            if v is not None and v < 1:
                raise OptionError(f"{what} must be >= 1, got {v}")
        if self.queue_delay_us is not None and self.queue_delay_us < 0:
            raise OptionError(f"queue delay must be >= 0 microseconds, got {self.queue_delay_us}")


@dataclass(frozen=True)
class ServedModel:
    model: TritonModel
    artifact: Path
    manifest: Manifest


# -- the environment -------------------------------------------------------------------------------
def check_environment() -> None:
    """Refuse an environment the bundled python backend cannot serve from, with the fix."""
    major = int(np.__version__.split(".")[0])
    if major >= 2:
        raise BackendUnavailableError(
            f"Triton's python backend (PyTriton's bundled tritonserver) returns empty outputs with numpy "
            f"{np.__version__}; serve from an environment with numpy<2: python -m venv .venv-serve && "
            ".venv-serve/bin/pip install 'twins-deploy[serve]' (make serve-env does this from a checkout)")
    try:
        import pytriton  # noqa: F401
        import tritonclient.grpc  # noqa: F401
    except ImportError as e:
        raise BackendUnavailableError(f"serving needs nvidia-pytriton and tritonclient ({e}); "
                                      "pip install 'twins-deploy[serve]' (Linux x86-64/arm64, glibc >= 2.35)") from None


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
            raise ArtifactError(f"{str(t)!r} is neither an artifact, a Triton model repository, nor an entry of one")
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
            raise InputShapeError(f"{model.name}: input {in_name!r} must be NCHW with 3 channels and H, W >= "
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


def server_processes(pid: int) -> list[int]:
    """The ``tritonserver`` processes ``pid`` started and everything below them (the python
    backend stubs and their helpers); not our own helpers such as multiprocessing's
    resource tracker, which ends with us and cleans up after us."""
    table = _process_table()
    todo = [p for p, (ppid, cmd) in table.items() if ppid == pid and "tritonserver" in cmd.split(" ")[0]]
    out = []
    while todo:
        p = todo.pop()
        out.append(p)
        todo += [c for c, (ppid, _) in table.items() if ppid == p]
    return out


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


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


def _remove_shm(pid: int) -> None:
    """PyTriton names the python backend's shared memory after the serving process."""
    shm = Path("/dev/shm")
    if shm.is_dir():
        for f in shm.glob(f"{SHM_PREFIX}{pid}-*"):
            with contextlib.suppress(OSError):
                f.unlink()


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[list[str]]:
    """Record SIGINT/SIGTERM/SIGHUP (also SIGINT inherited as ignored, as by a job started
    with ``&``); the previous handlers come back afterwards. The handler only appends to a
    list: taking a lock inside a signal handler can deadlock the thread it interrupts."""
    got: list[str] = []

    def handler(signum: int, _frame: Any) -> None:
        got.append(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield got
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def serve(targets: list[Path], opts: ServeOptions = ServeOptions(),
          on_ready: Callable[[list[TritonModel]], None] | None = None,
          stop: threading.Event | None = None, on_start: Callable[[str], None] | None = None) -> list[str]:
    """Serve ``targets`` until SIGINT/SIGTERM/SIGHUP (or ``stop`` is set); returns the signals
    received. Nothing is left behind: no process, no workspace, no shared-memory region."""
    check_environment()
    served = resolve_targets(targets)
    models = [with_overrides(s.model, opts) for s in served]
    check_ports(opts)
    check_socket_paths(opts.workspace or Path(tempfile.gettempdir()), models)
    if on_start:  # every check passed: what follows is the server's start
        on_start(f"starting Triton Inference Server for {', '.join(m.name for m in models)} ...")
    os.environ["LD_LIBRARY_PATH"] = stub_library_path(os.environ.get("LD_LIBRARY_PATH")) or ""
    if opts.verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from pytriton.exceptions import PyTritonError
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    stop = stop or threading.Event()
    base = Path(tempfile.mkdtemp(prefix=WORKSPACE_PREFIX, dir=opts.workspace))
    log_file = base / "tritonserver.log"
    config = TritonConfig(
        http_address=opts.host, grpc_address=opts.host, metrics_address=opts.host, http_port=opts.http_port,
        grpc_port=opts.grpc_port, metrics_port=opts.metrics_port, exit_timeout_secs=10,
        log_file=None if opts.verbose else log_file)
    triton = None
    with _stop_on_signals() as got:
        def stopping() -> bool:
            return bool(got) or stop.is_set()

        try:
            runners = {m.name: _open_runners(s, m, opts) for s, m in zip(served, models)}
            triton = Triton(config=config, workspace=base / "pytriton")
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
            if not stopping():
                try:
                    # PyTriton echoes tritonserver's console (an NVML error on every machine
                    # without a GPU) unless told otherwise; the log file keeps it all
                    triton._initialize_server()
                    triton._triton_server._verbose = opts.verbose
                    triton.run()
                except (PyTritonError, TimeoutError, RuntimeError) as e:
                    raise BackendUnavailableError(f"Triton did not start: {e}{_log_tail(log_file)}") from None
            if not stopping() and on_ready:
                on_ready(models)
            while not stopping():
                time.sleep(0.2)  # a signal interrupts the sleep; its handler runs here
                if not stopping() and not triton.is_alive():
                    raise BackendUnavailableError(f"tritonserver stopped unexpectedly{_log_tail(log_file)}")
        finally:
            _shutdown(triton, base)
    return got


def _shutdown(triton: Any, base: Path) -> None:
    """Stop the server and its stubs, then make sure of it: no child, no workspace, no shm."""
    children = server_processes(os.getpid())
    if triton is not None:
        with contextlib.suppress(Exception):
            triton.stop()
    _kill_leftovers(children)
    _remove_shm(os.getpid())
    shutil.rmtree(base, ignore_errors=True)


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
    """What the console script runs: serve, print progress, exit 0 after a requested stop."""
    def ready(models: list[TritonModel]) -> None:
        print("\n".join(ready_lines(models, opts)), flush=True)

    got = serve(targets, opts, on_ready=ready, on_start=lambda text: print(text, file=sys.stderr, flush=True))
    print(f"stopped ({', '.join(got) or 'server exit'}); nothing left running", file=sys.stderr, flush=True)
    return 0


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
        """What a clean stop must not leave: live server processes, the workspace, shm regions."""
        left = [f"process {p}" for p in self.children if _alive(p)]
        left += [str(p) for p in Path("/dev/shm").glob(f"{SHM_PREFIX}{self.proc.pid}-*")]
        left += [str(p) for p in self.workdir.glob(f"{WORKSPACE_PREFIX}*")]
        return left
