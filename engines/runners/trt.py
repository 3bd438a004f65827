"""TensorRT as a Runner: name-based I/O, cuda-python memory and streams, checked engines.

Before deserializing, the manifest beside the plan is checked against the installed
TensorRT and the GPU (:mod:`twins_deploy.engines.trt.compat`), so a foreign engine fails
with a clear message instead of TensorRT's "Version tag does not match". torch CUDA
tensors are accepted without copies through :meth:`TrtRunner.infer_torch`.

Conformance convention (see :mod:`twins_deploy.engines.trt.build`): TensorRT objects
live in variables named ``runtime``, ``engine`` and ``context``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from twins_deploy.engines.runners.base import Runner, as_numpy
from twins_deploy.engines.trt.compat import check_engine_compat
from twins_deploy.engines.trt.env import gpu_info, import_tensorrt
from twins_deploy.engines.trt.profile import Profile
from twins_deploy.errors import ArtifactError

if TYPE_CHECKING:
    from twins_deploy.manifest import Manifest


class TrtRunner(Runner):
    """Run a twins-deploy TensorRT plan (with its manifest) on GPU 0."""

    device = "cuda"

    def __init__(self, path: str | os.PathLike[str], manifest: Manifest, use_cuda_graph: bool = False) -> None:
        super().__init__()
        if manifest.engine is None:
            raise ArtifactError(f"{Path(path).name} is not a TensorRT engine (its manifest is of kind {manifest.kind!r})")
        self.path = Path(path)
        self.manifest = manifest
        self.use_cuda_graph = use_cuda_graph
        self.name = f"trt-{manifest.precision}"
        self.warnings: list[str] = []

    # -- loading ------------------------------------------------------------------------
    def _activate(self) -> None:
        from twins_deploy.engines.trt.cuda import Stream

        info = self.manifest.engine
        vc = bool(info.build_options.get("version_compat"))
        trt = import_tensorrt(lean_ok=vc)
        self.gpu = gpu_info()
        self.warnings = check_engine_compat(info, trt.__version__, self.gpu)
        self.shapes = Profile.from_dict(info.profile)
        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._logger)
        if vc:
            runtime.engine_host_code_allowed = True  # the plan embeds its lean runtime
        engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise ArtifactError(f"TensorRT could not deserialize {self.path.name}: corrupt or foreign plan")
        self.runtime, self.engine = runtime, engine
        self.context = engine.create_execution_context()
        self.inputs, self.output_names = [], []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            (self.inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else self.output_names).append(name)
        self.input_name = self.inputs[0]
        self.np_dtype = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in self.inputs + self.output_names}
        self.stream = Stream()
        self._buffers: dict[str, Any] = {}
        self._graph = None

    def _deactivate(self) -> None:
        if self._graph is not None:
            self._graph.destroy()
        for buf in self._buffers.values():
            buf.free()
        self.stream.destroy()
        del self.context, self.engine, self.runtime

    # -- shapes and memory --------------------------------------------------------------------
    def _bind(self, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        """Set the input shape, (re)allocate device buffers, set every tensor address."""
        from twins_deploy.engines.trt.cuda import DeviceBuffer

        self.shapes.check(shape)
        if not self.context.set_input_shape(self.input_name, tuple(shape)):
            raise ArtifactError(f"TensorRT refused input shape {tuple(shape)}")
        shapes = {self.input_name: tuple(shape)}
        shapes.update({n: tuple(self.context.get_tensor_shape(n)) for n in self.output_names})
        for name, shp in shapes.items():
            nbytes = int(np.prod(shp)) * self.np_dtype[name].itemsize
            if name not in self._buffers or self._buffers[name].nbytes < nbytes:
                if name in self._buffers:
                    self._buffers[name].free()
                self._buffers[name] = DeviceBuffer(nbytes)
            self.context.set_tensor_address(name, self._buffers[name].ptr)
        return shapes

    def _execute(self) -> None:
        if not self.context.execute_async_v3(self.stream.handle):
            raise ArtifactError("TensorRT execute_async_v3 failed (see the TensorRT log)")

    # -- correctness path -----------------------------------------------------------------------
    def infer(self, x: Any) -> list[np.ndarray]:
        from twins_deploy.engines.trt.cuda import copy_dtoh, copy_htod

        if type(x).__module__.startswith("torch") and getattr(x, "is_cuda", False):
            return [as_numpy(t) for t in self.infer_torch(x)]
        host = as_numpy(x).astype(self.np_dtype[self.input_name], copy=False)
        shapes = self._bind(host.shape)
        copy_htod(self._buffers[self.input_name], host, self.stream)
        self._execute()
        outs = [np.empty(shapes[n], dtype=self.np_dtype[n]) for n in self.output_names]
        for name, arr in zip(self.output_names, outs):
            copy_dtoh(arr, self._buffers[name], self.stream)
        self.stream.synchronize()
        return [o.astype(np.float32, copy=False) for o in outs]

    def infer_torch(self, x: Any) -> list[Any]:
        """torch CUDA tensor in, torch CUDA tensors out, no host copies."""
        import torch

        dtype = {np.dtype(np.float16): torch.float16, np.dtype(np.float32): torch.float32}
        x = x.to(dtype[self.np_dtype[self.input_name]]).contiguous()
        self.shapes.check(tuple(x.shape))
        self.context.set_input_shape(self.input_name, tuple(x.shape))
        outs = [torch.empty(tuple(self.context.get_tensor_shape(n)), dtype=dtype[self.np_dtype[n]], device=x.device)
                for n in self.output_names]
        self.context.set_tensor_address(self.input_name, x.data_ptr())
        for name, t in zip(self.output_names, outs):
            self.context.set_tensor_address(name, t.data_ptr())
        stream = torch.cuda.Stream(device=x.device)
        stream.wait_stream(torch.cuda.current_stream(x.device))
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise ArtifactError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        torch.cuda.current_stream(x.device).wait_stream(stream)
        stream.synchronize()  # keeps x alive until TensorRT has read it
        return outs

    # -- timing path ------------------------------------------------------------------------------
    def prepare(self, x: np.ndarray, include_copies: bool = False) -> None:
        from twins_deploy.engines.trt.cuda import CudaGraph, copy_htod

        self._include_copies = include_copies
        self._host_in = np.ascontiguousarray(as_numpy(x).astype(self.np_dtype[self.input_name], copy=False))
        shapes = self._bind(self._host_in.shape)
        self._host_out = [np.empty(shapes[n], dtype=self.np_dtype[n]) for n in self.output_names]
        copy_htod(self._buffers[self.input_name], self._host_in, self.stream)
        self._execute()  # first run outside any capture: TensorRT's lazy initialisation
        self.stream.synchronize()
        if self._graph is not None:
            self._graph.destroy()
            self._graph = None
        if self.use_cuda_graph and not include_copies:
            graph = CudaGraph(self.stream)
            graph.begin()
            ok = self.context.execute_async_v3(self.stream.handle)
            graph.end()
            if ok:
                self._graph = graph
            else:  # some engines cannot be captured: fall back to plain launches
                graph.destroy()

    def step(self) -> None:
        from twins_deploy.engines.trt.cuda import copy_dtoh, copy_htod

        if self._include_copies:
            copy_htod(self._buffers[self.input_name], self._host_in, self.stream)
        if self._graph is not None:
            self._graph.launch()
        else:
            self._execute()
        if self._include_copies:
            for name, arr in zip(self.output_names, self._host_out):
                copy_dtoh(arr, self._buffers[name], self.stream)

    def sync(self) -> None:
        self.stream.synchronize()

    @property
    def torch_stream(self) -> Any:
        """This runner's stream as a torch stream, so CUDA-event timing records on it."""
        import torch

        return torch.cuda.ExternalStream(self.stream.handle)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "path": str(self.path), "cuda_graph": self._graph is not None
                if self.active else self.use_cuda_graph}
