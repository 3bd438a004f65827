"""Faults a production user meets with twins-bench's results: a results place that cannot be
used (found before anything is measured, not after), an earlier run's results (never
replaced silently), another run writing into the same --out, a full disk or a refused write
while the results are written, a busy machine (its load recorded and warned about), and
step counters that add up.

Every run here is tiny: a model that is an identity and Runners that compute nothing, so
that no case measures for real (a benchmark is a command, never a timed assertion)."""
from __future__ import annotations

import errno
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers_cli import held_elsewhere
import twins_deploy.bench.harness as harness
import twins_deploy.bench.run as bench_run
from twins_deploy.bench import machine
from twins_deploy.bench.backends import Subject
from twins_deploy.cli.bench import main as bench_main
from twins_deploy.engines.runners.base import Runner

FAST = ["--min-iters", "2", "--min-time", "0", "--warmup", "1", "--warmup-time", "0"]
RESULTS = ["r.json", "r.csv", "r.md", "r.png"]


class _Nothing(Runner):
    """A CPU Runner that computes nothing (fails to open when ``fail`` says so)."""

    name, device = "nothing", "cpu"

    def __init__(self) -> None:
        super().__init__()
        self.output_names = ["logits"]

    def _activate(self) -> None:
        return None

    def infer(self, x):
        return [np.zeros((len(x), 1000), np.float32)]


@pytest.fixture
def work(monkeypatch):
    """Tiny runs: an identity for the model, Runners that compute nothing, an idle machine;
    returns the log of what was measured (models built, runners opened)."""
    log: list[tuple[str, str]] = []

    def subject(name, hw, max_batch, cache, calib=None):
        def build():
            log.append(("model", name))
            return torch.nn.Identity()
        return Subject(name, build, hw, max_batch, cache)

    def make(backend, subject, **kw):
        log.append(("runner", backend))
        if backend == "openvino-f32":
            raise RuntimeError("could not open")
        return _Nothing()

    monkeypatch.setattr(bench_run, "twins_subject", subject)
    monkeypatch.setattr(harness, "make_runner", make)
    monkeypatch.setattr(machine, "loadavg", lambda: [0.0, 0.0, 0.0])
    monkeypatch.setattr(machine, "system_cpu_seconds", lambda: None)
    monkeypatch.setattr(machine, "others_now", lambda: None)
    return log


def bench(out: Path, *extra: str, quiet: bool = True) -> int:
    return bench_main(["--model", "pcpvt_s", "--backends", "torch,ort-cpu", "--batch", "1", "--img-size", "32",
                       "--out", str(out), "--name", "r", *FAST, *(["-q"] if quiet else []), *extra])


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file() and not p.is_symlink()}


# -- the results place, checked before anything is measured ------------------------------------------------
def _folder(p: Path) -> None:
    p.mkdir()


def _fifo(p: Path) -> None:
    os.mkfifo(p)


def _loop(p: Path) -> None:
    os.symlink(p, p)


def _dangling(p: Path) -> None:
    os.symlink(p.parent / "nowhere", p)


def _file(p: Path) -> None:
    p.write_text("the user's file")


@pytest.mark.parametrize("name, make, says", [
    ("r.json", _folder, "is a folder, where a results file goes"),
    ("r.csv", _fifo, r"is a named pipe \(FIFO\), where a results file goes"),  # never opened: no hang
    ("r.md", _loop, "is a symlink loop, where a results file goes"),
    ("r.png", _dangling, "is a broken symlink, where a results file goes"),
    (".artifacts", _file, "is a file, where the benchmark's artifacts cache goes"),
])
def test_a_results_place_that_cannot_be_used_is_refused_before_measuring(tmp_path, work, capsys, name, make, says):
    """The issue: a results path that is a folder was found only after everything was measured."""
    out = tmp_path / "out"
    out.mkdir()
    make(out / name)
    for force in ([], ["--force"]):  # --force replaces results, never a folder or a FIFO
        assert bench(out, *force) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(says, err[0]), err
    assert work == []  # no model built, no runner opened
    assert sorted(p.name for p in out.iterdir()) == [name]


@pytest.mark.parametrize("make, says", [(_file, "is a file"), (_fifo, r"is a named pipe \(FIFO\)"),
                                        (_loop, "is a symlink loop")])
