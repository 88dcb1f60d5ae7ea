"""A live node's ROUTER under 100,000 generated messages: random frames, malformed CBOR, valid
CBOR with wrong types and extreme values, oversized frames, and floods of walks and chunk
requests. The node must stay up, within a memory bound, log no traceback, and then serve a
normal find and download correctly. The seed is printed (set ZWALK_FUZZ_SEED to replay)."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from pathlib import Path

import blake3
import cbor2
import pytest
import zmq
import zmq.asyncio
from procs import LOOPBACK, curve_dealer, public_key, rss_mib, run_zwalk, start_serve

from zwalk.core import protocol as p
from zwalk.core.keys import node_id_for

MESSAGES = 100_000
STALL = 30.0  # s one send may wait: the node reads thousands a second
CS = p.MIN_CHUNK_SIZE


def _wild(rng: random.Random, depth: int = 0) -> object:
    """A CBOR value of any shape this protocol uses, at its extremes."""
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return rng.choice([0, -1, 1, 2**63 - 1, 2**64 - 1, -(2**64), rng.getrandbits(70)])
    if kind == 1:
        return rng.choice([True, False, None])
    if kind == 2:
        return "".join(
            chr(rng.choice([0x41, 0x2F, 0x2E, 0xE9, 0x0, 0x7F, 0x1F600]))
            for _ in range(rng.randrange(40))
        )  # noqa: E501
    if kind == 3:
        return rng.randbytes(rng.choice([0, 1, 15, 16, 17, 31, 32, 33, 200]))
    if kind == 4:
        return "x" * rng.choice([1, 255, 256, 1024, 1025, 5000])
    if kind == 5:
        return rng.choice(["kwalk", "flood", "probe", "name", "glob", "cid", "hello", ""])
    if kind == 6:
        return [_wild(rng, depth + 1) for _ in range(rng.randrange(5))]
    if kind == 7:
        return {str(_wild(rng, 3))[:8]: _wild(rng, depth + 1) for _ in range(rng.randrange(4))}
    return {k: _wild(rng, depth + 1) for k in ("node", "name", "host", "port", "key")}


class Fuzzer:
    def __init__(self, rng: random.Random, cid: bytes, target: bytes) -> None:
        self.rng = rng
        self.cid = cid
        self.target = target
        key = rng.randbytes(32)
        me = node_id_for(key)
        origin = p.PeerRef(  # nothing listens there
            node=me, name="fuzz", host=LOOPBACK, port=1, key=key
        )
        self.valid: list[p.Message] = [
            p.Ping(req=1),
            p.Hello(req=2, node=me, name="fuzz", port=0, inc=b"i" * 8),
            p.Search(req=3, qid=me, kind=p.QueryKind.GLOB, pattern="*", icase=True, limit=1000),
            p.GetInfo(req=4, cid=cid),
            p.GetChunks(req=5, cid=cid, index=0, count=4),
            p.Walk(
                req=6,
                qid=me,
                walker=0,
                hops=1,
                path=(me, target),
                strategy=p.Strategy.KWALK,
                ttl=10,
                check_every=2,
                origin=origin,
                kind=p.QueryKind.NAME,
                pattern="f.bin",
                icase=False,
                stop_on_hit=True,
                backtrack=False,
            ),  # fmt: skip
            p.WalkHits(req=0, qid=me, walker=0, hops=1, path=(me,), hits=()),
            p.Bye(req=0),
        ]
        self.bodies = [cbor2.loads(p.encode(m)[0]) for m in self.valid]
        self.kinds: dict[str, int] = {}

    def next(self) -> list[bytes]:
        rng = self.rng
        roll = rng.random()
        if roll < 0.25:
            kind, frames = (
                "random",
                [rng.randbytes(rng.randrange(300)) for _ in range(rng.randrange(1, 4))],
            )  # noqa: E501
        elif roll < 0.45:
            kind = "malformed"
            data = bytearray(p.encode(rng.choice(self.valid))[0])
            if rng.random() < 0.5:
                data = data[: rng.randrange(len(data))]  # truncated
            else:
                for _ in range(rng.randrange(1, 4)):  # bits flipped
                    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            frames = [bytes(data)]
        elif roll < 0.75:
            kind = "wrong-types"
            body = dict(rng.choice(self.bodies))
            for _ in range(rng.randrange(1, 3)):
                key = rng.choice([*body, "v", "t", "req", "extra"])
                body[key] = _wild(rng)
            frames = [cbor2.dumps(body)] + ([rng.randbytes(16)] if rng.random() < 0.1 else [])
        elif roll < 0.9:
            kind = "walk-flood"
            qid = rng.randbytes(16)
            body = dict(self.bodies[5], qid=qid, req=rng.getrandbits(63))
            body["strategy"] = rng.choice(["kwalk", "flood"])
            body["pattern"] = rng.choice(["f.bin", "*", "nothing-*"])
            body["kind"] = "glob" if "*" in body["pattern"] else "name"
            frames = [cbor2.dumps(body)]
        else:
            kind = "chunk-flood"
            msg = p.GetChunks(
                req=rng.getrandbits(63),
                cid=self.cid if rng.random() < 0.8 else rng.randbytes(32),
                index=rng.choice([0, 1, 63, 64, 1000, p.MAX_CHUNKS - 1]),
                count=rng.choice([1, 2, 64, 1024]),
            )
            frames = p.encode(msg)  # type: ignore[assignment]
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        return [bytes(f) for f in frames]


async def _drain(sock: zmq.asyncio.Socket, stop: asyncio.Event, counts: dict[str, int]) -> None:
    while not stop.is_set():
        if await sock.poll(100):
            await sock.recv_multipart()
            counts["replies"] = counts.get("replies", 0) + 1


@pytest.mark.skipif(sys.platform != "linux", reason="reads the node's RSS from /proc")
@pytest.mark.timeout(600)
async def test_a_node_survives_100k_generated_messages(tmp_path: Path) -> None:
    seed = int(os.environ.get("ZWALK_FUZZ_SEED", random.randrange(2**32)))
    print(f"fuzz seed {seed} (ZWALK_FUZZ_SEED={seed} replays it)")
    rng = random.Random(seed)
    data = os.urandom(64 * CS + 5)
    node = start_serve(
        tmp_path, "a", {"f.bin": data, "g.txt": b"g"}, "--config", str(_ini(tmp_path))
    )
    try:
        target = bytes.fromhex(node.node)
        fuzz = Fuzzer(rng, blake3.blake3(data).digest(), target)
        rss_start = rss_mib(node.proc.pid)
        ctx = zmq.asyncio.Context()
        counts: dict[str, int] = {}
        started = time.monotonic()
        stop = asyncio.Event()
        socks: list[zmq.asyncio.Socket] = []
        drains: list[asyncio.Task[None]] = []
        server = public_key(node.data_dir)
        try:
            for _ in range(4):  # a few connections, as several peers would be, each its own key
                rid = rng.randbytes(rng.choice([5, 16, 20]))
                socks.append(curve_dealer(ctx, node.endpoint, server, IDENTITY=rid, SNDHWM=1000))
            drains += [asyncio.create_task(_drain(s, stop, counts)) for s in socks]
            peak = rss_start
            for i in range(MESSAGES):
                frames = fuzz.next()
                try:  # a node that stops reading fills the queue: say which message did it
                    await asyncio.wait_for(
                        socks[i % len(socks)].send_multipart(frames, copy=False), STALL
                    )
                except TimeoutError:
                    pytest.fail(f"the node stopped reading at message {i + 1}: {frames!r:.300}")
                if i % 5000 == 4999:
                    peak = max(peak, rss_mib(node.proc.pid))
                    assert node.proc.poll() is None, f"the node died after {i + 1} messages"
            for _ in range(3):  # oversized frames: libzmq drops each connection that sends one
                big = curve_dealer(ctx, node.endpoint, server)
                await big.send(bytes(p.MAX_HEADER + 1))
                await asyncio.sleep(0.2)
                big.close(linger=0)
            await asyncio.sleep(2.0)
        finally:  # closed sockets, or the context blocks whoever collects it later
            stop.set()
            await asyncio.gather(*drains, return_exceptions=True)
            for s in socks:
                s.close(linger=0)
            ctx.term()
        spent = time.monotonic() - started
        rss_end = rss_mib(node.proc.pid)
        print(
            f"{MESSAGES} messages in {spent:.1f} s {fuzz.kinds}, {counts.get('replies', 0)} "
            f"replies; node RSS {rss_start:.0f} MiB at start, peak {peak:.0f}, end {rss_end:.0f}"
        )
        assert node.proc.poll() is None
        # The stated bound: what the ROUTER may queue per connection, and the node's own work
        # (64 requests in progress, each at most one 16 KiB-chunk frame here).
        assert peak - rss_start < len(socks) * p.ROUTER_QUEUE * p.MAX_HEADER / 2**20
        # And it still does its job.
        r = run_zwalk("--interface", LOOPBACK, "find", "f.bin", "--peer", node.endpoint,
                      "--out", "dl", cwd=tmp_path)  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "dl" / "f.bin").read_bytes() == data
    finally:
        node.stop()
    log = node.log.read_text()
    assert "Traceback" not in log, log[-3000:]


def _ini(tmp: Path) -> Path:
    ini = tmp / "fuzz.ini"
    ini.write_text("[share]\nchunk_size = 16384\n")
    return ini
