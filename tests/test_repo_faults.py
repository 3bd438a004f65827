"""Faults a production user meets while writing a Triton model repository entry
(``twins-export --triton-repo DIR [--force]``): an entry that is a symlink, another run
writing into the repository, what a killed run left, a full disk or a refused write.

Each case checks the promise, not only the message: what a symlink points to survives, the
lock holder's files survive, the previous entry is intact byte for byte, and no staging
folder is left in the repository or beside it. A killed run is a forked child that
SIGKILLs itself at a chosen point of the write (no cleanup can run, as with ``kill -9``).
Runs in the main environment: writing an entry needs nothing of the serving extra.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
from dataclasses import replace
from pathlib import Path

import pytest

import twins_deploy.serving.triton_repo as triton_repo
from helpers_cli import held_elsewhere
from twins_deploy.artifacts import file_sha256, manifest_path, output_dir
from twins_deploy.errors import ArtifactError
from twins_deploy.exporters.spec import BatchRange, ExportSpec
from twins_deploy.manifest import InputInfo, Manifest, ModelInfo
from twins_deploy.precision import PrecisionPlan
from twins_deploy.registry import Preprocess, get_config
from twins_deploy.serving.triton_repo import TritonRepoOptions, check_entry, hold_repo, write_entry
from twins_deploy.weights import WeightsInfo

NAME = "svt_s_fp32"  # the entry's default name: the artifact's stem


def _manifest() -> Manifest:
    spec = ExportSpec(model="svt_s", img_size=(224, 224), batch=BatchRange(1, 8, 32))
    cfg = get_config("svt_s")
    return Manifest(
        kind="onnx", artifact=f"{NAME}.onnx", model=ModelInfo("svt_s", False, 1000, cfg.paper_name, cfg.timm_name,
                                                              cfg.to_dict()),
        weights=WeightsInfo("random", seed=0), spec=spec, plan=PrecisionPlan("fp32", "fp32", False),
        input=InputInfo("input", spec.input_shape(), "float32", spec.dynamic_axes().get("input", {}),
                        {"min": 1, "opt": 8, "max": 32}),
        outputs=spec.output_names, preprocess=Preprocess(), tools={}, created="", sha256=None)


def _artifact(d: Path, payload: bytes) -> tuple[Path, Manifest]:
    """An artifact file and its manifest, as an export leaves them (nothing is exported)."""
    d.mkdir(parents=True, exist_ok=True)
    art = d / f"{NAME}.onnx"
    art.write_bytes(payload)
    m = replace(_manifest(), sha256=file_sha256(art), size_bytes=len(payload))
    manifest_path(art).write_text(json.dumps(m.to_dict()))
    return art, m


def _snapshot(d: Path) -> dict[str, object]:
    """Every path under ``d`` (symlinks as themselves, never followed) with its content; the
    lock note a killed run leaves in the folder it held (the output-folder lock's business) aside."""
    out: dict[str, object] = {}
    for root, dirs, files in os.walk(d):
        for name in dirs + files:
            if name.endswith(".lock"):
                continue
            p = Path(root) / name
            key = str(p.relative_to(d))
            if p.is_symlink():
                out[key] = ("link", os.readlink(p))
            elif p.is_dir():
                out[key] = "dir"
            else:
                out[key] = p.read_bytes()
    return out


def _staging(root: Path) -> list[str]:
    """Staging folders (``.partial``/``.replaced``) anywhere under ``root``."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name.endswith((".partial", ".replaced")))


@pytest.fixture
def setup(tmp_path):
    """An artifact, a second one (the replacement), and a repository holding the first's entry."""
    old, m_old = _artifact(tmp_path / "old", b"the model already served")
    new, m_new = _artifact(tmp_path / "new", b"the replacement model")
    repo = tmp_path / "repo"
    write_entry(TritonRepoOptions(repo=repo), old, m_old)
    return tmp_path, repo, (old, m_old), (new, m_new)


# -- an entry that is a symlink ------------------------------------------------------------------------
def _target_folder(tmp_path: Path) -> Path:
    target = tmp_path / "elsewhere" / "kept_model"
    (target / "1").mkdir(parents=True)
    (target / "1" / "model.onnx").write_bytes(b"the user's own model")
    (target / "config.pbtxt").write_text('name: "kept_model"\n')
    return target


@pytest.mark.parametrize("kind", ["to a folder", "to a file", "dangling", "a loop"])
def test_force_replaces_an_entry_symlink_itself_and_never_what_it_points_to(tmp_path, kind):
    """shutil.rmtree refuses a symlink (the traceback of the issue); following one would delete
    the user's folder. The symlink is replaced as itself; its target is untouched."""
    new, m_new = _artifact(tmp_path / "new", b"the replacement model")
    repo = tmp_path / "repo"
    repo.mkdir()
    folder = _target_folder(tmp_path)
    file = tmp_path / "elsewhere" / "notes.txt"
    file.write_text("the user's notes")
    link = repo / NAME
    target = {"to a folder": folder, "to a file": file, "dangling": tmp_path / "gone", "a loop": link}[kind]
    os.symlink(target, link)
    before = _snapshot(tmp_path / "elsewhere")

    with pytest.raises(ArtifactError, match=r"already exists \(a symlink to .*pass --force to replace the symlink"):
        write_entry(TritonRepoOptions(repo=repo), new, m_new)
    assert os.readlink(link) == str(target)  # refused without --force: the symlink stays

    entry = write_entry(TritonRepoOptions(repo=repo), new, m_new, overwrite=True)
    assert entry == link and not entry.is_symlink() and entry.is_dir()
    assert (entry / "1" / "model.onnx").read_bytes() == b"the replacement model"
    assert _snapshot(tmp_path / "elsewhere") == before  # what the symlink pointed to is untouched
    assert _staging(tmp_path) == []


def test_symlinks_inside_a_replaced_entry_are_removed_as_links_not_followed(setup):
    """An entry (a real folder) whose version folder, config and another file are symlinks
    to things outside, one of them a loop: --force removes the links, not their targets."""
    tmp_path, repo, _, (new, m_new) = setup
    outside = _target_folder(tmp_path)
    entry = repo / NAME
    shutil.rmtree(entry / "1")
    os.symlink(outside / "1", entry / "1")
    (entry / "config.pbtxt").unlink()
    os.symlink(outside / "config.pbtxt", entry / "config.pbtxt")
    os.symlink(entry / "loop", entry / "loop")
    os.symlink(tmp_path / "nothing", entry / "dangling")
    before = _snapshot(tmp_path / "elsewhere")

    write_entry(TritonRepoOptions(repo=repo), new, m_new, overwrite=True)
    assert sorted(_snapshot(entry)) == ["1", "1/model.onnx", "1/model.onnx.json", "config.pbtxt"]
    assert (entry / "1" / "model.onnx").read_bytes() == b"the replacement model"
    assert _snapshot(tmp_path / "elsewhere") == before
    assert _staging(tmp_path) == []


def test_the_up_front_check_treats_a_symlink_entry_alike(tmp_path):
    """check_entry (before any export work): a symlink is refused without --force and accepted
    with it; a FIFO where the entry goes is refused even with it, without opening it."""
    repo = tmp_path / "repo"
    repo.mkdir()
    m = _manifest()
    opts = TritonRepoOptions(repo=repo)
    os.symlink(tmp_path / "gone", repo / NAME)
    with pytest.raises(ArtifactError, match="a symlink to"):
        check_entry(opts, "onnx", m.spec, NAME, overwrite=False)
    assert check_entry(opts, "onnx", m.spec, NAME, overwrite=True) == repo / NAME
    (repo / NAME).unlink()
    os.mkfifo(repo / NAME)
    with pytest.raises(ArtifactError, match=r"is a named pipe \(FIFO\), where the Triton model folder goes"):
        check_entry(opts, "onnx", m.spec, NAME, overwrite=True)


# -- another run writing into the repository -------------------------------------------------------------
def _fork(child) -> int:
    """Run ``child()`` in a forked process, which exits without any cleanup when it returns."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            child()
            code = 0
        finally:
            os._exit(code)
    return pid


def test_a_second_run_is_refused_naming_the_holder_and_removes_nothing_of_it(setup, capsys):
    """A run holding the repository (another process, mid-write: its own staging folder beside
    the repository, a new file in it): a second write_entry is refused at once, naming the
    holder's pid; the holder's staging and files are all still there afterwards."""
    tmp_path, repo, _, (new, m_new) = setup
    live = tmp_path / f".repo.{NAME}.{triton_repo._staging_tag(repo)}.abcdefgh.partial"

    def mid_write(_repo: Path) -> None:
        live.mkdir()
        (live / "config.pbtxt").write_text("being written")
        (repo / "holders_file").write_text("mine")

    with held_elsewhere(repo, mid_write) as pid:
        before = _snapshot(tmp_path)
        with pytest.raises(ArtifactError, match=rf"another twins-deploy run \(pid {pid}\b.*is writing into"):
            write_entry(TritonRepoOptions(repo=repo), new, m_new, overwrite=True)
        with pytest.raises(ArtifactError, match=rf"pid {pid}\b"):  # the up-front check says it before any work
            check_entry(TritonRepoOptions(repo=repo), "onnx", m_new.spec, NAME, overwrite=True)
        assert _snapshot(tmp_path) == before  # nothing of the holder's removed, nothing of ours left
        assert (live / "config.pbtxt").read_text() == "being written"
    assert "note:" not in capsys.readouterr().err  # the loser recovered nothing: it never held the lock


def test_export_is_refused_before_any_work_while_another_run_holds_the_repository(setup, capsys):
    from twins_deploy.cli.export import main as export_main

    tmp_path, repo, _, _ = setup
    out = tmp_path / "out"
    with held_elsewhere(repo) as pid:
        code = export_main(["--model", "svt_s", "--out-dir", str(out), "--triton-repo", str(repo), "--force", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"pid {pid}" in err[0], err
    assert not out.exists()  # refused before the export started


def test_holding_the_repository_is_reentrant_within_a_process(setup):
    """An export may hold the repository for its whole run; write_entry inside it takes it again."""
    _, repo, _, (new, m_new) = setup
    with hold_repo(repo), hold_repo(repo):
        write_entry(TritonRepoOptions(repo=repo), new, m_new, overwrite=True)
    assert (repo / NAME / "1" / "model.onnx").read_bytes() == b"the replacement model"
    with output_dir(repo):  # and released afterwards
        pass


# -- what a killed run left ------------------------------------------------------------------------------
def _kill_self():
    os.kill(os.getpid(), signal.SIGKILL)


def _killed_write(repo: Path, art: Path, m: Manifest, where: str) -> None:
    """A child writes ``art``'s entry with --force and is SIGKILLed ``where``."""

    def child():
        if where == "while copying":
            real = shutil.copyfile

            def copy(src, dst, **kw):
                real(src, dst, **kw)
                _kill_self()
            shutil.copyfile = copy
        elif where == "after moving the old entry aside":
            real_replace = os.replace

            def rep(src, dst, **kw):
                if Path(src).name.endswith(".partial") and Path(src).is_dir():  # the entry, not a lock note
                    _kill_self()
                return real_replace(src, dst, **kw)
            os.replace = rep
        else:  # after the new entry is in place, before the old one is removed
            def remove(path):
                _kill_self()
            triton_repo._remove = remove
        write_entry(TritonRepoOptions(repo=repo), art, m, overwrite=True)

    _, status = os.waitpid(_fork(child), 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def test_a_killed_write_leaves_staging_that_the_next_run_removes_saying_so(setup, capsys):
    tmp_path, repo, _, (new, m_new) = setup
    before = _snapshot(repo)
    _killed_write(repo, new, m_new, "while copying")
    assert [s.endswith(".partial") for s in _staging(tmp_path)] == [True]  # what kill -9 leaves
    assert _snapshot(repo) == before  # the entry was not touched yet
    capsys.readouterr()

    write_entry(TritonRepoOptions(repo=repo), new, m_new, overwrite=True)
    err = capsys.readouterr().err
    assert "note: removed ." in err and "half-written" in err and "MiB" in err
    assert _staging(tmp_path) == []
    assert (repo / NAME / "1" / "model.onnx").read_bytes() == b"the replacement model"


def test_an_entry_a_killed_run_moved_aside_is_restored(setup, capsys):
    """Killed between moving the old entry aside and renaming the new one in: the entry is
    missing. The next run puts the old entry back (and, without --force, then refuses to
    replace it), removes the half-done one, and says both."""
    tmp_path, repo, (old, m_old), (new, m_new) = setup
    before = _snapshot(repo)
    _killed_write(repo, new, m_new, "after moving the old entry aside")
    assert not (repo / NAME).exists()
    assert sorted(s.rsplit(".", 1)[1] for s in _staging(tmp_path)) == ["partial", "replaced"]
    capsys.readouterr()

    with pytest.raises(ArtifactError, match="already exists; pass --force"):
        check_entry(TritonRepoOptions(repo=repo), "onnx", m_new.spec, NAME, overwrite=False)
    err = capsys.readouterr().err
    assert f"note: restored {repo / NAME} from ." in err and "half-written" in err
    assert _snapshot(repo) == before and _staging(tmp_path) == []


def test_an_old_entry_left_after_the_new_one_was_installed_is_removed(setup, capsys):
    tmp_path, repo, _, (new, m_new) = setup
    _killed_write(repo, new, m_new, "after installing the new entry")
    assert (repo / NAME / "1" / "model.onnx").read_bytes() == b"the replacement model"
    assert [s.rsplit(".", 1)[1] for s in _staging(tmp_path)] == ["replaced"]
    capsys.readouterr()

    check_entry(TritonRepoOptions(repo=repo), "onnx", m_new.spec, NAME, overwrite=True)
    err = capsys.readouterr().err
    assert "note: removed ." in err and "already replaced" in err
    assert _staging(tmp_path) == []
    assert (repo / NAME / "1" / "model.onnx").read_bytes() == b"the replacement model"


def test_only_this_repositorys_leftovers_are_touched(setup, capsys):
    """Names alike are not enough: another repository's staging (another digest), a symlink
    and a file of a staging name, and a user's hidden folder all stay."""
    tmp_path, repo, (old, m_old), _ = setup
    tag = triton_repo._staging_tag(repo)
    foreign = [tmp_path / f".repo.{NAME}.0123456789.abcdefgh.partial",       # another repo (other digest)
               tmp_path / f".repo.{NAME}.{tag}.toolong123.partial",          # not mkdtemp's 8 characters
               tmp_path / ".repo.notes"]
    for d in foreign:
        d.mkdir()
        (d / "keep").write_text("keep")
    os.symlink(tmp_path / "old", tmp_path / f".repo.{NAME}.{tag}.abcdefgh.partial")
    (tmp_path / f".repo.{NAME}.{tag}.zyxwvuts.replaced").write_text("a file, not a staging folder")
    before = _snapshot(tmp_path)
    capsys.readouterr()
    check_entry(TritonRepoOptions(repo=repo), "onnx", m_old.spec, "other", overwrite=False)
    write_entry(TritonRepoOptions(repo=repo, name="other"), old, m_old)
    assert "note:" not in capsys.readouterr().err
    after = _snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("repo/other")} == before


# -- a full disk, a refused write ------------------------------------------------------------------------
def _fail(monkeypatch, where: str, err: int) -> None:
    """Make the write of an entry fail with ``err`` at ``where``."""
    boom = OSError(err, os.strerror(err))
    if where in ("copying the model", "copying the manifest"):
        real = shutil.copyfile

        def copy(src, dst, **kw):
            if (where == "copying the model") == (not str(dst).endswith(".json")):
                raise OSError(err, os.strerror(err), str(dst))
            return real(src, dst, **kw)
        monkeypatch.setattr(shutil, "copyfile", copy)
    elif where == "writing the config":
        real_open = open

        def fake_open(path, *a, **kw):
            if str(path).endswith("config.pbtxt"):
                raise OSError(err, os.strerror(err), str(path))
            return real_open(path, *a, **kw)
        monkeypatch.setattr(triton_repo, "open", fake_open, raising=False)
    elif where in ("moving the old entry aside", "renaming the new entry in"):
        real_replace = os.replace

        def rep(src, dst, **kw):
            moving_aside = str(dst).endswith(".replaced")
            installing = str(src).endswith(".partial") and Path(src).is_dir()
            if (where == "moving the old entry aside" and moving_aside) or (
                    where == "renaming the new entry in" and installing):
                raise OSError(err, os.strerror(err), str(src), str(dst))
            return real_replace(src, dst, **kw)
        monkeypatch.setattr(os, "replace", rep)
    elif where == "creating the staging folder":
        real_mkdtemp = triton_repo.tempfile.mkdtemp

        def mkdtemp(*a, **kw):
            if kw.get("suffix") == ".partial":  # the entry's staging, not the writability probe
                raise boom
            return real_mkdtemp(*a, **kw)
        monkeypatch.setattr(triton_repo.tempfile, "mkdtemp", mkdtemp)


WHERE = ["creating the staging folder", "copying the model", "copying the manifest", "writing the config",
         "moving the old entry aside", "renaming the new entry in"]


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT], ids=errno.errorcode.get)
@pytest.mark.parametrize("where", WHERE)
def test_a_refused_write_is_one_line_and_the_previous_entry_stays(setup, monkeypatch, where, err):
    tmp_path, repo, _, (new, m_new) = setup
    before = _snapshot(repo)
    _fail(monkeypatch, where, err)
    with pytest.raises(ArtifactError) as e:
        write_entry(TritonRepoOptions(repo=repo), new, m_new, overwrite=True)
    line = str(e.value)
    assert "\n" not in line and os.strerror(err) in line and "the previous entry is unchanged" in line
    assert line.startswith(f"cannot write Triton model repository entry '{repo / NAME}'")
    monkeypatch.undo()
    assert _snapshot(repo) == before  # byte for byte, the old model still served
    assert _staging(tmp_path) == []


@pytest.mark.parametrize("where", WHERE[:4] + WHERE[5:])
def test_a_refused_first_write_leaves_nothing(tmp_path, monkeypatch, where):
    """No entry before: nothing after, not even the repository folder the run created."""
    new, m_new = _artifact(tmp_path / "new", b"the replacement model")
    _fail(monkeypatch, where, errno.ENOSPC)
    with pytest.raises(ArtifactError, match="No space left on device.*nothing was left behind"):
        write_entry(TritonRepoOptions(repo=tmp_path / "models" / "repo"), new, m_new)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new"]
