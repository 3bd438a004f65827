"""Faults an operator meets (issue 21): two runs racing for one output folder, special files
where a file or folder is expected, a full disk or a file-size limit, signals other than
Ctrl-C, a run killed with SIGKILL, Ctrl-C while a command is still starting, and output
that cannot be written. Each against the contract: one ``error:`` line and the documented
exit code, no traceback, no hang, nothing of anyone else's removed, nothing half-written.
"""
from __future__ import annotations

import errno
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

import twins_deploy.artifacts as artifacts
import twins_deploy.pipeline as pipeline
from helpers_export import exported_graph
from twins_deploy.cli.bench import main as bench_main
from twins_deploy.cli.export import main as export_main
from twins_deploy.cli.inspect import main as inspect_main
from twins_deploy.cli.predict import main as predict_main
from twins_deploy.cli.validate import main as validate_main
from twins_deploy.errors import ArtifactError, quoted
from twins_deploy.startup import CONSOLE_SCRIPTS
from helpers_cli import assert_one_error, call, held_elsewhere, snapshot

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SMALL = ["--model", "pcpvt_s", "--img-size", "32", "--min-batch", "1", "--opt-batch", "2", "--max-batch", "2", "-q"]
STEM = "pcpvt_s_fp32_32x32"


def one_error(rc: int, err: str, code: int = 2, needle: str = "") -> str:
    return assert_one_error(rc, err, code, needle, ignoring=("note:", "warning:"))


@pytest.fixture
def no_hang():
    """Fail, rather than hang the suite, when a command blocks (opening a FIFO does)."""
    class Hung(Exception):
        pass

    def alarm(_signum, _frame):
        raise Hung("the command blocked for 60 s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small")
    assert export_main([*SMALL, "--out-dir", str(out), "--no-validate"]) == 0
    return out / f"{STEM}.onnx"


# -- two runs, one output folder ------------------------------------------------------------------
def _contender(target: str, start: float, hold_s: float, results) -> None:
    """One run: creates and locks ``target`` (all contenders look for missing folders at the
    same moment, so each believes it creates them), then holds it and writes a file."""
    real = artifacts._missing_parents

    def late(d):
        missing = real(d)
        time.sleep(max(0.0, start - time.time()))
        return missing

    artifacts._missing_parents = late
    try:
        with artifacts.output_dir(target) as d:
            time.sleep(hold_s)
            (d / f"work-{os.getpid()}").write_text("done")
            results.put(("held", os.getpid()))
    except ArtifactError as e:
        results.put(("refused", str(e)))
    except Exception as e:  # the holder crashing is what the race did before
        results.put(("crashed", repr(e)))


@pytest.mark.parametrize("contenders, depth", [(2, 1), (2, 3), (4, 2)])
def test_racing_runs_into_a_new_folder_never_remove_the_holders_work(tmp_path, contenders, depth):
    target = tmp_path.joinpath(*[f"new{i}" for i in range(depth)])
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    start = time.time() + 0.5
    procs = [ctx.Process(target=_contender, args=(str(target), start, 0.5, results)) for _ in range(contenders)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    got = [results.get(timeout=5) for _ in procs]
    held = [g for g in got if g[0] == "held"]
    assert len(held) >= 1 and not [g for g in got if g[0] == "crashed"], got
    for _, pid in held:
        assert (target / f"work-{pid}").read_text() == "done"
    for kind, msg in got:
        if kind == "refused":
            assert "is writing into" in msg and "pid " in msg, msg
    assert not (target / artifacts.LOCK_NAME).exists()


def test_the_loser_names_the_holder_and_removes_nothing(tmp_path, capsys):
    out = tmp_path / "a" / "b"
    with held_elsewhere(out, lambda d: (d / "holders-file").write_text("x")) as pid:
        rc, _, err = call(export_main, [*SMALL, "--out-dir", str(out)], capsys)
        line = one_error(rc, err, 2, "is writing into")
        assert f"pid {pid}" in line and "since" in line and "choose another --out-dir" in line
        assert (out / "holders-file").exists() and (out / artifacts.LOCK_NAME).exists()
    with artifacts.output_dir(out):  # the holder was killed: its note is stale, and replaced
        pass
    assert sorted(p.name for p in out.iterdir()) == ["holders-file"]


def test_a_failed_run_removes_only_the_folders_it_made(tmp_path):
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError):
        with artifacts.output_dir(tmp_path / "kept" / "x" / "y"):
            raise RuntimeError("the run failed")
    assert [p.name for p in tmp_path.iterdir()] == ["kept"] and list((tmp_path / "kept").iterdir()) == []
    # a folder that held something before the run is never removed
    (tmp_path / "kept" / "mine").mkdir()
    (tmp_path / "kept" / "mine" / "f").write_text("x")
    with pytest.raises(RuntimeError):
        with artifacts.output_dir(tmp_path / "kept" / "mine"):
            raise RuntimeError("the run failed")
    assert (tmp_path / "kept" / "mine" / "f").exists()


