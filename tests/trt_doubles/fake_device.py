"""The state a TensorRT double and a CUDA double share: a pretend GPU, asynchronous as CUDA is.

Device memory is real bytes at 256-byte aligned addresses in a range no host pointer uses.
Work is *ordered, not done*, when it is enqueued: a copy or an engine execution goes into
its stream's queue and runs only when that stream is synchronized, an event recorded after
it is synchronized, or another stream waiting on it completes. A copy reads its source and
writes its destination when it runs, so a result read before the synchronize is whatever
the host buffer held, and an output copy enqueued before the execution copies the old
device bytes. Graph capture records the work; each replay enqueues it again.

The double is stricter than CUDA in one place: CUDA completes a device-to-host copy into
pageable memory before cudaMemcpyAsync returns; here every copy waits for its stream, so
code that forgets to synchronize fails whether its host buffers are pinned or not.

Nothing here times anything: engine outputs are computed (by the TensorRT double, with
ONNX Runtime on the engine's ONNX file) so that ordering mistakes show in the numbers,
and no duration is ever produced.
"""
from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DEVICE_BASE = 0x7F00_0000_0000  # far from host heap addresses
ALIGN = 256
GPU_NAME = "TensorRT test double (no device)"


@dataclass
class Op:
    """One piece of enqueued work: ``run`` does it (reads and writes memory) when it completes."""

    seq: int
    what: str
    run: Callable[[], None]


@dataclass
class Capture:
    stream: int
    launches: list[dict[str, Any]] = field(default_factory=list)
    ops: list[tuple[str, Callable[[], None]]] = field(default_factory=list)  # replayed by each launch
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
    queues: dict[int, list[Op]] = field(default_factory=dict)  # stream handle -> work not yet done
    completed: list[str] = field(default_factory=list)  # what ran, in the order it ran
    dropped: list[str] = field(default_factory=list)  # work of streams destroyed before it completed
    seq: int = 0

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
        found = self.locate(addr, nbytes)
        return None if found is None else found[0]

    def locate(self, addr: int, nbytes: int) -> tuple[bytearray, int] | None:
        """(allocation, offset of ``addr`` in it) for [addr, addr + nbytes), or None."""
        for base, buf in self.memory.items():
            if base <= addr and addr + nbytes <= base + len(buf):
                return buf, addr - base
        return None

    def read(self, addr: int, nbytes: int) -> bytes:
        found = self.locate(addr, nbytes)
        if found is None:
            raise RuntimeError(f"illegal address: device read of {nbytes} bytes at {addr:#x}")
        buf, off = found
        return bytes(buf[off:off + nbytes])

    def write(self, addr: int, data: bytes) -> None:
        found = self.locate(addr, len(data))
        if found is None:
            raise RuntimeError(f"illegal address: device write of {len(data)} bytes at {addr:#x}")
        buf, off = found
        buf[off:off + len(data)] = data

    def is_pinned(self, addr: int, nbytes: int) -> bool:
        return any(base <= addr and addr + nbytes <= base + len(buf) for base, buf in self.pinned.items())

    # -- streams and graphs ----------------------------------------------------------------------
    def new_handle(self) -> int:
        self.next_handle += 0x10
        return self.next_handle

    def enqueue(self, stream: int, record: dict[str, Any], run: Callable[[], None] | None = None) -> bool:
        """An engine enqueue on ``stream``: captured into its graph, or recorded and queued.
        Returns False when the stream is capturing and the engine cannot be captured."""
        cap = self.captures.get(stream)
        if cap is not None:
            if not self.capturable:
                cap.invalidated = True
                return False
            cap.launches.append(record)
            if run is not None:
                cap.ops.append(("execute", run))
            return True
        self.launches.append(record)
        if run is not None:
            self.submit(stream, "execute", run)
        return True

    # -- asynchronous work -------------------------------------------------------------------------
    def submit(self, stream: int, what: str, run: Callable[[], None]) -> int:
        """Queue ``run`` on ``stream`` (or into its capture); returns its sequence number."""
        cap = self.captures.get(stream)
        if cap is not None:
            cap.ops.append((what, run))
            return self.seq
        self.seq += 1
        self.queues.setdefault(stream, []).append(Op(self.seq, what, run))
        return self.seq

    def mark(self, stream: int) -> int:
        """An event recorded on ``stream`` now: the sequence number it completes at."""
        return self.seq

    def complete(self, stream: int, upto: int | None = None) -> None:
        """Run ``stream``'s queued work in order (up to sequence ``upto``)."""
        queue = self.queues.get(stream, [])
        while queue and (upto is None or queue[0].seq <= upto):
            op = queue.pop(0)
            self.completed.append(op.what)
            op.run()

    def pending(self, stream: int, upto: int | None = None) -> bool:
        return any(upto is None or op.seq <= upto for op in self.queues.get(stream, []))

    def drop(self, stream: int) -> None:
        """A destroyed stream's unfinished work: never run (its host buffers may be gone)."""
        self.dropped += [op.what for op in self.queues.pop(stream, [])]
