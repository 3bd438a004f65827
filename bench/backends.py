"""Benchmark backends: how each becomes a Runner for a subject, or why it is skipped.

A backend turns a *subject* (a Twins variant, or timm's Swin-T for comparison) into a
Runner: PyTorch backends run the model itself; the others run an artifact that the
pipeline makes once into the output directory's cache (``.artifacts/``), or reuses from
there when every input that shapes it matches, and opens through the same checks as any
user's load. ONNX Runtime and OpenVINO (``openvino-f32``, ``openvino-bf16``) run the same
FP32 ONNX file.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from twins_deploy.engines.runners.base import Runner
from twins_deploy.engines.runners.pytorch import TorchRunner
from twins_deploy.errors import BackendUnavailableError, TwinsDeployError
from twins_deploy.pipeline import open_runner

if TYPE_CHECKING:
    from twins_deploy.pipeline import Artifact

BACKENDS = ("torch", "torch-fp16", "torch-compile", "ort-cpu", "ort-cuda", "trt-fp32", "trt-fp16",
            "openvino-f32", "openvino-bf16")
# What each backend computes in, for the rows of runners that do not say it themselves
# (OpenVINO's runner reports the precision it read back from its compiled model).
PRECISION = {"torch": "fp32", "torch-fp16": "fp16", "torch-compile": "fp32", "ort-cpu": "fp32",
             "ort-cuda": "fp32", "trt-fp32": "fp32", "trt-fp16": "fp16"}
BASELINE = "torch"
SWIN_T = "swin_tiny_patch4_window7_224"


@dataclass
class Subject:
    """A model under test: its name, how to build it, and its artifacts cache."""

    name: str
    build: Callable[[], torch.nn.Module]
    img_size: tuple[int, int]
    max_batch: int
    cache: Path
    param_count: int = 0
    gmacs: float | None = None
    _model: torch.nn.Module | None = field(default=None, repr=False)

    def model(self) -> torch.nn.Module:
        if self._model is None:
            self._model = self.build().eval()
            self.param_count = sum(p.numel() for p in self._model.parameters())
            self.gmacs = count_gmacs(self._model, self.img_size)
        return self._model


def count_gmacs(model: torch.nn.Module, hw: tuple[int, int]) -> float | None:
    """Multiply-accumulates per image (GMACs), counted by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

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


def twins_subject(name: str, hw: tuple[int, int], max_batch: int, cache: Path, seed: int = 0) -> Subject:
    from twins_deploy.factory import create_model

    return Subject(name, lambda: create_model(name, seed=seed), hw, max_batch, cache)


def swin_subject(hw: tuple[int, int], max_batch: int, cache: Path, seed: int = 0) -> Subject:
    """timm's Swin-T with the same non-zero random weights, for the side-by-side."""
    try:
        import timm
    except ImportError:
        raise BackendUnavailableError("--compare swin_t needs timm: pip install timm") from None
    from twins_deploy.weights import random_info, randomize_

    def build() -> torch.nn.Module:
        model = randomize_(timm.create_model(SWIN_T, exportable=True), seed)
        model.weights_info = random_info(seed)
        return model

    return Subject("swin_t", build, hw, max_batch, cache)


def subject_artifact(subject: Subject, backend: str, quiet: bool = True) -> Artifact:
    """The artifact ``backend`` runs, made by the pipeline or reused from the cache when
    every input that shapes it matches (see :func:`twins_deploy.pipeline.reuse_verdict`)."""
    from twins_deploy.exporters.spec import BatchRange, ExportSpec
    from twins_deploy.pipeline import ArtifactRequest, make_artifacts

    b = subject.max_batch
    spec = ExportSpec(model=subject.name, img_size=subject.img_size, batch=BatchRange(1, b, b))
    req = ArtifactRequest(spec=spec, precision="fp16" if backend == "trt-fp16" else "fp32",
                          fmt="trt" if backend.startswith("trt") else "onnx", out_dir=subject.cache,
                          on_existing="reuse", validate=False, onnx_without_engine=False, quiet=quiet)
    return make_artifacts(req, model=subject.model()).final


def _cuda_reason() -> str | None:
    return None if torch.cuda.is_available() else "no CUDA GPU visible to PyTorch"


def make_runner(backend: str, subject: Subject, *, cuda_graphs: bool = False, threads: int | None = None,
                quiet: bool = True) -> Runner:
    """The Runner for ``backend``, or :class:`BackendUnavailableError` saying why not."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    gpu_needed = backend in ("torch-fp16", "ort-cuda", "trt-fp32", "trt-fp16")
    if gpu_needed and (reason := _cuda_reason()):
        raise BackendUnavailableError(reason)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if backend == "torch":
        return TorchRunner(subject.model(), device=device, name="torch")
    if backend == "torch-fp16":
        return TorchRunner(subject.model(), device="cuda", dtype=torch.float16, name="torch-fp16")
    if backend == "torch-compile":
        return TorchRunner(subject.model(), device=device, compile=True, name="torch-compile")
    if backend in ("ort-cpu", "ort-cuda"):
        import onnxruntime as ort

        provider = backend.split("-")[1]
        if provider == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BackendUnavailableError("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
    art = subject_artifact(subject, backend, quiet=quiet)
    runner = open_runner(art.path, art.manifest, backend=backend if backend.startswith("openvino") else None,
                         provider="cuda" if backend == "ort-cuda" else "cpu", threads=threads,
                         use_cuda_graph=cuda_graphs)
    runner.name = backend
    return runner


def describe_skip(e: BaseException) -> str:
    if isinstance(e, TwinsDeployError):
        return str(e)
    return f"{type(e).__name__}: {e}"


@contextlib.contextmanager
def torch_threads(n: int | None):
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
