"""What every console script shares: argument types and one-line error handling."""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator

from twins_deploy.engines.routes import get_route
from twins_deploy.engines.trt.options import DEFAULT_TIMING_CACHE, HW_COMPAT_LEVELS, TrtBuildOptions
from twins_deploy.errors import ENVIRONMENT_ERRNOS, TwinsDeployError, os_error_line, quoted
from twins_deploy.exporters.spec import MAX_BATCH, BatchRange, parse_hw


def plain(doc: str | None) -> str:
    """A docstring as help text: reStructuredText markup (``code``, :mod:`x`) removed."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", doc or "")
    return text.replace("``", "").strip()


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, like every other error of the toolkit."""

    def __init__(self, prog: str, doc: str | None, epilog: str | None = None) -> None:
        super().__init__(prog=prog, description=plain(doc), epilog=epilog,
                         formatter_class=argparse.RawDescriptionHelpFormatter)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def number(kind: type, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite ``kind`` (int or float) within ``lo``..``hi``."""
    def parse(text: str) -> float:
        try:
            v = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{quoted(text)} is not {what}") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{quoted(text)} is not a finite number")
        if lo is not None and (v <= lo if lo_open else v < lo):
            raise argparse.ArgumentTypeError(f"{v} must be {'>' if lo_open else '>='} {lo}")
        if hi is not None and v > hi:
            raise argparse.ArgumentTypeError(f"{v} must be <= {hi}")
        return v
    return parse


def hw_arg(text: str) -> tuple[int, int]:
    try:
        return parse_hw(text)
    except TwinsDeployError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def route_arg(text: str) -> str:
    """A route of the table by name or alias, as its name (argparse then checks the choices)."""

    try:
        return get_route(text).name
    except TwinsDeployError:
        return text  # argparse's choices check names the routes


positive_int = number(int, 1)


def batch_size(text: str) -> int:
    return int(number(int, 1, MAX_BATCH)(text))


def int_list(text: str) -> list[int]:
    values = [batch_size(t) for t in text.split(",") if t.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"{quoted(text)} holds no batch size")
    return values


def add_batch_args(p: argparse.ArgumentParser, defaults: BatchRange = BatchRange()) -> None:
    g = p.add_argument_group("batch (default: dynamic batch)")
    g.add_argument("--batch", type=batch_size, metavar="N",
                   help="fixed batch size N (a static graph); overrides the dynamic range")
    g.add_argument("--min-batch", type=batch_size, default=defaults.min,
                   help="smallest batch of the dynamic range (default: %(default)s)")
    g.add_argument("--opt-batch", type=batch_size, default=defaults.opt,
                   help="batch TensorRT tunes for (default: %(default)s)")
    g.add_argument("--max-batch", type=batch_size, default=defaults.max,
                   help="largest batch of the dynamic range (default: %(default)s)")


def batch_from_args(args: argparse.Namespace) -> BatchRange:
    if args.batch:
        return BatchRange.fixed(args.batch)
    return BatchRange(args.min_batch, args.opt_batch, args.max_batch)


def add_threshold_args(p: argparse.ArgumentParser) -> None:
    """The validation thresholds (defaults per precision live in engines.validation)."""
    p.add_argument("--atol", type=number(float, 0, lo_open=True),
                   help="FP32 max-abs threshold on logits, > 0 (default: 1e-4)")
    p.add_argument("--min-cosine", type=number(float, -1, 1),
                   help="FP16 and BF16 cosine threshold, -1..1 (default: 0.999)")
    p.add_argument("--min-top1", type=number(float, 0, 1),
                   help="FP16 top-1 agreement threshold over the decisive samples, 0..1 (default: 1.0; "
                        "BF16: over all samples, reported, gated only if given)")
    p.add_argument("--top1-margin", type=number(float, 0, 100),
                   help="a sample is decisive (its top-1 judged) when its FP32 top-1 margin is at least this many "
                        "standard deviations of its logits; 0 judges every sample (default: FP16 0.1)")


def thresholds_from_args(args: argparse.Namespace) -> dict[str, float | None]:
    return {"atol": args.atol, "min_cosine": args.min_cosine, "min_top1": args.min_top1,
            "top1_margin": args.top1_margin}


def add_trt_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("TensorRT (--fmt trt)")
    g.add_argument("--workspace", type=number(float, 0, 1024, lo_open=True), default=4.0, metavar="GIB",
                   help="builder workspace memory pool in GiB (default: %(default)s)")
    g.add_argument("--opt-level", type=int, default=3, choices=range(6), metavar="0-5",
                   help="builder optimization level; higher builds slower, may run faster (default: %(default)s)")
    g.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=False,
                   help="allow TF32 in FP32 layers (default: off, so FP32 means FP32)")
    g.add_argument("--timing-cache", default=DEFAULT_TIMING_CACHE, metavar="PATH",
                   help="timing cache reused across builds; 'none' to disable (default: %(default)s, one file per "
                        "TensorRT version and GPU architecture under ~/.cache/twins-deploy/)")
    g.add_argument("--hw-compat", choices=HW_COMPAT_LEVELS, default="none",
                   help="hardware compatibility level (TensorRT >= 8.6): ampere+ runs on any Ampere or newer GPU")
    g.add_argument("--version-compat", action="store_true",
                   help="version-compatible engine (runs on later TensorRT via the lean runtime)")
    g.add_argument("--min-hw", type=hw_arg, metavar="N|HxW",
                   help="with --dynamic-hw: smallest H/W of the engine profile (default: half the export size)")
    g.add_argument("--max-hw", type=hw_arg, metavar="N|HxW",
                   help="with --dynamic-hw: largest H/W of the engine profile (default: twice the export size)")
    g.add_argument("--weak-fp16", action="store_true",
                   help="TensorRT 8.6-10.x: build the FP32 ONNX with BuilderFlag.FP16 instead of the "
                        "strongly typed FP16 graph (not available on TensorRT 11)")


def trt_options_from_args(args: argparse.Namespace) -> TrtBuildOptions:
    cache = None if str(args.timing_cache).lower() == "none" else args.timing_cache
    return TrtBuildOptions(args.workspace, args.opt_level, args.tf32, cache, args.hw_compat,
                           args.version_compat, args.weak_fp16, args.min_hw, args.max_hw)


class Terminated(KeyboardInterrupt):
    """A terminating signal (SIGTERM from ``timeout``, ``kill`` or a CI runner cancelling a
    job; SIGHUP from a closed terminal; SIGQUIT, SIGUSR1/2, SIGALRM, SIGXCPU), raised in the
    main thread as Ctrl-C is, so that the same clean-up runs: staged files removed, old
    artifacts restored. ``signum`` says which, for the message and the exit code."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signum)
        self.signum = signum


# Signals whose default action ends the process without a chance to clean up; each is taken
# over only while it still has that default (a handler someone installed, or SIG_IGN from
# ``nohup``, is left alone). SIGXFSZ is ignored instead, so that writing past a file-size
# limit fails with EFBIG, which is reported, rather than killing the process mid-write.
TERMINATING_SIGNALS = tuple(getattr(signal, n) for n in (
    "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGXCPU", "SIGVTALRM", "SIGPROF")
    if hasattr(signal, n))


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


@contextlib.contextmanager
def signals_as_interrupt() -> Iterator[None]:
    """Turn every catchable terminating signal into :class:`Terminated` (Ctrl-C is already
    ``KeyboardInterrupt``). Once one has arrived, later ones (a second Ctrl-C included) are
    noted and ignored, so that the clean-up they would cut short still runs to the end."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    arrived: list[int] = []

    def handler(signum: int, _frame: object) -> None:
        if arrived:
            with contextlib.suppress(OSError, ValueError):
                print(f"{signal_name(signum)} received; still cleaning up, please wait", file=sys.stderr)
            return
        arrived.append(signum)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(signum)

    previous: dict[int, object] = {}
    for signum in (signal.SIGINT, *TERMINATING_SIGNALS):
        current = signal.getsignal(signum)
        if current in (signal.SIG_DFL, signal.default_int_handler):
            previous[signum] = signal.signal(signum, handler)
    if hasattr(signal, "SIGXFSZ") and signal.getsignal(signal.SIGXFSZ) == signal.SIG_DFL:
        previous[signal.SIGXFSZ] = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)  # type: ignore[arg-type]


class _WatchedStdout:
    """stdout, remembering the error a write to it raised (a full device, an I/O error), so
    that the error line can say the output was what failed rather than some file."""

    def __init__(self, stream: object) -> None:
        self.stream = stream
        self.error: OSError | None = None

    def _watch(self, method: str, *args: object) -> object:
        try:
            return getattr(self.stream, method)(*args)
        except BrokenPipeError:
            raise
        except OSError as e:
            self.error = e
            raise

    def write(self, text: str) -> object:
        return self._watch("write", text)

    def flush(self) -> object:
        return self._watch("flush")

    def __getattr__(self, name: str) -> object:
        return getattr(self.stream, name)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's flush at exit cannot fail again."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run ``main``; expected failures become one ``error:`` line and their exit code.
    Ctrl-C or any catchable terminating signal leaves nothing half-written (exit 128 + the
    signal: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP, as a shell reports them). What
    the machine refuses (a full disk, no permission, a read-only place, an I/O error, output
    that cannot be written) is one line too, exit 2."""
    args = sys.argv[1:] if argv is None else argv
    verbose = "--verbose" in args or "-v" in args
    watched = sys.stdout = _WatchedStdout(sys.stdout)  # type: ignore[assignment]
    try:
        return _run(main, argv, verbose, watched)
    finally:
        if sys.stdout is watched:
            sys.stdout = watched.stream  # type: ignore[assignment]


def _run(main: Callable[[list[str] | None], int], argv: list[str] | None, verbose: bool,
         watched: _WatchedStdout) -> int:
    try:
        with signals_as_interrupt():
            code = main(argv)
            sys.stdout.flush()  # here, where a closed pipe is handled, not at interpreter exit
        return code
    except TwinsDeployError as e:
        if verbose:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:
        # the reader of our output went away (``twins-inspect --json | head -1``): as other
        # Unix tools do, stop quietly; stdout goes to /dev/null so the exit flush cannot fail
        _silence_stdout()
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt as e:
        signum = e.signum if isinstance(e, Terminated) else signal.SIGINT
        what = "interrupted" if signum == signal.SIGINT else f"terminated by {signal_name(signum)}"
        print(f"{what}; no partial artifact was left behind", file=sys.stderr)
        return 128 + signum
    except OSError as e:
        if e.errno not in ENVIRONMENT_ERRNOS or verbose:
            raise
        if watched.error is not None:
            _silence_stdout()
            print(f"error: cannot write to standard output: {watched.error.strerror or watched.error}",
                  file=sys.stderr)
        else:
            print(f"error: {os_error_line(e)}", file=sys.stderr)
        return 2
