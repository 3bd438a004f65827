"""Benchmark subjects, and how a route of the table becomes a Runner for one.

A backend is a route of :mod:`twins_deploy.engines.routes`; it turns a *subject* (a Twins
variant, timm's Swin-T, or timm's own ONNX export of a Twins variant) into a Runner: routes
that run the model run it itself; the others run the artifact kind their row consumes first,
which the pipeline makes once into the output directory's cache (``.artifacts/``), or reuses
from there when every input that shapes it matches, and which opens through the same checks
as any user's load (:mod:`twins_deploy.engines.opening`). ONNX Runtime and OpenVINO run the
same FP32 ONNX file. A route tuned per batch (TensorRT) gets an artifact per measured batch,
in a cache folder of its own (``.artifacts/b<N>/``). A subject with a graph of its own (timm's export,
:mod:`twins_deploy.bench.timm_baseline`) runs that file on the routes it names.
"""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from twins_deploy.engines.opening import open_model, open_runner
from twins_deploy.engines.routes import TENSORRT, Route, get_route
from twins_deploy.engines.runners.base import Runner, RunTarget
from twins_deploy.engines.trt.options import TrtBuildOptions
from twins_deploy.engines.trt.preflight import preflight
from twins_deploy.errors import BackendUnavailableError, OptionError, TwinsDeployError
from twins_deploy.exporters.spec import BatchRange, ExportSpec
from twins_deploy.factory import create_model
from twins_deploy.pipeline import Artifact, ArtifactRequest, CalibRequest, make_artifacts
from twins_deploy.registry import Preprocess, get_config
from twins_deploy.weights import random_info, randomize_

SWIN = "swin_t"  # the subject --compare swin_t adds
SWIN_T = "swin_tiny_patch4_window7_224"  # its timm name


@dataclass
class Subject:
    """A model under test: its name, how to build it, and its artifacts cache."""

    name: str
    build: Callable[[], torch.nn.Module]
    img_size: tuple[int, int]
    max_batch: int
    cache: Path
    preprocess: Preprocess = field(default_factory=Preprocess)
    # the PyTorch FP32 model --validate compares against (default: a copy of the model, so that
    # the reference's explicit attention never touches the model a PyTorch route is timing)
    reference_build: Callable[[], torch.nn.Module] | None = None
    # a graph made outside the pipeline (timm's own export): the subject runs this file, on
    # the routes named in ``routes`` only; None: the pipeline's artifacts, on every --backends route
    graph: Callable[[], Path] | None = None
    routes: tuple[str, ...] | None = None
    param_count: int = 0
    gmacs: float | None = None
    graphs: dict[str, dict[str, Any]] = field(default_factory=dict)  # artifact kind -> facts, for the report
    calib: str | None = None  # images the INT8 routes' graphs are calibrated on (twins-bench --calib)
    _model: torch.nn.Module | None = field(default=None, repr=False)
    _reference: torch.nn.Module | None = field(default=None, repr=False)

    def model(self) -> torch.nn.Module:
        if self._model is None:
            self._model = self.build().eval()
            self.param_count = sum(p.numel() for p in self._model.parameters())
            self.gmacs = count_gmacs(self._model, self.img_size)
        return self._model

    def reference(self) -> torch.nn.Module:
        if self._reference is None:
            self._reference = (self.reference_build() if self.reference_build else copy.deepcopy(self.model())).eval()
        return self._reference

    def backends(self, wanted: tuple[str, ...]) -> tuple[str, ...]:
        """The routes this subject runs in a run of ``wanted`` (its own, when it names them)."""
        return self.routes if self.routes is not None else wanted


def count_gmacs(model: torch.nn.Module, hw: tuple[int, int]) -> float | None:
    """Multiply-accumulates per image (GMACs), counted by torch's FLOP counter."""

    impl = getattr(model, "attn_impl", None)
    if impl is not None:
        model.set_attention_impl("explicit")  # count attention as the matmuls it is
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.randn(1, 3, *hw))
        return round(counter.get_total_flops() / 2e9, 3)
    except Exception:  # counting is a convenience: never lose a benchmark over it
        return None
    finally:
        if impl is not None:
            model.set_attention_impl(impl)


def twins_subject(name: str, hw: tuple[int, int], max_batch: int, cache: Path, seed: int = 0,
                  calib: str | None = None) -> Subject:

    return Subject(name, lambda: create_model(name, seed=seed), hw, max_batch, cache,
                   preprocess=get_config(name).preprocess, calib=calib)


def swin_subject(hw: tuple[int, int], max_batch: int, cache: Path, seed: int = 0) -> Subject:
    """timm's Swin-T with the same non-zero random weights, for the side-by-side."""
    try:
        import timm
    except ImportError:
        raise BackendUnavailableError(f"--compare {SWIN} needs timm: pip install timm") from None

    def build() -> torch.nn.Module:
        model = randomize_(timm.create_model(SWIN_T, exportable=True), seed)
        model.weights_info = random_info(seed)
        return model

    return Subject(SWIN, build, hw, max_batch, cache)


