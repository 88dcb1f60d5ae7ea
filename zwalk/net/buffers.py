# Reusable buffers for chunk payloads on the sending side, and the allocator setting that lets
# the receiving side reuse its own.
#
# A reply's payload is read into one of these and handed to ZeroMQ without a copy; ZeroMQ holds
# it until the bytes are on the wire, and its MessageTracker says when the buffer is free again.
# Reusing warm buffers instead of allocating several MiB per reply saves the page faults (and,
# in a VM, the host's work) of touching fresh memory for every frame.
from __future__ import annotations

import ctypes
import platform
import sys
from dataclasses import dataclass

import zmq

from zwalk.core.protocol import MAX_PAYLOAD

MIB = 1 << 20
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h


@dataclass(slots=True)
class _Slot:
    buf: bytearray
    busy: bool = False
    tracker: zmq.MessageTracker | None = None

    def free(self) -> bool:
        if not self.busy:
            return True
        if self.tracker is not None and self.tracker.done:
            self.busy, self.tracker = False, None
            return True
        return False


class BufferPool:
    def __init__(self, keep: int = 16) -> None:
        self.keep = keep
        self._slots: list[_Slot] = []
        self._by_id: dict[int, _Slot] = {}

    def take(self, length: int) -> memoryview:
        """A writable view of `length` bytes, from a free pooled buffer if there is one."""
        for slot in self._slots:
            if len(slot.buf) >= length and slot.free():
                slot.busy = True
                return memoryview(slot.buf)[:length]
        buf = bytearray(max(MIB, -(-length // MIB) * MIB))
        if len(self._slots) < self.keep:
            slot = _Slot(buf, busy=True)
            self._slots.append(slot)
            self._by_id[id(buf)] = slot
        return memoryview(buf)[:length]

    def give_back(self, view: memoryview, tracker: zmq.MessageTracker | None) -> None:
        """The view was sent (tracker: when ZeroMQ is done with it) or not sent at all (None)."""
        slot = self._by_id.get(id(view.obj))
        if slot is None or slot.buf is not view.obj:
            return  # not pooled: it is freed once nothing refers to it
        if tracker is None:
            slot.busy = False
        else:
            slot.tracker = tracker


def keep_freed_frames() -> bool:
    """On the receiving side ZeroMQ allocates each multi-MiB frame with malloc. glibc serves
    such sizes with fresh mmaps, or trims them back to the system once freed, so every frame
    costs page faults and zeroing of new memory. Raise both thresholds above the largest frame
    so freed frames are reused. Returns whether the allocator took it (glibc only)."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(
            libc.mallopt(M_MMAP_THRESHOLD, 2 * MAX_PAYLOAD)
            and libc.mallopt(M_TRIM_THRESHOLD, 8 * MAX_PAYLOAD)
        )
    except (OSError, AttributeError):
        return False
