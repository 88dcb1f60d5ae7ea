# The sender's reusable payload buffers: a buffer is handed out again only once ZeroMQ is done
# with it, over real sockets.
from __future__ import annotations

import platform
import sys
import time

import zmq

from zwalk.net.buffers import BufferPool, keep_freed_frames


def test_a_buffer_comes_back_only_once_zeromq_has_sent_it() -> None:
    ctx = zmq.Context()
    try:
        a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
        a.bind("inproc://buffers")
        b.connect("inproc://buffers")
        pool = BufferPool(keep=2)
        first = pool.take(3 << 20)
        first[:5] = b"hello"
        tracker = a.send(first, copy=False, track=True)
        pool.give_back(first, tracker)
        second = pool.take(1 << 20)  # the first is still out: a different buffer
        assert second.obj is not first.obj
        assert b.recv()[:5] == b"hello"
        deadline = time.monotonic() + 5
        while not tracker.done and time.monotonic() < deadline:
            time.sleep(0.01)
        assert tracker.done
        again = pool.take(2 << 20)  # now it is free, and large enough
        assert again.obj is first.obj and len(again) == 2 << 20
        pool.give_back(second, None)  # never sent: free at once
        assert pool.take(1 << 20).obj is second.obj
        extra = pool.take(1 << 20)  # the pool keeps 2; a third is made and let go
        assert extra.obj is not first.obj and extra.obj is not second.obj
    finally:
        ctx.destroy(linger=0)


def test_the_allocator_keeps_freed_frames_where_it_can() -> None:
    # 32-bit glibc caps the mmap threshold below two frames, and refuses
    glibc64 = sys.platform == "linux" and platform.libc_ver()[0] == "glibc" and sys.maxsize > 2**32
    assert keep_freed_frames() is glibc64
