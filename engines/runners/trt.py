"""TensorRT as a Runner: name-based I/O, cuda-python memory and streams, checked engines.

Before deserializing, the manifest beside the plan is checked against the installed
TensorRT and the GPU (:mod:`twins_deploy.engines.trt.compat`), so a foreign engine fails
with a clear message instead of TensorRT's "Version tag does not match". torch CUDA
tensors are accepted without copies through :meth:`TrtRunner.infer_torch`.

Why not Polygraphy's ``TrtRunner`` (the builder does use Polygraphy): its ``infer`` copies
through its own host buffers on every call and times with the host clock, it has no
CUDA-graph replay or trtexec-like timing loop, and it imports the full ``tensorrt``
module, while a version-compatible plan may have only the lean runtime to run on.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from twins_deploy.engines.runners.base import RouteRow, Runner, RunTarget, as_numpy
from twins_deploy.engines.trt.compat import check_engine_compat
from twins_deploy.engines.trt.preflight import preflight
from twins_deploy.engines.trt.profile import Profile
from twins_deploy.errors import ArtifactError, InputShapeError, quoted

if TYPE_CHECKING:
    from twins_deploy.manifest import Manifest


IO_DTYPES = {"FLOAT": np.float32, "HALF": np.float16}  # what twins-export writes and the runner feeds


def io_dtype(trt: Any, engine: Any, name: str, plan: str) -> np.dtype:
    """The numpy dtype of I/O tensor ``name``; a plan with other I/O types (BF16, FP8, INT8:
    not made by twins-export) is refused by name instead of failing in ``trt.nptype``."""
    dtype = engine.get_tensor_dtype(name)
    kind = getattr(dtype, "name", str(dtype))
    if kind not in IO_DTYPES:
        raise ArtifactError(f"{plan}: tensor {quoted(name)} is {kind}; the TensorRT runner feeds FP32 or FP16 I/O only "
                            "(rebuild the plan with twins-export --fmt trt)")
    return np.dtype(IO_DTYPES[kind])


class TrtRunner(Runner):
    """Run a twins-deploy TensorRT plan (with its manifest) on GPU 0."""

    device = "cuda"

    def __init__(self, path: str | os.PathLike[str], manifest: Manifest, use_cuda_graph: bool = False) -> None:
        super().__init__()
        if manifest.engine is None:
            raise ArtifactError(f"the manifest of {Path(path).name} describes no TensorRT engine (no TensorRT "
                                "version, GPU or profile): it was not written by twins-export --fmt trt")
        self.path = Path(path)
        self.manifest = manifest
        self.use_cuda_graph = use_cuda_graph
        self.name = f"trt-{manifest.precision}"
        self.warnings: list[str] = []

    @classmethod
    def from_route(cls, route: RouteRow, target: RunTarget) -> TrtRunner:
        runner = cls(target.path, target.manifest, use_cuda_graph=target.cuda_graphs)
        runner.name = route.name
        return runner

    # -- loading ------------------------------------------------------------------------
    def _activate(self) -> None:
        from twins_deploy.engines.trt.cuda import Stream

        info = self.manifest.engine
        vc = bool(info.build_options.get("version_compat"))
        found = preflight(build=False, lean_ok=vc)  # driver, GPU support: one line each, before any load
        found.raise_if_failed()
        trt, self.gpu = found.trt, found.gpu
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
        self.inputs, self.output_names = [], []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            (self.inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else self.output_names).append(name)
        self.input_name = self.inputs[0]
        self._check_profile(engine)
        self.np_dtype = {n: io_dtype(trt, engine, n, self.path.name) for n in self.inputs + self.output_names}
        self.context = engine.create_execution_context()
        if self.context is None:  # TensorRT logs why; the usual cause is device memory
            raise ArtifactError(f"TensorRT could not create an execution context for {self.path.name} "
                                "(not enough free GPU memory for its activations?)")
        self.stream = Stream()
        self._buffers: dict[str, Any] = {}
        self._bound: dict[str, tuple[int, tuple[int, ...]]] = {}  # name -> (address, shape) set in the context
        self._graph: Any = None
        self._pinned: list[Any] = []
        self._prepared_shape: tuple[int, ...] | None = None  # the input prepare() staged for step()
        self._step_ready = False  # the context is bound as prepare() left it
        self.graph_fallback: str | None = None

    def _check_profile(self, engine: Any) -> None:
        """The plan's optimization profile 0 (the one a new context runs with) is the truth
        the manifest's shapes stand for: a manifest that disagrees would let a shape through
        that TensorRT refuses, or refuse one it takes."""
        found = [tuple(int(d) for d in s) for s in engine.get_tensor_profile_shape(self.input_name, 0)]
        said = [self.shapes.min, self.shapes.opt, self.shapes.max]
        if self.shapes.input != self.input_name or found != [tuple(s) for s in said]:
            raise ArtifactError(f"{self.path.name}: the plan's profile for {quoted(self.input_name)} is "
                                f"{found or 'missing'} but its manifest says {quoted(self.shapes.input)} {said}; "
                                "rebuild the engine with twins-export --fmt trt")

    def _deactivate(self) -> None:
        self._drop_graph()
        self._free_pinned()
        for buf in self._buffers.values():
            buf.free()
        self.stream.destroy()
        del self.context, self.engine, self.runtime

    def _drop_graph(self) -> None:
        """A graph replays the addresses and shapes it captured: it must go whenever the
        context's bindings change, or it would run on freed or foreign memory."""
        if self._graph is not None:
            self._graph.destroy()
            self._graph = None

    def _free_pinned(self) -> None:
        for arr in self._pinned:
            arr.free()
        self._pinned = []

    def _set_address(self, name: str, ptr: int, shape: tuple[int, ...]) -> None:
        if not self.context.set_tensor_address(name, ptr):
            raise ArtifactError(f"TensorRT refused the address of tensor {quoted(name)} (it must be 256-byte aligned)")
        if self._bound.get(name) != (ptr, shape):
            self._drop_graph()
        self._bound[name] = (ptr, shape)

    # -- shapes and memory --------------------------------------------------------------------
    def _bind(self, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        """Set the input shape, (re)allocate device buffers, set every tensor address."""
        from twins_deploy.engines.trt.cuda import DeviceBuffer

        shapes = self._set_shape(tuple(shape))
        for name, shp in shapes.items():
            nbytes = int(np.prod(shp)) * self.np_dtype[name].itemsize
            if name not in self._buffers or self._buffers[name].nbytes < nbytes:
                self._drop_graph()  # before the memory it replays onto is freed
                if name in self._buffers:
                    self._buffers[name].free()
                self._buffers[name] = DeviceBuffer(nbytes)
            self._set_address(name, self._buffers[name].ptr, shp)
        return shapes

    def _set_shape(self, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        """Set the input shape (checked against the profile, and TensorRT's answer checked)
        and return every I/O tensor's shape."""
        self.shapes.check(shape)
        if not self.context.set_input_shape(self.input_name, shape):
            raise InputShapeError(f"TensorRT refused input shape {shape} for {quoted(self.input_name)}")
        shapes = {self.input_name: shape}
        shapes.update({n: tuple(self.context.get_tensor_shape(n)) for n in self.output_names})
        bad = [n for n, s in shapes.items() if any(d < 0 for d in s)]
        if bad:
            raise ArtifactError(f"TensorRT could not infer the shape of {', '.join(bad)} for input {shape}")
        return shapes

    def _execute(self) -> None:
        if not self.context.execute_async_v3(self.stream.handle):
            raise ArtifactError("TensorRT execute_async_v3 failed (see the TensorRT log)")

    # -- correctness path -----------------------------------------------------------------------
    def infer(self, x: Any) -> list[np.ndarray]:
        from twins_deploy.engines.trt.cuda import copy_dtoh, copy_htod

        if getattr(x, "is_cuda", False):  # a CUDA torch tensor: no round trip through the host
            return [as_numpy(t) for t in self.infer_torch(x)]
        host = as_numpy(x).astype(self.np_dtype[self.input_name], copy=False)
        self._step_ready = False
        shapes = self._bind(host.shape)
        copy_htod(self._buffers[self.input_name], host, self.stream)
        self._execute()
        outs = [np.empty(shapes[n], dtype=self.np_dtype[n]) for n in self.output_names]
        for name, arr in zip(self.output_names, outs):
            copy_dtoh(arr, self._buffers[name], self.stream)
        self.stream.synchronize()
        return [o.astype(np.float32, copy=False) for o in outs]

    def infer_torch(self, x: Any) -> list[Any]:
        """torch CUDA tensor in, torch CUDA tensors out, no host copies.

        The tensor must live on this runner's GPU (device 0); TensorRT's answer to the
        input shape is checked; afterwards the context points at this runner's own buffers
        again (or at nothing it will use unbound), never at the caller's tensors, which may
        be freed as soon as this returns."""

        if not getattr(x, "is_cuda", False) or x.device.index not in (None, 0):
            raise InputShapeError(f"infer_torch needs a CUDA tensor on GPU 0 (the engine's device), got one on {x.device}")
        dtype = {np.dtype(np.float16): torch.float16, np.dtype(np.float32): torch.float32}
        x = x.to(dtype[self.np_dtype[self.input_name]]).contiguous()
        self._step_ready = False
        shapes = self._set_shape(tuple(x.shape))
        outs = [torch.empty(shapes[n], dtype=dtype[self.np_dtype[n]], device=x.device) for n in self.output_names]
        try:
            for name, t in zip([self.input_name, *self.output_names], [x, *outs]):
                self._set_address(name, t.data_ptr(), shapes[name])
            stream = torch.cuda.Stream(device=x.device)
            stream.wait_stream(torch.cuda.current_stream(x.device))
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise ArtifactError("TensorRT execute_async_v3 failed (see the TensorRT log)")
            torch.cuda.current_stream(x.device).wait_stream(stream)
            stream.synchronize()  # keeps x alive until TensorRT has read it
        finally:
            self._unbind_foreign()
        return outs

    def _unbind_foreign(self) -> None:
        """After :meth:`infer_torch`: the context must not keep the caller's addresses (the
        tensors may be freed as soon as it returns). Every tensor with a buffer of this
        runner points back at it; the rest is bound again before anything runs (:meth:`infer`
        always binds, :meth:`step` binds the prepared input again after any other call)."""
        for name in list(self._bound):
            buf = self._buffers.get(name)
            if buf is None:
                del self._bound[name]
            else:
                self._set_address(name, buf.ptr, self._bound[name][1])

    # -- timing path ------------------------------------------------------------------------------
    def prepare(self, x: np.ndarray, include_copies: bool = False) -> None:
        """Stage ``x`` on the device, run once, and (with CUDA graphs) capture one inference.

        With ``include_copies`` the host side lives in pinned memory, as trtexec's, and no
        graph is captured (the copies are timed as plain async copies). A failed capture
        falls back to plain launches and says why in :meth:`describe`, as trtexec does."""
        from twins_deploy.engines.trt.cuda import CudaGraph, PinnedHostArray, copy_htod

        self._include_copies = include_copies
        host = np.ascontiguousarray(as_numpy(x).astype(self.np_dtype[self.input_name], copy=False))
        shapes = self._bind(host.shape)
        self._prepared_shape = tuple(host.shape)
        self._free_pinned()
        if include_copies:
            self._pinned = [PinnedHostArray(shapes[n], self.np_dtype[n]) for n in [self.input_name, *self.output_names]]
            self._pinned[0].array[...] = host
            self._host_in, self._host_out = self._pinned[0].array, [p.array for p in self._pinned[1:]]
        else:
            self._host_in, self._host_out = host, []
        copy_htod(self._buffers[self.input_name], self._host_in, self.stream)
        self._execute()  # first run outside any capture: TensorRT's lazy initialisation
        self.stream.synchronize()
        self._drop_graph()
        self.graph_fallback = None
        if self.use_cuda_graph and not include_copies:
            self._graph, self.graph_fallback = CudaGraph.capture(
                self.stream, lambda: self.context.execute_async_v3(self.stream.handle))
        self._step_ready = True

    def step(self) -> None:
        from twins_deploy.engines.trt.cuda import copy_dtoh, copy_htod

        if not self._step_ready:  # infer()/infer_torch() ran since prepare(): bind its input again
            if self._prepared_shape is None:
                raise RuntimeError("TrtRunner.step() needs prepare() first")
            self._bind(self._prepared_shape)
            self._step_ready = True
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

        return torch.cuda.ExternalStream(self.stream.handle)

    def describe(self) -> dict[str, Any]:
        info = {**super().describe(), "path": str(self.path),
                "cuda_graph": self._graph is not None if self.active else self.use_cuda_graph}
        if self.active and self.graph_fallback:
            info["cuda_graph_fallback"] = self.graph_fallback
        return info