def test_an_out_that_is_no_folder_is_refused_before_measuring(tmp_path, work, capsys, make, says):
    make(tmp_path / "out")
    assert bench(tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(says, err[0]), err
    assert work == []


# -- an earlier run's results ------------------------------------------------------------------------------
def test_earlier_results_are_refused_without_force_and_replaced_with_it_saying_so(tmp_path, work, capsys):
    out = tmp_path / "out"
    assert bench(out) == 0
    first = _files(out)
    assert sorted(first) == sorted(RESULTS)
    created = json.loads(first["r.json"])["created"]
    capsys.readouterr()
    work.clear()

    assert bench(out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "r.json, r.csv, r.md, r.png" in err[0] and "results of an earlier run" in err[0]
    assert f"created '{created}', 2 rows" in err[0] and "pass --force" in err[0]
    assert work == [] and _files(out) == first  # refused before measuring; nothing touched

    assert bench(out, "--force") == 0
    err = capsys.readouterr().err
    assert f"note: replacing the results of an earlier run (--force): {out / 'r.json'}" in err
    assert sorted(_files(out)) == sorted(RESULTS) and _files(out)["r.json"] != first["r.json"]
    assert json.loads(_files(out)["r.json"])["complete"] is True


def test_an_interrupted_runs_results_are_earlier_results_too(tmp_path, work, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "r.json").write_text(json.dumps({"complete": False, "created": "then", "rows": [{}]}))
    assert bench(out) == 2
    assert "r.json in" in capsys.readouterr().err and work == []
    assert (out / "r.json").read_text() == json.dumps({"complete": False, "created": "then", "rows": [{}]})


HOSTILE_RESULTS = {"deep nesting": "[" * 100_000 + "]" * 100_000, "a list": "[1, 2]", "rows not a list": '{"rows": 3}',
                   "not JSON": "{'rows':", "not UTF-8": b"\xff\xfe{}"}


@pytest.mark.parametrize("content", list(HOSTILE_RESULTS.values()), ids=list(HOSTILE_RESULTS))
def test_a_results_file_that_is_not_ours_is_one_line(tmp_path, work, capsys, content):
    """What twins-bench reads back (--rerender, an earlier run's JSON in --out) may be any
    bytes: one line, exit 2, no traceback, the file untouched."""
    out = tmp_path / "out"
    out.mkdir()
    path = out / "r.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = path.read_bytes()
    assert bench_main(["--rerender", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "is not a twins-bench result" in err[0], err
    assert len(err[0]) < 1000
    assert bench(out) == 2  # an earlier result in the way, described as far as it can be
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "results of an earlier run" in err[0] and "Traceback" not in err[0], err
    assert path.read_bytes() == before and work == []


def test_a_results_symlink_is_replaced_as_itself_never_followed(tmp_path, work):
    out, kept = tmp_path / "out", tmp_path / "kept.json"
    out.mkdir()
    kept.write_text("the user's own file")
    os.symlink(kept, out / "r.json")
    assert bench(out) == 2  # earlier results (through a symlink): refused without --force
    assert bench(out, "--force") == 0
    assert not (out / "r.json").is_symlink() and json.loads((out / "r.json").read_text())["complete"] is True
    assert kept.read_text() == "the user's own file"


# -- another run writing into --out ---------------------------------------------------------------------------
def test_a_second_run_into_the_same_out_is_refused_naming_the_holder(tmp_path, work, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "holders.json").write_text("being written")
    with held_elsewhere(out) as pid:
        code = bench(out)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"pid {pid}" in err[0] and "is writing into" in err[0], err
    assert work == []
    assert (out / "holders.json").read_text() == "being written"
    assert not any(p.name.startswith("r.") for p in out.iterdir())


# -- a full disk, a refused write -----------------------------------------------------------------------------
@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EACCES, errno.EROFS], ids=errno.errorcode.get)
@pytest.mark.parametrize("target, nth", [("r.json", 1), ("r.csv", 2), ("r.md", 1), ("r.png", 1)],
                         ids=["first JSON", "a later CSV", "markdown", "chart"])
def test_a_results_write_the_machine_refuses_is_one_line_and_leaves_whole_files(tmp_path, work, monkeypatch,
                                                                                 capsys, err, target, nth):
    """The ``nth`` write of ``target`` fails (at its rename into place, after the data went to
    a temporary file): one line, exit 2; no temporary file is left, and every results file
    on disk is whole JSON/CSV as last written."""
    out = tmp_path / "out"
    real, seen = os.replace, []

    def replace(src, dst, **kw):
        if Path(dst).name == target:
            seen.append(dst)
            if len(seen) == nth:
                raise OSError(err, os.strerror(err), str(dst))
        return real(src, dst, **kw)

    monkeypatch.setattr(os, "replace", replace)
    code = bench(out)
    monkeypatch.undo()
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: cannot write the benchmark results into '{out}': {os.strerror(err)}")
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []  # a folder left empty is removed
    assert all(name in RESULTS for name in left), left  # no .partial, no lock note
    if "r.json" in left:
        json.loads((out / "r.json").read_text())  # whole
    if target in ("r.md", "r.png"):  # the measurements were all written before the report failed
        assert json.loads((out / "r.json").read_text())["complete"] is True


# -- the machine's load -----------------------------------------------------------------------------------------
def test_busy_rule_thresholds():
    assert machine.busy_reasons({"cpu_count": 2, "loadavg_start": [1.0, 0, 0]}) == []
    (why,) = machine.busy_reasons({"cpu_count": 2, "loadavg_start": [1.01, 0, 0]})
    assert "1.01 on 2 CPUs before the run" in why
    assert machine.busy_reasons({"cpu_count": 4, "other_cpus": 0.4, "other_cpus_of": 4}) == []
    (why,) = machine.busy_reasons({"cpu_count": 4, "other_cpus": 0.41, "other_cpus_of": 4})
    assert "other processes used 0.41 of 4 CPUs" in why
    assert machine.busy_reasons({"cpu_count": None, "loadavg_start": None, "other_cpus": None}) == []
    # a high load average left by work that has ended (the export run just before) is no reason
    assert machine.busy_reasons({"cpu_count": 2, "loadavg_start": [1.5, 0, 0], "other_cpus_at_start": 0.2}) == []
    (why,) = machine.busy_reasons({"cpu_count": 2, "loadavg_start": [1.5, 0, 0], "other_cpus_at_start": 0.21})
    assert "1.50 on 2 CPUs before the run" in why and "other processes were using 0.21 CPUs as it started" in why
    assert machine.load_line(None) is None


def test_the_load_is_recorded_and_reported_on_a_quiet_machine(tmp_path, work, monkeypatch, capsys):
    """Other processes' CPU = the machine's CPU time over the run minus this process's own."""
    own = iter([10.0, 10.5])  # the run used 0.5 s of CPU
    system = iter([(1000.0, 2), (1000.501, 2)])  # the machine 0.501 s: others 0.001 s
    monkeypatch.setattr(machine, "own_cpu_seconds", lambda: next(own))
    monkeypatch.setattr(machine, "system_cpu_seconds", lambda: next(system))
    monkeypatch.setattr(machine, "loadavg", lambda: [0.1, 0.2, 0.3])
    assert bench(tmp_path) == 0
    assert "warning" not in capsys.readouterr().err
    load = json.loads((tmp_path / "r.json").read_text())["environment"]["load"]
    assert load["loadavg_start"] == load["loadavg_end"] == [0.1, 0.2, 0.3] and load["cpu_count"] == os.cpu_count()
    assert load["busy"] is False and load["busy_reasons"] == [] and load["other_cpus_of"] == 2
    assert load["other_cpus"] == pytest.approx(0.001 / load["wall_s"], abs=0.01)
    assert "- machine load: 1-min load average 0.1 at start, 0.1 at end" in (tmp_path / "r.md").read_text()
    assert ": quiet" in (tmp_path / "r.md").read_text()


def test_a_machine_busy_before_the_run_is_warned_about_before_measuring(tmp_path, work, monkeypatch, capsys):
    cpus = os.cpu_count()
    monkeypatch.setattr(machine, "loadavg", lambda: [cpus * 0.9, 1.0, 1.0])

    def make(*a, **k):
        print("opened", file=sys.stderr)
        return _Nothing()

    monkeypatch.setattr(harness, "make_runner", make)
    assert bench(tmp_path) == 0
    err = capsys.readouterr().err.splitlines()
    warnings = [i for i, line in enumerate(err) if line.startswith("warning: the machine was busy")]
    assert len(warnings) == 2 and warnings[0] < err.index("opened")  # before measuring, and beside the numbers
    assert f"1-min load average was {cpus * 0.9:.2f} on {cpus} CPUs before the run" in err[warnings[0]]
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["environment"]["load"]["busy"] is True
    assert "**busy**: the 1-min load average" in (tmp_path / "r.md").read_text()


def test_a_load_average_left_by_work_that_has_ended_is_no_warning(tmp_path, work, monkeypatch, capsys):
    """The export a user ran just before keeps the 1-min load average up for a minute after it
    ended: with nothing else using the CPUs as the run starts, the machine is quiet."""
    cpus = os.cpu_count()
    monkeypatch.setattr(machine, "loadavg", lambda: [cpus * 0.9, 1.0, 1.0])
    monkeypatch.setattr(machine, "others_now", lambda: 0.0)
    assert bench(tmp_path) == 0
    assert "warning" not in capsys.readouterr().err
    load = json.loads((tmp_path / "r.json").read_text())["environment"]["load"]
    assert load["busy"] is False and load["other_cpus_at_start"] == 0.0


def test_others_now_is_the_machines_cpu_time_less_this_processes(monkeypatch):
    clock, own, system = iter([0.0, 0.5]), iter([5.0, 5.2]), iter([(100.0, 2), (100.8, 2)])
    monkeypatch.setattr(machine.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(machine.time, "sleep", lambda s: None)
    monkeypatch.setattr(machine, "own_cpu_seconds", lambda: next(own))
    monkeypatch.setattr(machine, "system_cpu_seconds", lambda: next(system))
    assert machine.others_now() == pytest.approx((0.8 - 0.2) / 0.5)
    monkeypatch.setattr(machine.time, "monotonic", lambda: 1.0)
    monkeypatch.setattr(machine, "own_cpu_seconds", lambda: 5.0)
    monkeypatch.setattr(machine, "system_cpu_seconds", lambda: None)  # no /proc/stat
    assert machine.others_now(0.0) is None


def test_other_processes_busy_during_the_run_are_warned_about(tmp_path, work, monkeypatch, capsys):
    cpus = 2
    system = iter([(0.0, cpus), (1e6, cpus)])  # the machine's CPUs fully taken meanwhile
    monkeypatch.setattr(machine, "system_cpu_seconds", lambda: next(system))
    assert bench(tmp_path) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(err) == 1 and f"of {cpus} CPUs on average during the run" in err[0]
    load = json.loads((tmp_path / "r.json").read_text())["environment"]["load"]
    assert load["busy"] is True and load["other_cpus"] > 0.1 * cpus


# -- step counters ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backends, batches, rounds, steps", [
    ("torch,ort-cpu", "1", 1, 2),
    ("torch,ort-cpu,openvino-f32", "1,2", 3, 3 + 3),  # a runner that fails to open is still one step
    ("torch,ort-tuned", "1,4", 2, 3 + 2),  # a route tuned per batch: one runner (one step) per batch
])
def test_step_counters_come_from_the_real_step_list(tmp_path, work, monkeypatch, capsys, backends, batches, rounds,
                                                    steps):
    """``[i/N]``: i runs 1..N in order with one N throughout, N the number of steps announced."""
    import dataclasses

    from twins_deploy.engines.routes import ROUTES, get_route

    tuned = dataclasses.replace(get_route("ort-cpu"), name="ort-tuned", aliases=(), tuned_per_batch=True)
    monkeypatch.setitem(ROUTES, tuned.name, tuned)
    code = bench_main(["--model", "pcpvt_s", "--backends", backends, "--batch", batches, "--img-size", "32",
                       "--rounds", str(rounds), "--out", str(tmp_path), "--name", "r", *FAST])
    assert code == (1 if "openvino" in backends else 0)
    counters = [tuple(map(int, m.groups())) for m in re.finditer(r"^\[(\d+)/(\d+)\] ", capsys.readouterr().err,
                                                                 re.MULTILINE)]
    assert counters == [(i, steps) for i in range(1, steps + 1)]
