"""One exception hierarchy for every failure a user can cause or fix.

The CLI catches :class:`TwinsDeployError` and prints its message as one line with a
non-zero exit code; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import errno


class TwinsDeployError(Exception):
    """Base class of expected failures; ``exit_code`` is what the CLI returns."""

    exit_code: int = 2


class UnknownModelError(TwinsDeployError, KeyError):
    """A model name that is neither a short name nor a timm alias."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(TwinsDeployError):
    """A checkpoint that cannot be read or does not fit the model."""


class WeightsUnavailableError(TwinsDeployError):
    """Pretrained weights were asked for but cannot be fetched (offline, no huggingface_hub)."""


class InputShapeError(TwinsDeployError, ValueError):
    """An input or image size the model or artifact cannot take."""


class OptionError(TwinsDeployError, ValueError):
    """An option outside the values it can take (a workspace of 0 GiB, opt level 7, ...)."""


class ArtifactError(TwinsDeployError):
    """A missing, corrupt, foreign or already-existing artifact (ONNX, engine, manifest)."""


class BackendUnavailableError(TwinsDeployError):
    """A backend's software or hardware (TensorRT, CUDA, a GPU) is not present."""

    exit_code = 3


class ExportError(TwinsDeployError):
    """The exporter or a graph rewrite failed."""


class ValidationFailedError(TwinsDeployError):
    """An artifact computes something other than the PyTorch reference; the report is kept."""

    exit_code = 1


# errnos that mean "the machine or the place refused", not a bug: a full disk, a file too
# large, a name too long, no permission, a read-only file system, an I/O error, ...
ENVIRONMENT_ERRNOS = frozenset(
    getattr(errno, name) for name in (
        "ENOSPC", "EDQUOT", "EFBIG", "ENAMETOOLONG", "EACCES", "EPERM", "EROFS", "EIO", "ENOTDIR",
        "EISDIR", "ENOENT", "EEXIST", "ELOOP", "EMFILE", "ENFILE", "ENOMEM", "ETXTBSY", "EXDEV", "ENXIO",
        "ESTALE", "EBUSY", "ENOTEMPTY", "ENODEV", "EINVAL")
    if hasattr(errno, name))


def quoted(value: object, limit: int = 200) -> str:
    """``repr(value)`` for an error line, cut to ``limit`` characters: an error quotes what the
    user gave, but a 20 MB string from a hostile manifest must not become a 20 MB line."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def os_error_line(e: OSError) -> str:
    """One line for an OSError the machine raised: what failed, on which path (bounded)."""
    what = e.strerror or type(e).__name__
    where = [quoted(str(p), 160) for p in (e.filename, e.filename2) if p is not None]
    return f"{what}: {' -> '.join(where)}" if where else what
