"""Step-by-step progress on stderr for long commands (export, build, validate, bench)."""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO


class Steps:
    """Prints ``[i/N] label ...`` when a step starts and its duration when it ends."""

    def __init__(self, total: int, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.total, self.i, self.quiet = total, 0, quiet
        self.stream = stream or sys.stderr

    def note(self, text: str) -> None:
        if not self.quiet:
            print(f"      {text}", file=self.stream, flush=True)

    def finished(self, label: str, seconds: float, notes: Iterable[str] = ()) -> None:
        """A step that ran before the steps could be counted, printed as :meth:`step` would have."""
        self.i += 1
        if not self.quiet:
            print(f"[{self.i}/{self.total}] {label} ...", file=self.stream, flush=True)
        for text in notes:
            self.note(text)
        if not self.quiet:
            print(f"      done in {seconds:.1f} s", file=self.stream, flush=True)

    @contextlib.contextmanager
    def step(self, label: str) -> Iterator[None]:
        self.i += 1
        if not self.quiet:
            print(f"[{self.i}/{self.total}] {label} ...", file=self.stream, flush=True)
        t0 = time.perf_counter()
        try:
            yield
        except BaseException:
            if not self.quiet:
                print(f"      failed after {time.perf_counter() - t0:.1f} s", file=self.stream, flush=True)
            raise
        if not self.quiet:
            print(f"      done in {time.perf_counter() - t0:.1f} s", file=self.stream, flush=True)


@contextlib.contextmanager
def quiet_logger(name: str = "") -> Iterator[None]:
    """Silence a library's logger below ERROR while a call runs (the root logger by default):
    its chatter would interleave with our steps and one-line errors."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
