"""What a console script needs before its first heavy import (torch takes seconds).

Ctrl-C while ``twins-export`` is still importing torch happens before :func:`run_cli
<twins_deploy.cli.common.run_cli>` can catch anything, and Python would print a
``KeyboardInterrupt`` traceback. When the running program is one of our console scripts (and
only then: importing the library elsewhere changes nothing), an interrupt that escapes
becomes one line, and the exit status stays the shell's 130.
"""
from __future__ import annotations

import os
import sys
from types import TracebackType

CONSOLE_SCRIPTS = frozenset({"twins-export", "twins-inspect", "twins-validate", "twins-bench", "twins-predict",
                             "twins-serve"})


def running_console_script() -> bool:
    return bool(sys.argv) and os.path.basename(sys.argv[0]) in CONSOLE_SCRIPTS


def quiet_interrupt_at_startup() -> None:
    if not running_console_script() or getattr(sys.excepthook, "_twins_deploy", False):
        return
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            print("interrupted while starting; nothing was written", file=sys.stderr)
            return
        previous(kind, value, tb)

    hook._twins_deploy = True  # type: ignore[attr-defined]
    sys.excepthook = hook
