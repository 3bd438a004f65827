"""A double of ``cuda.bindings.runtime`` built on the real, installed module.

Every name is looked up on the real module: types and enums (``cudaError_t``,
``cudaMemcpyKind``, ``cudaStream_t``, ...) are the real ones; a function is the real
function's signature (``inspect.signature`` of the Cython function) bound strictly —
``unittest.mock.create_autospec`` accepts any arguments for Cython functions, so the
binding is done here — with enum-typed parameters type-checked, then answered by the
model below on a :class:`FakeDevice`. A name the real module lacks raises AttributeError;
a real function this double does not model raises NotImplementedError (add it here).
"""
from __future__ import annotations

import ctypes
import inspect
from types import ModuleType
from typing import Any, Callable

from .fake_device import FakeDevice


class FakeCudart(ModuleType):
    def __init__(self, real: ModuleType, device: FakeDevice) -> None:
        super().__init__(real.__name__)
        self._real, self._device, self.calls = real, device, []  # calls: (name, bound arguments)

    def __getattr__(self, name: str) -> Any:
        real_obj = getattr(self._real, name)  # AttributeError for a name cuda-bindings lacks
        if not callable(real_obj) or isinstance(real_obj, type):
            return real_obj
        impl = getattr(self, f"_{name}", None)
        sig = inspect.signature(real_obj)
        rt = self._real

        def call(*args: Any, **kwargs: Any) -> Any:
            bound = sig.bind(*args, **kwargs)  # TypeError on a wrong arity or keyword, as the real one
            for pname, value in bound.arguments.items():
                ann = sig.parameters[pname].annotation
                if isinstance(ann, str) and isinstance(getattr(rt, ann, None), type) and not isinstance(
                        value, getattr(rt, ann)):
                    raise TypeError(f"{name}(): argument '{pname}' must be {ann}, not {type(value).__name__}")
            self.calls.append((name, dict(bound.arguments)))
            if impl is None:
                raise NotImplementedError(f"the CUDA double does not model {name}")
            return impl(**bound.arguments)

        call.__name__ = name
        call.__signature__ = sig  # type: ignore[attr-defined]
        return call

    # -- helpers ---------------------------------------------------------------------------------
    @property
    def ok(self) -> Any:
        return self._real.cudaError_t.cudaSuccess

    def _err(self, name: str) -> Any:
        return getattr(self._real.cudaError_t, name)

    def _present(self) -> Any | None:
        return None if self._device.present else self._err("cudaErrorNoDevice")

    @staticmethod
    def _int(handle: Any) -> int:
        return int(handle)

    def names(self, prefix: str = "") -> list[str]:
        return [c[0] for c in self.calls if c[0].startswith(prefix)]

    # -- device --------------------------------------------------------------------------------------
    def _cudaGetDeviceCount(self) -> tuple:
        return (self._present() or self.ok, 1 if self._device.present else 0)

    def _cudaGetDeviceProperties(self, device: int) -> tuple:
        if err := self._present():
            return (err, None)
        props = self._real.cudaDeviceProp()
        name = self._device.name.encode()
        props.name = name + b"\x00" * (256 - len(name))
        props.major, props.minor = self._device.compute_capability
        props.totalGlobalMem = self._device.total_memory
        return (self.ok, props)

    def _cudaMemGetInfo(self) -> tuple:
        if err := self._present():
            return (err, 0, 0)
        return (self.ok, self._device.free_memory, self._device.total_memory)

    def _cudaDriverGetVersion(self) -> tuple:
        return (self.ok, self._device.driver)

    def _cudaGetErrorString(self, error: Any) -> tuple:
        return self._real.cudaGetErrorString(error)  # pure lookup in the real module

    # -- memory --------------------------------------------------------------------------------------
    def _cudaMalloc(self, size: int) -> tuple:
        if err := self._present():
            return (err, 0)
        return (self.ok, self._device.malloc(int(size)))

    def _finish_all(self) -> None:
        """cudaFree and cudaFreeHost synchronize the device before freeing (CUDA runtime API,
        "API synchronization behavior"): pending work still runs on the memory it was given."""
        for stream in list(self._device.queues):
            self._device.complete(stream)

    def _cudaFree(self, devPtr: int) -> tuple:
        self._finish_all()
        return (self.ok if self._device.free(int(devPtr)) else self._err("cudaErrorInvalidValue"),)

    def _cudaMallocHost(self, size: int) -> tuple:
        if err := self._present():
            return (err, 0)
        return (self.ok, self._device.malloc_host(int(size)))

    def _cudaFreeHost(self, ptr: int) -> tuple:
        self._finish_all()
        return (self.ok if self._device.free_host(int(ptr)) else self._err("cudaErrorInvalidValue"),)

    def _cudaMemcpyAsync(self, dst: int, src: int, count: int, kind: Any, stream: Any) -> tuple:
        """Checked now, done when the stream gets to it (see fake_device): the source is read
        and the destination written at completion, not at the call."""
        kinds = self._real.cudaMemcpyKind
        dst, src, count, stream = int(dst), int(src), int(count), self._int(stream)
        dev = self._device
        if stream not in dev.streams:
            return (self._err("cudaErrorInvalidResourceHandle"),)
        if kind == kinds.cudaMemcpyHostToDevice:
            if dev.device_span(dst, count) is None:
                return (self._err("cudaErrorInvalidValue"),)
            pinned = dev.is_pinned(src, count)

            def run() -> None:
                dev.write(dst, ctypes.string_at(src, count))
        elif kind == kinds.cudaMemcpyDeviceToHost:
            if dev.device_span(src, count) is None:
                return (self._err("cudaErrorInvalidValue"),)
            pinned = dev.is_pinned(dst, count)

            def run() -> None:
                ctypes.memmove(dst, dev.read(src, count), count)
        else:
            return (self._err("cudaErrorInvalidMemcpyDirection"),)
        if stream in dev.captures:
            dev.captures[stream].launches.append({"copy": kind.name, "count": count})
        else:
            dev.copies.append({"kind": kind.name, "count": count, "pinned": pinned, "stream": stream, "bytes": count})
        dev.submit(stream, kind.name, run)
        return (self.ok,)

    # -- streams ---------------------------------------------------------------------------------------
    def _cudaStreamCreateWithFlags(self, flags: int) -> tuple:
        if err := self._present():
            return (err, None)
        h = self._device.new_handle()
        self._device.streams.add(h)
        return (self.ok, self._real.cudaStream_t(init_value=h))

    def _cudaStreamSynchronize(self, stream: Any) -> tuple:
        h = self._int(stream)
        if h not in self._device.streams:
            return (self._err("cudaErrorInvalidResourceHandle"),)
        if h in self._device.captures:  # synchronizing a capturing stream breaks the capture
            self._device.captures[h].invalidated = True
            return (self._err("cudaErrorStreamCaptureUnsupported"),)
        self._device.complete(h)
        return (self.ok,)

    def _cudaStreamDestroy(self, stream: Any) -> tuple:
        h = self._int(stream)
        if h not in self._device.streams:
            return (self._err("cudaErrorInvalidResourceHandle"),)
        self._device.drop(h)
        self._device.streams.discard(h)
        return (self.ok,)

    # -- graphs ------------------------------------------------------------------------------------------
    def _cudaStreamBeginCapture(self, stream: Any, mode: Any) -> tuple:
        from .fake_device import Capture

        h = self._int(stream)
        if h not in self._device.streams or h in self._device.captures:
            return (self._err("cudaErrorIllegalState"),)
        self._device.captures[h] = Capture(h)
        return (self.ok,)

    def _cudaStreamEndCapture(self, stream: Any) -> tuple:
        cap = self._device.captures.pop(self._int(stream), None)
        if cap is None:
            return (self._err("cudaErrorIllegalState"), None)
        if cap.invalidated:
            return (self._err("cudaErrorStreamCaptureInvalidated"), None)
        h = self._device.new_handle()
        self._device.graphs[h] = cap
        return (self.ok, self._real.cudaGraph_t(init_value=h))

    def _cudaGraphInstantiate(self, graph: Any, flags: int) -> tuple:
        cap = self._device.graphs.get(self._int(graph))
        if cap is None:
            return (self._err("cudaErrorInvalidValue"), None)
        h = self._device.new_handle()
        self._device.execs[h] = cap
        return (self.ok, self._real.cudaGraphExec_t(init_value=h))

    def _cudaGraphLaunch(self, graphExec: Any, stream: Any) -> tuple:
        """Replay: the captured work is enqueued again on ``stream``, with the addresses and
        shapes it was captured with."""
        cap = self._device.execs.get(self._int(graphExec))
        h = self._int(stream)
        if cap is None or h not in self._device.streams:
            return (self._err("cudaErrorInvalidValue"),)
        for rec in cap.launches:
            if "addresses" in rec:
                for name, (addr, nbytes) in rec["addresses"].items():
                    if self._device.device_span(addr, nbytes) is None:
                        return (self._err("cudaErrorIllegalAddress"),)  # replay onto freed memory
        self._device.launches.append({"graph": self._int(graphExec), "replayed": len(cap.launches)})
        for what, run in cap.ops:
            self._device.submit(h, f"graph:{what}", run)
        return (self.ok,)

    def _cudaGraphExecDestroy(self, graphExec: Any) -> tuple:
        return (self.ok if self._device.execs.pop(self._int(graphExec), None) else self._err("cudaErrorInvalidValue"),)

    def _cudaGraphDestroy(self, graph: Any) -> tuple:
        return (self.ok if self._device.graphs.pop(self._int(graph), None) else self._err("cudaErrorInvalidValue"),)


def strict_function(real: Callable[..., Any], impl: Callable[..., Any]) -> Callable[..., Any]:
    """``impl`` behind ``real``'s signature (for cuda.bindings.utils functions)."""
    sig = inspect.signature(real)

    def call(*args: Any, **kwargs: Any) -> Any:
        bound = sig.bind(*args, **kwargs)
        return impl(*bound.args, **bound.kwargs)

    return call