def _lockable_elsewhere(folder: Path) -> bool:
    """Whether another process could take ``folder``'s lock now (it is refused while held)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the other run
        code = 2
        try:
            with artifacts.output_dir(folder):
                pass
            code = 0
        except ArtifactError:
            code = 1
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def test_holding_is_reentrant_within_a_process_and_still_excludes_others(tmp_path):
    out = tmp_path / "out"
    with artifacts.output_dir(out), artifacts.output_dir(tmp_path / "." / "out"):
        assert not _lockable_elsewhere(out)
    assert _lockable_elsewhere(out)  # released when the outer hold ends, not the inner
    with artifacts.output_dir(out):
        with artifacts.output_dir(out):
            pass
        assert not _lockable_elsewhere(out) and (out / artifacts.LOCK_NAME).exists()


@pytest.mark.parametrize("same_folder", [False, True], ids=["own-repo", "repo-is-out-dir"])
def test_an_export_holds_its_triton_repository_for_the_whole_run(small_onnx, tmp_path, capsys, monkeypatch,
                                                                   same_folder):
    """No other run can take the entry between the up-front check and the write; --out-dir and
    --triton-repo may be one folder (this process must not refuse itself)."""
    out = tmp_path / "out"
    repo = out if same_folder else tmp_path / "repo"
    graph = exported_graph(small_onnx)
    mid_export: list[bool] = []

    def export(*a, **k):
        mid_export.append(_lockable_elsewhere(repo))
        return graph

    monkeypatch.setattr(pipeline, "export_onnx", export)
    rc, _, err = call(export_main, [*SMALL, "--out-dir", str(out), "--triton-repo", str(repo), "--no-validate"],
                      capsys)
    assert rc == 0, err
    assert mid_export == [False]
    assert (repo / STEM / "1" / "model.onnx").is_file() and (out / f"{STEM}.onnx").is_file()
    assert _lockable_elsewhere(repo) and not (repo / artifacts.LOCK_NAME).exists()


def test_a_triton_repository_held_by_another_run_is_refused_before_the_export(small_onnx, tmp_path, capsys,
                                                                            monkeypatch):
    repo = tmp_path / "repo"
    monkeypatch.setattr(pipeline, "export_onnx", lambda *a, **k: pytest.fail("exported into a held repository"))
    with held_elsewhere(repo) as pid:
        rc, _, err = call(export_main, [*SMALL, "--out-dir", str(tmp_path / "out"), "--triton-repo", str(repo)],
                          capsys)
    line = one_error(rc, err, 2, "is writing into")
    assert f"pid {pid}" in line and "--triton-repo" in line
    assert not (tmp_path / "out").exists()


def test_a_stale_lock_note_is_reported_and_replaced(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / artifacts.LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "command": "twins-export --model x",
                                                      "since": "2026-01-01T00:00:00+00:00"}))
    with artifacts.output_dir(out):
        note = json.loads((out / artifacts.LOCK_NAME).read_text())
        assert note["pid"] == os.getpid()
    err = capsys.readouterr().err
    assert "left a lock note" in err and f"pid {dead.pid}" in err
    assert list(out.iterdir()) == []


def test_a_folder_replaced_while_starting_is_refused(tmp_path, monkeypatch):
    import fcntl

    out = tmp_path / "out"
    real = fcntl.flock

    def replace_then_lock(fd, op):
        os.rename(out, tmp_path / "moved")
        out.mkdir()
        return real(fd, op)

    monkeypatch.setattr(fcntl, "flock", replace_then_lock)
    with pytest.raises(ArtifactError, match="removed or replaced"):
        with artifacts.output_dir(out):
            pytest.fail("the run went on in a folder that is no longer its output directory")


# -- what a killed run left -----------------------------------------------------------------------
def test_leftovers_of_a_killed_run_are_removed_or_restored(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".a.onnx.k3x_9q2z.partial").write_bytes(b"x" * 2048)  # staged, never installed
    (out / ".a.onnx.json.ab12cd34.partial").write_text("{}")
    # b: killed between moving the old pair aside and installing the new one
    (out / ".b.onnx.previous").write_text("old b")
    (out / ".b.onnx.json.previous").write_text('{"old": "b"}')
    # c: killed after installing the new artifact, before its manifest
    (out / "c.onnx").write_text("new c")
    (out / ".c.onnx.previous").write_text("old c")
    (out / ".c.onnx.json.previous").write_text('{"old": "c"}')
    # d: killed after the new pair was in place, before the backups were removed
    (out / "d.onnx").write_text("new d")
    (out / "d.onnx.json").write_text('{"new": "d"}')
    (out / ".d.onnx.previous").write_text("old d")
    (out / ".d.onnx.json.previous").write_text('{"old": "d"}')
    (out / "user.partial").write_text("not ours")  # not a staging name: kept
    with artifacts.output_dir(out):
        pass
    files = {p.name: p.read_text() for p in out.iterdir()}
    assert files == {"b.onnx": "old b", "b.onnx.json": '{"old": "b"}', "c.onnx": "old c",
                     "c.onnx.json": '{"old": "c"}', "d.onnx": "new d", "d.onnx.json": '{"new": "d"}',
                     "user.partial": "not ours"}
    notes = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("note:")]
    assert len(notes) == 8 and sum("restored" in n for n in notes) == 4, notes


def test_an_export_after_a_sigkill_cleans_up_what_it_left(small_onnx, tmp_path, capsys, monkeypatch):
    """A real export killed with SIGKILL at its export step, once its staged file exists; the
    next run (its exporter stood in for) removes the ``.partial`` and says so."""
    out = tmp_path / "out"
    proc = subprocess.Popen([str(BIN / "twins-export"), *[a for a in SMALL if a != "-q"], "--out-dir", str(out),
                             "--no-validate"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    with proc.stderr:
        try:
            for line in proc.stderr:
                if line.startswith("[") and " export " in line:
                    break
            deadline = time.time() + 30
            while not list(out.glob(".*.partial")) and time.time() < deadline and proc.poll() is None:
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            proc.kill()
    if not list(out.glob(".*.partial")):
        pytest.skip("the export finished before it could be killed mid-write")
    graph = exported_graph(small_onnx)
    monkeypatch.setattr(pipeline, "export_onnx", lambda *a, **k: graph)
    rc, _, err = call(export_main, [*SMALL, "--out-dir", str(out), "--no-validate"], capsys)
    assert rc == 0, err
    assert "left by a run that was killed" in err
    assert not list(out.glob(".*.partial")) and not (out / artifacts.LOCK_NAME).exists()


# -- special files where a file or a folder goes ----------------------------------------------------
def _make_special(kind: str, where: Path) -> Path:
    p = where / f"special-{kind}"
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(p))
        s.close()
    elif kind == "loop":
        os.symlink(p.name, p)
    elif kind == "broken":
        os.symlink(where / "nowhere", p)
    elif kind == "device":
        os.symlink(os.devnull, p)
    elif kind == "too-long":
        p = where / ("n" * 300)
    return p


KIND_WORDS = {"fifo": "FIFO", "socket": "socket", "loop": "symlink loop", "broken": "broken symlink",
              "device": "a device", "too-long": "too long"}

PLACES = {
    "export --out-dir": lambda p, onnx, t: (export_main, [*SMALL, "--out-dir", str(p)]),
    "export --weights": lambda p, onnx, t: (export_main, [*SMALL, "--weights", str(p), "--out-dir", str(t / "o")]),
    "validate artifact": lambda p, onnx, t: (validate_main, [str(p)]),
    "validate --report": lambda p, onnx, t: (validate_main, [str(onnx), "--report", str(p), "--batch", "1"]),
    "inspect artifact": lambda p, onnx, t: (inspect_main, [str(p)]),
    "predict image": lambda p, onnx, t: (predict_main, [str(onnx), str(p)]),
    "export --images": lambda p, onnx, t: (export_main, [*SMALL, "--images", str(p), "--out-dir", str(t / "o")]),
    "bench --out": lambda p, onnx, t: (bench_main, ["--model", "pcpvt_s", "--img-size", "32", "--batch", "1",
                                                    "--backends", "torch", "--out", str(p)]),
}


@pytest.mark.parametrize("kind", list(KIND_WORDS))
@pytest.mark.parametrize("place", list(PLACES))
def test_special_paths_are_refused_by_kind_without_hanging(place, kind, small_onnx, tmp_path, capsys, no_hang):
    p = _make_special(kind, tmp_path)
    main, args = PLACES[place](p, small_onnx, tmp_path)
    before = snapshot(tmp_path)
    rc, _, err = call(main, args, capsys)
    line = one_error(rc, err, 2)
    assert KIND_WORDS[kind] in line or (kind == "broken" and "does not exist" in line), line
    assert snapshot(tmp_path) == before


# -- the machine refuses a write ------------------------------------------------------------------
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EIO, errno.EACCES])
def test_a_refused_write_is_one_line_and_keeps_the_previous_pair(code, small_onnx, tmp_path, capsys, monkeypatch):
    graph = exported_graph(small_onnx)  # the exporter stood in for: the write is what is tried
    monkeypatch.setattr(pipeline, "export_onnx", lambda *a, **k: graph)
    out = tmp_path / "out"
    out.mkdir()
    (out / f"{STEM}.onnx").write_bytes(b"the old model")
    (out / f"{STEM}.onnx.json").write_text('{"old": true}')
    before = snapshot(tmp_path)

    def refuse(path, obj):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(artifacts, "_write_json", refuse)
    rc, _, err = call(export_main, [*SMALL, "--out-dir", str(out), "--force", "--no-validate"], capsys)
    one_error(rc, err, 2, os.strerror(code))
    assert snapshot(tmp_path) == before


def test_a_file_size_limit_is_one_line_and_leaves_nothing(tmp_path):
    """Under ``ulimit -f`` a write past the limit fails with EFBIG (SIGXFSZ is ignored rather
    than killing the run mid-write); the staged file is removed."""
    import resource

    out = tmp_path / "out"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, resource.RLIM_INFINITY))

    res = subprocess.run([str(BIN / "twins-export"), *SMALL, "--out-dir", str(out), "--no-validate"],
                         capture_output=True, text=True, timeout=300, preexec_fn=limit)
    one_error(res.returncode, res.stderr, 2, "too large")
    assert snapshot(tmp_path) == {}


def test_output_that_cannot_be_written_is_one_line(small_onnx):
    with open("/dev/full", "w") as full:
        res = subprocess.run([str(BIN / "twins-inspect"), str(small_onnx), "--json"], stdout=full,
                             stderr=subprocess.PIPE, text=True, timeout=120)
    one_error(res.returncode, res.stderr, 2, "cannot write to standard output: No space left on device")


# -- signals --------------------------------------------------------------------------------------
def _stop_at_step(out: Path, sig: int, step: str = "export", preexec=None) -> tuple[int, str]:
    """A real export (no validation: the signal arrives during the export), sent ``sig`` at ``step``."""
    proc = subprocess.Popen([str(BIN / "twins-export"), *[a for a in SMALL if a != "-q"], "--out-dir", str(out),
                             "--no-validate"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=preexec)
    with proc.stderr:
        try:
            seen = []
            for line in proc.stderr:
                seen.append(line)
                if line.startswith("[") and f" {step} " in line:
                    proc.send_signal(sig)
                    break
            rest = proc.stderr.read()
            return proc.wait(timeout=120), "".join(seen) + rest
        finally:
            proc.kill()


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGUSR1])
def test_other_terminating_signals_clean_up_as_ctrl_c_does(sig, tmp_path):
    out = tmp_path / "out"
    rc, err = _stop_at_step(out, sig)
    name = signal.Signals(sig).name
    assert rc == 128 + sig, err
    assert err.strip().splitlines()[-1] == f"terminated by {name}; no partial artifact was left behind", err
    assert "Traceback" not in err and snapshot(tmp_path) == {}


def test_an_ignored_sighup_stays_ignored(tmp_path):
    """``nohup twins-export ...``: SIGHUP arrives ignored, and a closed terminal must not stop the run."""
    out = tmp_path / "out"
    rc, err = _stop_at_step(out, signal.SIGHUP, preexec=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    assert rc == 0, err
    assert (out / f"{STEM}.onnx").is_file() and (out / f"{STEM}.onnx.json").is_file()


def test_ctrl_c_while_a_command_is_still_starting_is_one_line(tmp_path):
    """Ctrl-C during the seconds ``import torch`` takes: made deterministic by an import hook
    that raises KeyboardInterrupt when torch is imported, as the console script imports it."""
    code = f"""
import sys
sys.argv = [{str(BIN / 'twins-export')!r}, "--model", "svt_s"]
class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            raise KeyboardInterrupt
sys.meta_path.insert(0, Interrupt())
from twins_deploy.cli.export import main
sys.exit(main())
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode in (130, -signal.SIGINT), res.stderr
    assert res.stderr.strip() == "interrupted while starting; nothing was written", res.stderr


def test_the_startup_guard_knows_every_console_script():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert CONSOLE_SCRIPTS == set(scripts)


# -- error lines stay bounded ---------------------------------------------------------------------
def test_quoted_bounds_what_an_error_line_echoes():
    assert quoted("abc") == "'abc'"
    long = quoted("x" * 20_000_000, 200)
    assert len(long) < 260 and long.endswith("(20000002 characters)")
