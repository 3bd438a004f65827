"""The few torch.cuda pieces the TensorRT runner and the benchmark touch, over the fake GPU.

``CudaTensor`` is a torch CUDA tensor as far as ``TrtRunner.infer_torch`` can tell
(``is_cuda``, ``device``, ``dtype``, ``shape``, ``data_ptr``, ``to``, ``contiguous``); its
memory is registered with the fake device, so TensorRT's double accepts its address.
Streams get handles the TensorRT double knows and share the fake device's queues: a
stream's ``synchronize`` completes its work, ``wait_stream`` orders one stream after the
work another has enqueued so far, an event completes what was enqueued before it was
recorded. Events measure nothing: ``elapsed_time`` is NaN once both events completed (and
raises, as torch does, before), so no number from a run under the doubles can pass for a
timing.
"""
from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from .fake_device import FakeDevice


class CudaTensor:
    def __init__(self, device: FakeDevice, shape: tuple[int, ...], dtype: torch.dtype = torch.float32,
                 index: int = 0) -> None:
        self._dev, self.shape, self.dtype = device, torch.Size(shape), dtype
        self.is_cuda, self.device = True, torch.device("cuda", index)
        nbytes = max(math.prod(shape), 1) * torch.empty((), dtype=dtype).element_size()
        self._ptr = device.malloc(nbytes)  # aligned, distinct from every other allocation
        device.external[self._ptr] = nbytes

    def to(self, dtype: torch.dtype) -> CudaTensor:
        return self if dtype == self.dtype else CudaTensor(self._dev, tuple(self.shape), dtype, self.device.index)

    def contiguous(self) -> CudaTensor:
        return self

    def data_ptr(self) -> int:
        return self._ptr


# what the streams did, in order: ("wait", stream, on) and ("sync", stream, None), so a test
# can prove the ordering a real GPU needs (the doubles run everything at once)
ORDER: list[tuple[str, int, int | None]] = []


class Stream:
    def __init__(self, fake: FakeDevice, *args: Any, **kwargs: Any) -> None:
        device = self._dev = fake
        self.cuda_stream = device.new_handle()
        device.torch_streams.add(self.cuda_stream)
        self.waited_on: list[int] = []

    def wait_stream(self, other: Stream) -> None:
        self.waited_on.append(other.cuda_stream)
        ORDER.append(("wait", self.cuda_stream, other.cuda_stream))
        dev, theirs, upto = self._dev, other.cuda_stream, self._dev.mark(other.cuda_stream)
        dev.submit(self.cuda_stream, "wait", lambda: dev.complete(theirs, upto))

    def synchronize(self) -> None:
        ORDER.append(("sync", self.cuda_stream, None))
        self._dev.complete(self.cuda_stream)


class Event:
    def __init__(self, enable_timing: bool = False) -> None:
        self.recorded_on: int | None = None
        self._dev: FakeDevice | None = None
        self._at = 0

    def record(self, stream: Stream | None = None) -> None:
        stream = stream if stream is not None else _CURRENT[0]
        self.recorded_on, self._dev = stream.cuda_stream, stream._dev
        self._at = self._dev.mark(stream.cuda_stream)

    def query(self) -> bool:
        return self._dev is None or not self._dev.pending(self.recorded_on, self._at)

    def synchronize(self) -> None:
        if self._dev is not None:
            self._dev.complete(self.recorded_on, self._at)

    def elapsed_time(self, end: Event) -> float:
        if self._dev is None or end._dev is None:
            raise RuntimeError("Both events must be recorded before calculating elapsed time.")
        if not (self.query() and end.query()):
            raise RuntimeError("CUDA error: device not ready")  # cudaEventElapsedTime before completion
        return float("nan")  # the doubles time nothing


_CURRENT: list[Stream] = []


def install(monkeypatch: pytest.MonkeyPatch, device: FakeDevice) -> None:
    """torch.cuda as far as the runner and the benchmark use it, on the fake device."""
    real_empty = torch.empty
    ORDER.clear()
    default = Stream(device)
    _CURRENT[:] = [default]

    def empty(*size: Any, dtype: torch.dtype | None = None, device: Any = None, **kw: Any) -> Any:
        if device is not None and torch.device(device).type == "cuda":
            shape = tuple(size[0]) if len(size) == 1 and not isinstance(size[0], int) else tuple(size)
            return CudaTensor(fake, shape, dtype or torch.float32, torch.device(device).index or 0)
        return real_empty(*size, dtype=dtype, device=device, **kw)

    fake = device
    monkeypatch.setattr(torch, "empty", empty)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "Stream", lambda *a, **k: Stream(fake, *a, **k))
    monkeypatch.setattr(torch.cuda, "ExternalStream", lambda handle, *a, **k: _external(fake, handle))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a, **k: default)
    monkeypatch.setattr(torch.cuda, "Event", Event)
    for name in ("reset_peak_memory_stats", "empty_cache"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: [fake.complete(h) for h in list(fake.queues)])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: 0)
    props = type("Props", (), {"name": device.name, "major": device.compute_capability[0],
                               "minor": device.compute_capability[1], "total_memory": 0})
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda *a, **k: props)


def _external(device: FakeDevice, handle: int) -> Stream:
    s = Stream.__new__(Stream)
    s._dev, s.cuda_stream, s.waited_on = device, int(handle), []
    return s
