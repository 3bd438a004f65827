"""twins-serve's faults that need no Triton server: the main environment (numpy 2) refused in
one line before any work, the exit codes in the help, an artifact whose sha256 is not its
manifest's refused (or, with a flag, warned about), the stop signals, and the /dev/shm sweep
after a stop, judged against /dev/shm itself. The real server's stop under load is in
tests/test_serving_server.py (the serving environment)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from multiprocessing import shared_memory
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from twins_deploy.artifacts import file_sha256
from twins_deploy.cli.serve import build_parser
from twins_deploy.cli.serve import main as serve_main
from twins_deploy.errors import ArtifactError, BackendUnavailableError
from twins_deploy.serving import server as srv

needs_shm = pytest.mark.skipif(not Path("/dev/shm").is_dir() or not Path("/proc/self/maps").exists(),
                               reason="needs Linux's /dev/shm and /proc")


# -- the environment ---------------------------------------------------------------------------------
@pytest.mark.skipif(int(np.__version__.split(".")[0]) < 2, reason="the main environment has numpy 2")
def test_main_environment_is_refused_in_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    def no_work(*a, **k):
        raise AssertionError("work began in an environment that cannot serve")

    monkeypatch.setattr(srv, "resolve_targets", no_work)
    code = serve_main([str(tmp_path / "repo"), "--http-port", "9000"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len(err) == 1, err
    assert err[0].startswith("error: twins-serve needs the serving environment (numpy<2 with nvidia-pytriton)")
    assert f"numpy {np.__version__}" in err[0]
    assert f"make serve-env, then .venv-serve/bin/twins-serve {tmp_path / 'repo'} --http-port 9000" in err[0]
    assert "pip install 'twins-deploy[serve]'" in err[0]


@pytest.mark.skipif(int(np.__version__.split(".")[0]) < 2, reason="the main environment has numpy 2")
def test_installed_console_script_says_so_with_no_traceback(tmp_path):
    """As a user meets it: the script installed in the main environment, a target that does not exist."""
    script = Path(sys.executable).with_name("twins-serve")
    if not script.exists():
        pytest.skip("twins-serve is not installed beside this interpreter")
    r = subprocess.run([str(script), str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=300)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 3 and len(lines) == 1 and r.stdout == "", r.stderr
    assert "needs the serving environment" in lines[0] and ".venv-serve/bin/twins-serve" in lines[0]


def test_missing_pytriton_is_refused_with_the_same_fix(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pytriton(name, *a, **k):
        if name.split(".")[0] == "pytriton":
            raise ModuleNotFoundError("No module named 'pytriton'", name="pytriton")
        return real_import(name, *a, **k)

    monkeypatch.setattr(srv.np, "__version__", "1.26.4")
    monkeypatch.setattr(builtins, "__import__", no_pytriton)
    with pytest.raises(BackendUnavailableError, match=r"^twins-bench needs the serving environment.*lacks pytriton.*"
                                                      r"make serve-env, then \.venv-serve/bin/twins-bench --serve r"):
        srv.check_environment("twins-bench --serve r")


def test_help_names_every_exit_code_and_the_hash_flag():
    text = build_parser().format_help()
    for code, what in (("0", "stopped on request"), ("2", "bad input"), ("3", "not the serving environment"),
                       ("130", "Ctrl-C"), ("143", "SIGTERM")):
        assert any(ln.strip().startswith(f"{code} ") and what in ln for ln in text.splitlines()), (code, text)
    assert "--allow-hash-mismatch" in text and "make serve-env" in text


# -- the artifact's hash ---------------------------------------------------------------------------------
def _served(tmp_path: Path, data: bytes, recorded: bytes | None, plan: bool = False) -> srv.ServedModel:
    art = tmp_path / ("model.plan" if plan else "model.onnx")
    art.write_bytes(data)
    src = tmp_path / "recorded"
    src.write_bytes(recorded or b"")
    manifest = SimpleNamespace(sha256=file_sha256(src) if recorded is not None else None, is_plan=plan)
    return srv.ServedModel(model=None, artifact=art, manifest=manifest)


def test_an_artifact_with_its_manifests_hash_passes_silently(tmp_path, capsys):
    srv.check_artifact_hashes([_served(tmp_path, b"graph", b"graph")])
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("data, recorded", [(b"graph", b"graph, edited"), (b"", b"graph"), (b"graph" * 1000, b"x")])
def test_a_changed_artifact_is_refused_naming_file_and_both_hashes(tmp_path, data, recorded):
    s = _served(tmp_path, data, recorded)
    with pytest.raises(ArtifactError) as e:
        srv.check_artifact_hashes([s])
    line = str(e.value)
    assert "\n" not in line and e.value.exit_code == 2
    assert str(s.artifact) in line and file_sha256(s.artifact)[:12] in line and s.manifest.sha256[:12] in line
    assert "--allow-hash-mismatch" in line


def test_a_manifest_recording_no_hash_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match="records none to check it against"):
        srv.check_artifact_hashes([_served(tmp_path, b"graph", None)])


def test_the_flag_turns_the_refusal_into_one_warning(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ok, bad = _served(tmp_path / "a", b"g", b"g"), _served(tmp_path / "b", b"graph", b"other")
    srv.check_artifact_hashes([ok, bad], allow_mismatch=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: ") and str(bad.artifact) in err[0]
    assert "serving it anyway (--allow-hash-mismatch)" in err[0]


def test_a_changed_plan_is_refused_even_with_the_flag(tmp_path):
    """TensorRT may crash on a plan that is not its manifest's: opening refuses it either way."""
    with pytest.raises(ArtifactError) as e:
        srv.check_artifact_hashes([_served(tmp_path, b"plan", b"other plan", plan=True)], allow_mismatch=True)
    assert "--allow-hash-mismatch" not in str(e.value) and "re-export" in str(e.value)