def subject_artifact(subject: Subject, route: str | Route, tuned_for: int | None = None) -> Artifact:
    """The artifact ``route`` runs (the first kind its row consumes), made by the pipeline or
    reused from the cache when every input that shapes it matches (see
    :func:`twins_deploy.manifest.reuse_verdict`).

    Batches 1..the subject's largest, tuned for the largest; with ``tuned_for`` N, batches 1..N
    tuned for N (trtexec's ``--shapes=input:Nx3xHxW``), cached in ``b<N>/``: the reuse check
    would otherwise replace the artifact of one batch with another's, at every batch of every run."""
    row = route if isinstance(route, Route) else get_route(route)
    fmt, precision = row.makes
    if precision == "int8" and subject.calib is None:
        raise OptionError(f"route {row.name} runs an INT8 graph, which is calibrated on images: "
                          "pass twins-bench --calib DIR (never random data)")
    b = tuned_for or subject.max_batch
    spec = ExportSpec(model=subject.name, img_size=subject.img_size, batch=BatchRange(1, b, b))
    req = ArtifactRequest(spec=spec, precision=precision, fmt=fmt,
                          out_dir=subject.cache / f"b{tuned_for}" if tuned_for else subject.cache,
                          on_existing="reuse", validate=False,
                          calib=CalibRequest(subject.calib) if precision == "int8" and subject.calib else None)
    made = make_artifacts(req, model=subject.model())
    # an INT8 ONNX route runs the Q/DQ form it runs fastest (one calibration writes each form)
    art = made.int8_form(row.int8_form) if row.int8_form and made.engine is None else made.final
    m = art.manifest
    kind = row.consumes[0] + (f" b{tuned_for}" if tuned_for else "")
    subject.graphs[kind] = {"file": art.path.name, "nodes": m.onnx.nodes if m.onnx else None,
                                       "size_mb": round(art.path.stat().st_size / 1e6, 2), "sha256": m.sha256,
                                       "made_by": "the pipeline (twins-export)"}
    return art


def make_runner(backend: str, subject: Subject, *, tuned_for: int | None = None, cuda_graphs: bool = False,
                threads: int | None = None) -> Runner:
    """The Runner of route ``backend`` for ``subject`` (on the artifact made for batch
    ``tuned_for``, see :func:`subject_artifact`), or :class:`BackendUnavailableError` saying
    why not (before any artifact is made for it).

    With ``threads`` pinned, ONNX Runtime's idle intra-op threads sleep instead of spinning:
    runners that share the cores (an interleaved run keeps several open) then do not steal
    each other's time."""
    route = get_route(backend)
    if route.needs_gpu and not torch.cuda.is_available():
        raise BackendUnavailableError("no CUDA GPU visible to PyTorch")
    spinning = not threads
    if subject.graph is not None:
        return route.runner.from_route(route, RunTarget(path=subject.graph(), threads=threads, spinning=spinning))
    if route.runs_model:
        return open_model(route, subject.model(), threads=threads)
    art = subject_artifact(subject, route, tuned_for)
    return open_runner(art.path, art.manifest, route=route.name, threads=threads, use_cuda_graph=cuda_graphs,
                       spinning=spinning)


def describe_error(e: BaseException) -> str:
    """One line saying why: the message of an expected failure, type and message of any other;
    its first line, or a first line that introduces a list (``TensorRT cannot run here:``,
    then one problem a line) with the list's items."""
    text = str(e) if isinstance(e, TwinsDeployError) else f"{type(e).__name__}: {e}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(e).__name__
    if lines[0].endswith(":") and len(lines) > 1:
        return f"{lines[0]} " + "; ".join(line.removeprefix("- ") for line in lines[1:])
    return lines[0]


def tensorrt_problem(backends: Iterable[str]) -> BackendUnavailableError | None:
    """Why TensorRT cannot build and run engines here, when ``backends`` has a TensorRT route:
    the preflight's error (:mod:`twins_deploy.engines.trt.preflight`: its module, the driver,
    the GPU, free memory for the default builder workspace), every problem named; None when
    TensorRT can work here or no route needs it. Asked before any model is built: a run of
    TensorRT routes only stops with it (exit 3), a mixed run records it in the TensorRT rows."""
    if not any(get_route(b).family == TENSORRT for b in backends):
        return None
    try:
        preflight(build=True, workspace_gib=TrtBuildOptions().workspace_gib).raise_if_failed()
    except BackendUnavailableError as e:
        return e
    return None


@contextlib.contextmanager
def torch_threads(n: int | None):
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
