"""The few torch.cuda pieces the TensorRT runner and the benchmark touch, over the fake GPU.

``CudaTensor`` is a torch CUDA tensor as far as ``TrtRunner.infer_torch`` can tell
(``is_cuda``, ``device``, ``dtype``, ``shape``, ``data_ptr``, ``to``, ``contiguous``); its
memory is registered with the fake device, so TensorRT's double accepts its address.
Streams get handles the TensorRT double knows; events measure nothing: ``elapsed_time``
is NaN, so no number from a run under the doubles can pass for a timing.
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

    def synchronize(self) -> None:
        ORDER.append(("sync", self.cuda_stream, None))


class Event:
    def __init__(self, enable_timing: bool = False) -> None:
        self.recorded_on: int | None = None

    def record(self, stream: Stream | None = None) -> None:
        self.recorded_on = None if stream is None else stream.cuda_stream

    def synchronize(self) -> None:
        return None

    def elapsed_time(self, end: Event) -> float:
        return float("nan")  # the doubles compute nothing, and time nothing


def install(monkeypatch: pytest.MonkeyPatch, device: FakeDevice) -> None:
    """torch.cuda as far as the runner and the benchmark use it, on the fake device."""
    real_empty = torch.empty
    ORDER.clear()
    default = Stream(device)

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
    for name in ("reset_peak_memory_stats", "empty_cache", "synchronize"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: 0)
    props = type("Props", (), {"name": device.name, "major": device.compute_capability[0],
                               "minor": device.compute_capability[1], "total_memory": 0})
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda *a, **k: props)


def _external(device: FakeDevice, handle: int) -> Stream:
    s = Stream.__new__(Stream)
    s._dev, s.cuda_stream, s.waited_on = device, int(handle), []
    return s
