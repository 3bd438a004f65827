"""What the command-line tests share: calling a CLI in-process, judging its one error line,
snapshotting a folder, and another process that holds an output folder's lock."""
from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from twins_deploy.artifacts import output_dir


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` (hidden ones too): size and modification time."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def call(main, args: list[str], capsys) -> tuple[int, str, str]:
    try:
        rc = main(args)
    except SystemExit as e:  # argparse
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_error(rc: int, err: str, code: int = 2, needle: str = "", *, ignoring: tuple[str, ...] = ()) -> str:
    """Exit ``code``, exactly one ``error:`` line holding ``needle``, no traceback; lines that
    start with one of ``ignoring`` (the tools' own ``warning:``/``note:`` lines) aside.
    Returns the error line. Failure messages show at most 3000 characters of stderr."""
    lines = [line for line in err.splitlines() if line.strip() and not (ignoring and line.startswith(ignoring))]
    assert rc == code, err[:3000]
    assert "Traceback" not in err, err[:3000]
    assert len(lines) == 1 and lines[0].startswith("error: "), err[:3000]
    assert needle in lines[0], lines[0][:3000]
    return lines[0]


@contextlib.contextmanager
def held_elsewhere(folder: Path, inside: Callable[[Path], None] = lambda d: None) -> Iterator[int]:
    """Another process (forked) holds ``folder`` with :func:`output_dir`, runs ``inside`` in
    it (a run mid-write), and stays until killed: yields its pid once it holds the folder."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the holder
        try:
            with output_dir(folder) as d:
                inside(d)
                os.write(write_fd, b"x")
                time.sleep(60)
        finally:
            os._exit(0)
    try:
        assert os.read(read_fd, 1) == b"x"
        yield pid
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read_fd)
        os.close(write_fd)