# -- signals ---------------------------------------------------------------------------------------------
def test_stop_signals_record_raise_once_during_the_start_and_restore_handlers():
    before = {s: signal.getsignal(s) for s in srv.STOP_SIGNALS}
    with srv.StopSignals() as sig:
        os.kill(os.getpid(), signal.SIGHUP)  # serving: recorded only
        time.sleep(0.05)
        assert sig.got == ["SIGHUP"]
        sig.interrupting = True
        with pytest.raises(srv._Interrupted):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        assert not sig.interrupting
        os.kill(os.getpid(), signal.SIGINT)  # a second one during the clean-up: recorded, never raised
        time.sleep(0.05)
        assert sig.got == ["SIGHUP", "SIGTERM", "SIGINT"]
        assert sig.code() == 129
    assert {s: signal.getsignal(s) for s in srv.STOP_SIGNALS} == before


@pytest.mark.parametrize("first, code", [("SIGINT", 130), ("SIGTERM", 143), ("SIGHUP", 129)])
def test_exit_code_of_a_signal_is_the_shells(first, code):
    sig = srv.StopSignals()
    sig.got = [first, "SIGINT"]
    assert sig.code() == code


def test_stop_report_line_says_what_was_freed_and_what_is_left():
    freed = (("psm_1", 4 * 2**20), ("pytrtion1-a", 2**20))
    r = srv.StopReport(("SIGTERM",), True, 3.24, 3, freed, ())
    assert r.line() == ("stopped (SIGTERM) in 3.2 s; freed 2 shared-memory regions (5.0 MiB) the server's backends "
                        "left in /dev/shm; killed 3 server processes that outlived the stop; nothing left running")
    assert srv.StopReport(("SIGINT",), False, 1.0, 0, (), ()).line() == (
        "interrupted while starting (SIGINT) in 1.0 s; no shared-memory region was left in /dev/shm; "
        "nothing left running")
    assert "LEFT BEHIND 1: /dev/shm/psm_x" in srv.StopReport(("SIGTERM",), True, 1, 0, (), ("/dev/shm/psm_x",)).line()


