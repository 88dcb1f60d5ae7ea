"""Valid-looking but heavy headers (issue 13's first hole): a `ping` whose ignored extension key
holds millions of CBOR zeros is within the frame limit, and each cost a node 1.5-2 s of CPU on
its event loop and 8 MiB of memory. Now a header may declare at most MAX_ITEMS items (refused at
the first container that declares more, before reading them), a node's ROUTER takes frames of at
most MAX_HEADER and queues ROUTER_QUEUE per connection."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import cbor2
import pytest
import zmq
import zmq.asyncio
from procs import LOOPBACK, ServeProcess, curve_dealer, public_key, rss_mib, run_zwalk, start_serve

from zwalk.core import protocol as p


def heavy_ping(zeros: int, req: int = 1) -> bytes:
    """A valid ping ({"v", "t", "req"}) with an extension key "x": [0, 0, ...], as the decoder sees
    the keys it knows; `x` is an extension key, ignored."""
    head = cbor2.dumps({"v": p.PROTOCOL_VERSION, "t": "ping", "req": req})
    assert head[0] == 0xA3  # a map of 3: make it 4
    return (
        bytes([0xA4])
        + head[1:]
        + cbor2.dumps("x")
        + b"\x9a"
        + zeros.to_bytes(4, "big")
        + bytes(zeros)
    )


def test_a_header_declaring_too_many_items_is_refused_before_it_is_read() -> None:
    # The probe's 8 MiB frame (it fits the control endpoint's frame limit, not a peer's), and a
    # peer's frame just over the item limit.
    for zeros, control in ((p.MAX_CONTROL_HEADER - 64, True), (p.MAX_ITEMS, False)):
        frame = heavy_ping(zeros)
        started = time.process_time()
        with pytest.raises(p.ProtocolError, match="CBOR items") as caught:
            p.decode([frame], control=control)
        # at the array's header: not one of its items walked (that took 1.5 s for 8M)
        assert time.process_time() - started < 0.05
        assert caught.value.code is p.ErrorCode.TOO_LARGE
    # Just within the limit it decodes: the extension key is ignored.
    ok = heavy_ping(p.MAX_ITEMS - 9)
    assert p.decode([ok]) == p.Ping(req=1)


def test_the_largest_valid_messages_fit_the_limits() -> None:
    """The bounds leave room for every valid message at its own limits (figures measured with
    the reference encoder: docs/PROTOCOL.md section 7)."""
    name = "é" * 127
    path = ("d/" * 2047 + "ab")[: p.MAX_PATH_BYTES]
    hit = p.Hit(name=name, path=path, size=p.MAX_FILE_SIZE, cid=b"c" * 32, mtime_ms=p.MAX_TIME_MS)
    ids = (b"o" * 16,) + tuple(bytes([i]) * 16 for i in range(255))
    walk_hits = p.WalkHits(
        req=p.MAX_REQ_ID, qid=b"q" * 16, walker=2047, hops=255, path=ids, hits=(hit,) * 1000
    )
    info = p.FileInfo(
        req=1, cid=b"c" * 32, size=p.MAX_CHUNKS * p.MIN_CHUNK_SIZE, chunk_size=p.MIN_CHUNK_SIZE,
        hashes=b"h" * 32 * p.MAX_CHUNKS,
    )  # fmt: skip
    page = p.ListOk(req=p.MAX_REQ_ID, files=(hit,) * p.MAX_LIST, next=path, total=p.MAX_COUNT)
    for msg in (walk_hits, info, page):
        [frame] = p.encode(msg)
        assert len(frame) <= p.MAX_HEADER
        assert p.decode([frame]) == msg


async def _pinger(node: ServeProcess, stop: asyncio.Event, rtts: list[float]) -> None:
    ctx = zmq.asyncio.Context.instance()
    sock = curve_dealer(ctx, node.endpoint, public_key(node.data_dir))
    try:
        req = 0
        while not stop.is_set():
            req += 1
            started = time.monotonic()
            await sock.send_multipart(p.encode(p.Ping(req=req)))
            async with asyncio.timeout(10):
                reply = p.decode(await sock.recv_multipart())
            assert reply == p.Pong(req=req, files=1)
            rtts.append(time.monotonic() - started)
            await asyncio.sleep(0.02)
    finally:
        sock.close(linger=0)


async def _flood(node: ServeProcess, frame: bytes, count: int) -> None:
    ctx = zmq.asyncio.Context.instance()
    sock = curve_dealer(ctx, node.endpoint, public_key(node.data_dir), SNDHWM=count + 1)
    try:
        for _ in range(count):
            await sock.send(frame, copy=False)
        await asyncio.sleep(0.5)  # let them go out before the socket closes
    finally:
        sock.close(linger=0)


@pytest.mark.skipif(sys.platform != "linux", reason="reads the node's RSS from /proc")
async def test_heavy_headers_neither_stall_a_node_nor_bloat_it(tmp_path: Path) -> None:
    node: ServeProcess = start_serve(tmp_path, "a", {"keep.txt": b"still here"})
    try:
        rss_before = rss_mib(node.proc.pid)
        just_under = heavy_ping(p.MAX_HEADER - 64)  # within the frame limit, far over the items
        over = heavy_ping(8_388_589)  # over the ROUTER's frame limit: libzmq drops the link
        assert len(just_under) <= p.MAX_HEADER < len(over)
        stop, rtts = asyncio.Event(), []
        pinger = asyncio.create_task(_pinger(node, stop, rtts))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        # 3 connections x 40 frames, as the probe that grew RSS from 39 MiB to 1.08 GiB
        await asyncio.gather(*(_flood(node, just_under, 40) for _ in range(3)))
        await _flood(node, over, 2)
        await asyncio.sleep(0.5)
        stop.set()
        await pinger
        spent = time.monotonic() - started
        rss_after = rss_mib(node.proc.pid)
        worst = max(rtts)
        print(f"heavy headers: {spent:.1f} s, worst ping {worst * 1000:.1f} ms over {len(rtts)}, "
              f"RSS {rss_before:.0f} -> {rss_after:.0f} MiB")  # fmt: skip
        # Before: a clean ping waited 3.2 s. The bound here leaves room for a loaded machine.
        assert worst < 0.5, f"a ping waited {worst:.3f} s behind heavy headers"
        # At most ROUTER_QUEUE frames of MAX_HEADER per connection can be queued at once.
        assert rss_after - rss_before < 3 * p.ROUTER_QUEUE * p.MAX_HEADER / 2**20
        assert node.proc.poll() is None
        # It still serves: a search through the command finds its file.
        r = run_zwalk("--interface", LOOPBACK, "find", "keep.txt", "--peer", node.endpoint,
                      "--no-download", cwd=tmp_path)  # fmt: skip
        assert r.returncode == 0, r.stderr
    finally:
        node.stop()
    log = node.log.read_text()
    assert "Traceback" not in log
    assert len(log) < 1 << 20  # rejections are logged, and not at length
