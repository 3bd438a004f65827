"""Benchmark backends: how each is built from a model, or why it is skipped.

A backend turns a *subject* (a Twins variant, or timm's Swin-T for comparison) into a
Runner. Artifacts (ONNX files, engines) are built once per subject into the output
directory's cache and reused by every batch size.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from twins_deploy.engines.runner import Runner
from twins_deploy.engines.torch_runner import TorchRunner
from twins_deploy.errors import BackendUnavailableError, TwinsDeployError

BACKENDS = ("torch", "torch-fp16", "torch-compile", "ort-cpu", "ort-cuda", "trt-fp32", "trt-fp16")
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
    _onnx: dict[str, Path] = field(default_factory=dict, repr=False)

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
    from twins_deploy.weights import randomize_

    return Subject("swin_t", lambda: randomize_(timm.create_model(SWIN_T, exportable=True), seed), hw,
                   max_batch, cache)


def plain_onnx(model: torch.nn.Module, hw: tuple[int, int]) -> Any:
    """timm's own export recipe (TorchScript exporter, opset 17, dynamic batch) for models
    that are not ours: Swin-T in the benchmark, timm's Twins in the graph comparison."""
    import onnx

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(2, 3, *hw),), buf, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return onnx.load_from_string(buf.getvalue())


def subject_onnx(subject: Subject, precision: str) -> Path:
    """The subject's ONNX file (dynamic batch, static H/W), exported once."""
    if precision in subject._onnx:
        return subject._onnx[precision]
    from twins_deploy.artifacts import write_bytes_atomic
    from twins_deploy.exporters.spec import BatchRange, ExportSpec

    subject.cache.mkdir(parents=True, exist_ok=True)
    path = subject.cache / f"{subject.name}_{precision}.onnx"
    model = subject.model()
    if hasattr(model, "cfg"):
        from twins_deploy.exporters.onnx_export import export_onnx

        spec = ExportSpec(model=subject.name, img_size=subject.img_size, precision=precision,
                          batch=BatchRange(1, subject.max_batch, subject.max_batch))
        graph, _ = export_onnx(model, spec)
    else:
        from twins_deploy.exporters.fp16 import to_mixed_fp16

        graph = plain_onnx(model, subject.img_size)
        if precision == "fp16":
            graph = to_mixed_fp16(graph)
    write_bytes_atomic(path, graph.SerializeToString())
    subject._onnx[precision] = path
    return path


def _cuda_reason() -> str | None:
    return None if torch.cuda.is_available() else "no CUDA GPU visible to PyTorch"


def _trt_runner(subject: Subject, precision: str, cuda_graphs: bool) -> Runner:
    from twins_deploy.artifacts import write_bytes_atomic
    from twins_deploy.engines.trt_builder import build_engine, onnx_precision_for, precision_route
    from twins_deploy.engines.trt_env import gpu_info, has_builder, import_tensorrt, trt_major
    from twins_deploy.engines.trt_options import TrtBuildOptions
    from twins_deploy.engines.trt_profile import Profile
    from twins_deploy.engines.trt_runner import TrtRunner

    trt = import_tensorrt()
    if not has_builder(trt):
        raise BackendUnavailableError("the installed TensorRT has no builder")
    gpu = gpu_info()
    route = precision_route(precision, trt_major(trt.__version__))
    onnx_path = subject_onnx(subject, onnx_precision_for(route))
    b = subject.max_batch
    h, w = subject.img_size
    profile = Profile("input", (1, 3, h, w), (b, 3, h, w), (b, 3, h, w))
    opts = TrtBuildOptions()
    plan_path = subject.cache / f"{subject.name}_{precision}.plan"
    if not plan_path.exists():
        plan, _ = build_engine(onnx_path, profile, opts, route)
        write_bytes_atomic(plan_path, plan)
    manifest = {"precision": precision, "gpu": gpu,
                "trt": {"version": trt.__version__, "profile": profile.to_dict(), "build_options": opts.to_dict()}}
    return TrtRunner(plan_path, manifest, use_cuda_graph=cuda_graphs)


def make_runner(backend: str, subject: Subject, *, cuda_graphs: bool = False, threads: int | None = None) -> Runner:
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

        from twins_deploy.engines.ort_runner import OrtRunner

        provider = backend.split("-")[1]
        if provider == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BackendUnavailableError("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
        runner = OrtRunner(subject_onnx(subject, "fp32"), provider=provider, threads=threads)
        runner.name = backend
        return runner
    runner = _trt_runner(subject, backend.split("-")[1], cuda_graphs)
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