# -- the processes and the /dev/shm sweep (no Triton: stand-in processes) ----------------------------------
HOLDER = """
import sys, time
from multiprocessing import shared_memory, resource_tracker
shm = shared_memory.SharedMemory(name=sys.argv[1], create=sys.argv[2] == "create", size=65536)
resource_tracker.unregister(shm._name, "shared_memory")  # this test decides who removes it
print("mapped", flush=True)
time.sleep(600)
"""


def _holder(name: str, create: bool = True) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, name, "create" if create else "attach"],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "mapped"
    return p


def _region(name: str) -> None:
    shm = shared_memory.SharedMemory(name=name, create=True, size=4096)
    from multiprocessing import resource_tracker

    resource_tracker.unregister(shm._name, "shared_memory")
    shm.close()


@pytest.fixture
def regions():
    """Unique names for this test's regions; whatever is left of them is removed afterwards."""
    tag = f"{os.getpid()}{time.monotonic_ns() % 10**8}"
    names = SimpleNamespace(tag=tag)
    yield names
    for p in Path("/dev/shm").glob(f"*{tag}*"):
        p.unlink(missing_ok=True)


@needs_shm
def test_the_sweep_removes_what_the_servers_processes_made_and_nothing_else(regions):
    t = regions.tag
    _region(f"psm_old{t}")                  # there before the server: never ours
    tree = srv.ServerTree(os.getpid())
    backend = _holder(f"psm_be{t}")         # a "tensor store" below the server
    other = _holder(f"psm_other{t}")        # another program's region, mapped by it, made after the start
    _region(f"{srv.SHM_PREFIX}{os.getpid()}-{t}")  # named after the serving process (python backend)
    _region(f"psm_late{t}")                 # made while the server's processes exited, mapped by none
    _region(f"unrelated{t}")                # not a backend's name
    try:
        start = srv._stat(backend.pid)[1]
        tree.procs[backend.pid] = start
        assert backend.pid in tree.refresh() and f"psm_be{t}" in tree.shm_seen  # (and its resource tracker)
        assert f"psm_other{t}" not in tree.shm_seen
        assert tree.kill() >= 1
        backend.wait(10)
        deadline = time.monotonic() + 10
        while tree.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tree.alive() == []
        freed, left = tree.sweep_shm()
        assert sorted(n for n, _ in freed) == sorted([f"psm_be{t}", f"{srv.SHM_PREFIX}{os.getpid()}-{t}",
                                                       f"psm_late{t}"]) and left == []
        assert dict(freed)[f"psm_be{t}"] == 65536
        shm = set(os.listdir("/dev/shm"))
        assert {f"psm_old{t}", f"psm_other{t}", f"unrelated{t}"} <= shm
        assert not {f"psm_be{t}", f"psm_late{t}", f"{srv.SHM_PREFIX}{os.getpid()}-{t}"} & shm
    finally:
        for p in (backend, other):
            p.kill()
            p.wait()


@needs_shm
def test_a_reused_pid_is_never_signalled():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        tree = srv.ServerTree(os.getpid())
        tree.procs[p.pid] = srv._stat(p.pid)[1] + 1  # the pid as another process once had it
        assert tree.alive() == [] and tree.kill() == 0
        time.sleep(0.2)
        assert p.poll() is None
    finally:
        p.kill()
        p.wait()


@needs_shm
def test_orphaned_shm_is_judged_from_dev_shm(regions):
    t = regions.tag
    before = set(os.listdir("/dev/shm"))
    holder = _holder(f"psm_held{t}")
    try:
        _region(f"psm_orphan{t}")
        _region(f"{srv.SHM_PREFIX}4242-{t}")
        left = srv.orphaned_shm(before, 4242)
        assert f"/dev/shm/psm_orphan{t}" in left and f"/dev/shm/{srv.SHM_PREFIX}4242-{t}" in left
        assert f"/dev/shm/psm_held{t}" not in left  # a live process uses it
    finally:
        holder.kill()
        holder.wait()
