"""Device memory, streams, events and graphs through cuda-python's runtime bindings.

NVIDIA's TensorRT samples use ``cuda.bindings.runtime`` in place of pycuda since
TensorRT 10.14; it installs as a wheel with no CUDA toolchain. Every call returns
``(err, *results)``; :func:`cuda_check` raises on an error and unwraps the results.
Names used here are checked against the installed cuda-bindings by the test suite.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from twins_deploy.errors import BackendUnavailableError, TwinsDeployError


class CudaError(TwinsDeployError):
    """A CUDA runtime call failed."""

    exit_code = 3


def cudart() -> ModuleType:
    try:
        from cuda.bindings import runtime
    except ImportError:
        raise BackendUnavailableError(
            "cuda-python is not installed (needed for TensorRT device memory and streams); "
            "install it with: pip install 'twins-deploy[trt]' or pip install cuda-python"
        ) from None
    return runtime


def cuda_check(result: Any, what: str, missing_gpu: bool = False) -> Any:
    """Raise on a non-success error code; return the single result, a tuple, or None."""
    rt = cudart()
    err, rest = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
    if err != rt.cudaError_t.cudaSuccess:
        _, text = rt.cudaGetErrorString(err)
        text = text.decode() if isinstance(text, bytes) else str(text)
        name = getattr(err, "name", str(err))
        if missing_gpu:
            raise BackendUnavailableError(f"no usable CUDA GPU: {what} failed with {name} ({text})")
        raise CudaError(f"{what} failed with {name} ({text})")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


def native_handle(obj: Any) -> int:
    """The raw pointer of a cuda-python handle (stream, event), as TensorRT wants it."""
    try:
        from cuda.bindings.utils import get_cuda_native_handle

        return int(get_cuda_native_handle(obj))
    except (ImportError, TypeError):
        return int(obj)


class _FreedWhenCollected:
    """Memory that is freed when its owner forgets it (``free`` may also be called early)."""

    def free(self) -> None:
        raise NotImplementedError

    def __del__(self) -> None:
        try:
            self.free()
        except Exception:  # interpreter shutdown: nothing sensible left to do
            pass


class DeviceBuffer(_FreedWhenCollected):
    """``nbytes`` of device memory from cudaMalloc (256-byte aligned, as TensorRT needs)."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = max(int(nbytes), 1)
        self.ptr: int = int(cuda_check(cudart().cudaMalloc(self.nbytes), f"cudaMalloc({self.nbytes})"))

    def free(self) -> None:
        if self.ptr:
            cuda_check(cudart().cudaFree(self.ptr), "cudaFree")
            self.ptr = 0



class Stream:
    """A non-blocking CUDA stream (TensorRT warns that the default stream adds syncs)."""

    def __init__(self) -> None:
        rt = cudart()
        self.obj = cuda_check(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreateWithFlags")
        self.handle = native_handle(self.obj)

    def synchronize(self) -> None:
        cuda_check(cudart().cudaStreamSynchronize(self.obj), "cudaStreamSynchronize")

    def destroy(self) -> None:
        if self.obj is not None:
            cuda_check(cudart().cudaStreamDestroy(self.obj), "cudaStreamDestroy")
            self.obj = None


class PinnedHostArray(_FreedWhenCollected):
    """A numpy array in page-locked host memory (cudaMallocHost), as trtexec stages its
    copies: pageable memory makes cudaMemcpyAsync synchronous and slower, so copy timings
    from it are not comparable with trtexec's."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        import ctypes

        self.dtype = np.dtype(dtype)
        nbytes = max(int(np.prod(shape)) * self.dtype.itemsize, 1)
        self.ptr: int = int(cuda_check(cudart().cudaMallocHost(nbytes), f"cudaMallocHost({nbytes})"))
        buf = (ctypes.c_byte * nbytes).from_address(self.ptr)
        self.array = np.frombuffer(buf, dtype=self.dtype, count=int(np.prod(shape))).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            self.array = np.empty(0, self.dtype)
            cuda_check(cudart().cudaFreeHost(self.ptr), "cudaFreeHost")
            self.ptr = 0



def copy_htod(dst: DeviceBuffer, src: np.ndarray, stream: Stream) -> None:
    rt = cudart()
    src = np.ascontiguousarray(src)
    if src.nbytes > dst.nbytes:
        raise ValueError(f"host array of {src.nbytes} bytes does not fit a {dst.nbytes}-byte buffer")
    cuda_check(rt.cudaMemcpyAsync(dst.ptr, src.ctypes.data, src.nbytes,
                                  rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.obj), "cudaMemcpyAsync H2D")


def copy_dtoh(dst: np.ndarray, src: DeviceBuffer, stream: Stream) -> None:
    rt = cudart()
    if not dst.flags.c_contiguous:
        raise ValueError("destination array must be C-contiguous")
    cuda_check(rt.cudaMemcpyAsync(dst.ctypes.data, src.ptr, dst.nbytes,
                                  rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream.obj), "cudaMemcpyAsync D2H")


class CudaGraph:
    """Capture of one stream's work, replayed with cudaGraphLaunch (trtexec's --useCudaGraph)."""

    def __init__(self, stream: Stream) -> None:
        self.stream, self.graph, self.exec = stream, None, None

    @classmethod
    def capture(cls, stream: Stream, work: Any) -> tuple[CudaGraph | None, str | None]:
        """Capture ``work()`` (which returns False when it could not be enqueued) into an
        instantiated graph; on any failure return (None, why), leaving the stream usable
        for plain launches, as trtexec does when an engine cannot be captured."""
        graph = cls(stream)
        try:
            graph.begin()
        except CudaError as e:
            return None, str(e)
        try:
            ok = work()
        except Exception as e:  # noqa: BLE001 - the capture must be ended whatever happened
            ok, why = False, f"enqueue raised {type(e).__name__}: {e}"
        else:
            why = None if ok else "execute_async_v3 returned False during capture"
        try:
            graph.end()
        except CudaError as e:
            why = why or str(e)
        if why is not None or not ok:
            graph.destroy()
            return None, why or "capture failed"
        return graph, None

    def begin(self) -> None:
        rt = cudart()
        cuda_check(rt.cudaStreamBeginCapture(self.stream.obj, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
                   "cudaStreamBeginCapture")

    def end(self) -> None:
        """End the capture (always, so the stream leaves capture mode) and instantiate it."""
        rt = cudart()
        self.graph = cuda_check(rt.cudaStreamEndCapture(self.stream.obj), "cudaStreamEndCapture")
        self.exec = cuda_check(rt.cudaGraphInstantiate(self.graph, 0), "cudaGraphInstantiate")

    def launch(self) -> None:
        cuda_check(cudart().cudaGraphLaunch(self.exec, self.stream.obj), "cudaGraphLaunch")

    def destroy(self) -> None:
        rt = cudart()
        if self.exec is not None:
            cuda_check(rt.cudaGraphExecDestroy(self.exec), "cudaGraphExecDestroy")
            self.exec = None
        if self.graph is not None:
            cuda_check(rt.cudaGraphDestroy(self.graph), "cudaGraphDestroy")
            self.graph = None
