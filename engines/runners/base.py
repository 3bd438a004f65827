"""The one abstraction: a Runner turns an NCHW float32 batch into named outputs.

Validation and benchmarking are written once against this surface (in the spirit of
Polygraphy's runners): ``activate`` loads lazily, ``infer`` is the correctness path
(host in, host out), and ``prepare``/``step``/``sync`` are the timing path (input kept
on the device, outputs left there, so a benchmark measures compute, not copies).
"""
from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from twins_deploy.errors import InputShapeError, quoted
from twins_deploy.registry import MIN_IMAGE_SIDE

if TYPE_CHECKING:
    from twins_deploy.manifest import Manifest


class RouteRow(Protocol):
    """What a Runner reads of its row of the route table (``engines/routes.py``'s ``Route``);
    a Protocol, so that the runners do not import the table that lists them."""

    name: str
    device: str
    options: Mapping[str, Any]


@dataclass(frozen=True)
class RunTarget:
    """What a route runs, and how: the PyTorch model (``model``) or an artifact file with its
    manifest, plus the run options every Runner may read (it ignores those it has no use for)."""

    model: Any = None
    path: Path | None = None
    manifest: Manifest | None = None
    threads: int | None = None
    spinning: bool = True     # CPU runtimes: idle threads spin (off where runners share the cores)
    cuda_graphs: bool = False


class Runner(abc.ABC):
    """Base class: subclasses implement ``_activate``, ``infer`` and the timing hooks."""

    name: str = "runner"
    device: str = "cpu"  # "cpu" or "cuda": where timing must synchronise

    def __init__(self) -> None:
        self.active = False
        self.output_names: list[str] = []

    def activate(self) -> Runner:
        if not self.active:
            self._activate()
            self.active = True
        return self

    def deactivate(self) -> None:
        if self.active:
            self._deactivate()
            self.active = False

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, *exc: Any) -> None:
        self.deactivate()

    @classmethod
    def from_route(cls, route: RouteRow, target: RunTarget) -> Runner:
        """The Runner for ``route`` (a row of :mod:`twins_deploy.engines.routes`) on ``target``;
        each Runner class reads the row's options it knows."""
        raise NotImplementedError(f"{cls.__name__} cannot be opened from a route")

    @abc.abstractmethod
    def _activate(self) -> None: ...

    def _deactivate(self) -> None:  # most runners just drop references
        return None

    @abc.abstractmethod
    def infer(self, x: np.ndarray) -> list[np.ndarray]:
        """Outputs for ``x`` (NCHW float32), in ``output_names`` order, as float32 arrays."""

    # -- timing path -----------------------------------------------------------------------
    def prepare(self, x: np.ndarray, include_copies: bool = False) -> None:
        """Stage ``x`` for repeated :meth:`step` calls (on the device for GPU runners)."""
        self._prepared = x
        self._include_copies = include_copies

    def step(self) -> None:
        """One inference on the prepared input; may return before the device finishes."""
        self.infer(self._prepared)

    def sync(self) -> None:
        """Wait until every issued :meth:`step` has finished."""
        return None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "device": self.device}


def check_input_shape(shape: tuple[int, ...], declared: list[int | None], name: str) -> None:
    """Refuse an input the graph would reject deep inside its runtime: the rank and every fixed
    dimension of ``declared`` (None: any size) must match, and images must be at least
    ``MIN_IMAGE_SIDE`` on a side (smaller ones leave a stage with nothing to sub-sample)."""
    fits = len(shape) == len(declared) and all(d is None or d == s for d, s in zip(declared, shape))
    if not fits:
        want = "x".join("N" if d is None else str(d) for d in declared)
        raise InputShapeError(f"input of shape {'x'.join(map(str, shape))} does not fit the model's "
                              f"{quoted(name)} ({want}; N: any size)")
    if len(shape) == 4 and min(shape[2:]) < MIN_IMAGE_SIDE:
        raise InputShapeError(f"input of shape {'x'.join(map(str, shape))} is too small: H and W must be "
                              f">= {MIN_IMAGE_SIDE}")


def as_numpy(x: Any) -> np.ndarray:
    """Accept numpy arrays or torch tensors (any device) as float32 numpy."""
    if isinstance(x, np.ndarray):
        return np.ascontiguousarray(x, dtype=np.float32)
    return x.detach().float().cpu().numpy()
