"""The state a TensorRT double and a CUDA double share: a pretend GPU that computes nothing.

Device memory is bookkeeping (address -> size) with 256-byte aligned addresses in a range
no host pointer uses; host copies read and write the real host buffers (so a copy from a
wrong or freed host address fails loudly); streams, graphs and captures are records.
Nothing here produces a number anyone could mistake for a measurement.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import Any

DEVICE_BASE = 0x7F00_0000_0000  # far from host heap addresses
ALIGN = 256
GPU_NAME = "TensorRT test double (no device)"


@dataclass
class Capture:
    stream: int
    launches: list[dict[str, Any]] = field(default_factory=list)
    invalidated: bool = False


@dataclass
class FakeDevice:
    compute_capability: tuple[int, int] = (9, 0)
    name: str = GPU_NAME
    driver: int = 13000  # cudaDriverGetVersion: the CUDA a driver runs (cuda-bindings 13 needs a 13.x one)
    present: bool = True
    total_memory: int = 80 * 2**30
    free_memory: int = 79 * 2**30  # cudaMemGetInfo's answer
    next_addr: int = DEVICE_BASE
    memory: dict[int, bytearray] = field(default_factory=dict)
    freed: set[int] = field(default_factory=set)
    pinned: dict[int, Any] = field(default_factory=dict)  # address -> ctypes buffer (kept alive)
    external: dict[int, int] = field(default_factory=dict)  # torch double tensors: address -> nbytes
    streams: set[int] = field(default_factory=set)
    torch_streams: set[int] = field(default_factory=set)  # handles of the torch.cuda double's streams
    next_handle: int = 0x1000
    captures: dict[int, Capture] = field(default_factory=dict)  # stream -> active capture
    graphs: dict[int, Capture] = field(default_factory=dict)
    execs: dict[int, Capture] = field(default_factory=dict)
    launches: list[dict[str, Any]] = field(default_factory=list)  # executed (not captured) enqueues
    copies: list[dict[str, Any]] = field(default_factory=list)
    capturable: bool = True  # False: the engine's enqueue cannot be captured (trtexec falls back)

    # -- memory ------------------------------------------------------------------------------
    def malloc(self, size: int) -> int:
        addr = self.next_addr
        self.next_addr += (max(size, 1) + ALIGN - 1) // ALIGN * ALIGN + ALIGN
        self.memory[addr] = bytearray(size)
        return addr

    def free(self, addr: int) -> bool:
        if addr not in self.memory:
            return False
        del self.memory[addr]
        self.freed.add(addr)
        return True

    def malloc_host(self, size: int) -> int:
        buf = ctypes.create_string_buffer(max(size, 1))
        addr = ctypes.addressof(buf)
        self.pinned[addr] = buf
        return addr

    def free_host(self, addr: int) -> bool:
        return self.pinned.pop(addr, None) is not None

    def device_span(self, addr: int, nbytes: int) -> bytearray | None:
        """The allocation holding [addr, addr + nbytes), or None (unknown, freed, too small)."""
        for base, buf in self.memory.items():
            if base <= addr and addr + nbytes <= base + len(buf):
                return buf
        for base, size in self.external.items():
            if base <= addr and addr + nbytes <= base + size:
                return bytearray(0)
        return None

    def is_pinned(self, addr: int, nbytes: int) -> bool:
        return any(base <= addr and addr + nbytes <= base + len(buf) for base, buf in self.pinned.items())

    # -- streams and graphs ----------------------------------------------------------------------
    def new_handle(self) -> int:
        self.next_handle += 0x10
        return self.next_handle

    def enqueue(self, stream: int, record: dict[str, Any]) -> bool:
        """An enqueue on ``stream``: captured into its graph or recorded as executed.
        Returns False when the stream is capturing and the engine cannot be captured."""
        cap = self.captures.get(stream)
        if cap is not None:
            if not self.capturable:
                cap.invalidated = True
                return False
            cap.launches.append(record)
            return True
        self.launches.append(record)
        return True
