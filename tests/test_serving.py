"""The serving side over real sockets: the busy limit, bad chunk requests, a failed read and
the rescan it triggers, our own bugs answered as internal errors, a source that sends a frame
of the wrong length. Nodes run in this process on 127.0.0.1 so a test can give one a router
that misbehaves on purpose; clients are plain ZeroMQ DEALERs or the `zwalk find` command."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import blake3
import cbor2
import pytest
import zmq
import zmq.asyncio
from procs import LOOPBACK, curve_dealer, find_async

from zwalk.cli.app import running
from zwalk.core import protocol as p
from zwalk.core.keys import node_id_for
from zwalk.net import router as router_mod
from zwalk.net.node import Node
from zwalk.net.router import Router
from zwalk.net.walks import MAX_RELAYS
from zwalk.store import identity
from zwalk.store.config import Config

CS = p.MIN_CHUNK_SIZE


def _node(
    tmp: Path, name: str, files: dict[str, bytes], cls: type[Node] = Node, chunk_size: int = CS
) -> Node:
    share = tmp / f"{name}-share"
    share.mkdir()
    for rel, data in files.items():
        (share / rel).write_bytes(data)
    cfg = Config(
        name=name,
        port=0,
        interfaces=(LOOPBACK,),
        data_dir=tmp / name / "data",
        downloads=tmp / name / "downloaded",
        chunk_size=chunk_size,
        rescan_interval=3600.0,  # only the rescan a failed read asks for
    )
    return cls(cfg, identity.ephemeral(), shares=[share])


class Client:
    """A bare DEALER: requests out, replies in, matched by request id."""

    def __init__(self, node: Node) -> None:
        self.ctx = zmq.asyncio.Context()
        self.sock = curve_dealer(self.ctx, node.local.endpoints[0].zmq, node.identity.public)

    async def send(self, msg: p.Message) -> None:
        await self.sock.send_multipart(p.encode(msg), copy=False)

    async def send_raw(self, *frames: bytes) -> None:
        await self.sock.send_multipart(list(frames))

    async def recv(self, timeout: float = 5.0) -> p.Message:
        async with asyncio.timeout(timeout):
            return p.decode(await self.sock.recv_multipart())

    async def ask(self, msg: p.Message) -> p.Message:
        await self.send(msg)
        return await self.recv()

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


@pytest.fixture
async def client_of() -> AsyncIterator[list[Client]]:
    clients: list[Client] = []
    yield clients
    for c in clients:
        c.close()


def _cid(data: bytes) -> bytes:
    return blake3.blake3(data).digest()


# --- the busy limit -------------------------------------------------------------------------


class StuckRouter(Router):
    """Answers get-info only once `release` is set: a disk that hangs."""

    release: asyncio.Event

    async def respond(self, msg: p.Message, sender: bytes) -> p.Message:
        if isinstance(msg, p.GetInfo):
            await type(self).release.wait()
        return await super().respond(msg, sender)


class StuckNode(Node):
    Router = StuckRouter


async def test_beyond_the_request_limit_the_answer_is_busy_and_pings_still_work(
    tmp_path: Path, client_of: list[Client]
) -> None:
    data = b"x" * 1000
    StuckRouter.release = asyncio.Event()
    node = _node(tmp_path, "a", {"f.bin": data}, StuckNode)
    async with running(node):
        c = Client(node)
        client_of.append(c)
        limit = router_mod.MAX_CONCURRENT_REQUESTS
        for req in range(limit):
            await c.send(p.GetInfo(req=req, cid=_cid(data)))
        await asyncio.sleep(0.2)  # every one of them is being answered (and stuck)
        busy = await c.ask(p.GetInfo(req=limit, cid=_cid(data)))
        assert busy == p.Error(req=limit, code=p.ErrorCode.BUSY, reason="too many requests")
        assert await c.ask(p.Ping(req=999)) == p.Pong(req=999, files=1)  # membership goes on
        StuckRouter.release.set()
        answered = {(await c.recv()).req for _ in range(limit)}
        assert answered == set(range(limit))
        # the slots are free again
        assert isinstance(await c.ask(p.GetInfo(req=1000, cid=_cid(data))), p.FileInfo)


async def test_a_burst_of_quick_requests_is_served_not_refused_as_busy(
    tmp_path: Path, client_of: list[Client]
) -> None:
    """The request limit counts requests in progress, not messages read before their handlers
    had a turn: the router used to read its whole queue without yielding, so a burst of 240
    walks (answered at once) found the 64 slots taken by handlers not yet started, and all but
    the first 64 or so were answered busy (the load scenario's first finding)."""
    node = _node(tmp_path, "a", {"f.bin": b"data"})
    key = os.urandom(p.KEY_BYTES)
    origin = p.PeerRef(node=node_id_for(key), name="far", host=LOOPBACK, port=1, key=key)
    async with running(node):
        clients = [Client(node) for _ in range(4)]
        client_of.extend(clients)
        n = 60  # 4 x 60 = 240 walks: below MAX_RELAYS, far beyond MAX_CONCURRENT_REQUESTS
        assert 4 * n > router_mod.MAX_CONCURRENT_REQUESTS and 4 * n < MAX_RELAYS
        for req in range(n):
            for c in clients:
                walk = p.Walk(
                    req=req, qid=os.urandom(16), walker=0, hops=1, path=(origin.node,),
                    strategy=p.Strategy.KWALK, ttl=0, check_every=0, origin=origin,
                    kind=p.QueryKind.NAME, pattern="f.bin", icase=False, stop_on_hit=False,
                    backtrack=False,
                )  # fmt: skip
                await c.send(walk)
        replies = [await c.recv() for c in clients for _ in range(n)]
        refused = [r for r in replies if not isinstance(r, p.WalkOk)]
        assert not refused, f"{len(refused)} of {len(replies)} refused: {refused[0]}"


# --- bad chunk requests, and a file that changed under the index ---------------------------


async def test_chunk_requests_out_of_range_and_too_large_get_their_errors(
    tmp_path: Path, client_of: list[Client]
) -> None:
    data = os.urandom(3 * CS + 7)
    node = _node(tmp_path, "a", {"f.bin": data})
    async with running(node):
        c = Client(node)
        client_of.append(c)
        cid = _cid(data)
        past = await c.ask(p.GetChunks(req=1, cid=cid, index=3, count=2))
        assert past == p.Error(req=1, code=p.ErrorCode.BAD_REQUEST, reason="chunk out of range")
        tail = await c.ask(p.GetChunks(req=2, cid=cid, index=3))
        assert isinstance(tail, p.Chunks) and bytes(tail.payload) == data[3 * CS :]
    mib = 1 << 20
    big = os.urandom(p.MAX_PAYLOAD + mib)
    node = _node(tmp_path, "b", {"big.bin": big}, chunk_size=mib)
    async with running(node):
        c = Client(node)
        client_of.append(c)
        n = p.chunk_count(len(big), mib)  # 17 chunks of 1 MiB: more than one frame may carry
        err = await c.ask(p.GetChunks(req=3, cid=_cid(big), index=0, count=n))
        assert err == p.Error(req=3, code=p.ErrorCode.TOO_LARGE, reason="ask for fewer chunks")


async def test_a_read_of_a_changed_file_is_refused_and_a_rescan_shares_the_new_one(
    tmp_path: Path, client_of: list[Client]
) -> None:
    old, new = os.urandom(2 * CS), os.urandom(2 * CS + 1)
    node = _node(tmp_path, "a", {"f.bin": old})
    async with running(node):
        c = Client(node)
        client_of.append(c)
        path = node.shares.folders[0] / "f.bin"
        path.write_bytes(new)
        os.utime(path, (time.time() + 5, time.time() + 5))  # a change the index must notice
        err = await c.ask(p.GetChunks(req=1, cid=_cid(old), index=0))
        assert isinstance(err, p.Error) and err.code is p.ErrorCode.NOT_FOUND
        assert "f.bin changed since it was indexed" in err.reason
        # The node offers the old content no more, and the rescan the read asked for finds
        # the new one (the periodic rescan is an hour away).
        deadline = time.monotonic() + 10
        # the index has no event to wait on: poll it
        while node.shares.index.by_cid(_cid(new)) is None and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        info = await c.ask(p.GetInfo(req=2, cid=_cid(new)))
        assert isinstance(info, p.FileInfo) and info.size == len(new)
        gone = await c.ask(p.GetInfo(req=3, cid=_cid(old)))
        assert isinstance(gone, p.Error) and gone.code is p.ErrorCode.NOT_FOUND


# --- our own bugs -----------------------------------------------------------------------------


class BuggyRouter(Router):
    async def respond(self, msg: p.Message, sender: bytes) -> p.Message:
        if isinstance(msg, p.GetInfo):
            raise RuntimeError("a bug in answering")
        return await super().respond(msg, sender)


class BuggyNode(Node):
    Router = BuggyRouter


async def test_a_handler_bug_is_logged_and_answered_as_internal(
    tmp_path: Path, client_of: list[Client], caplog: pytest.LogCaptureFixture
) -> None:
    node = _node(tmp_path, "a", {"f.bin": b"data"}, BuggyNode)
    async with running(node):
        c = Client(node)
        client_of.append(c)
        with caplog.at_level(logging.ERROR, logger="zwalk.net.router"):
            err = await c.ask(p.GetInfo(req=5, cid=_cid(b"data")))
        assert err == p.Error(req=5, code=p.ErrorCode.INTERNAL, reason="RuntimeError")
        assert any(
            r.exc_info and "a bug in answering" in str(r.exc_info[1]) for r in caplog.records
        )
        assert await c.ask(p.Ping(req=6)) == p.Pong(req=6, files=1)  # and it keeps serving


async def test_a_decoder_bug_is_ours_not_a_bad_request(
    tmp_path: Path,
    client_of: list[Client],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = _node(tmp_path, "a", {"f.bin": b"data"})
    async with running(node):
        c = Client(node)
        client_of.append(c)

        def broken(v: object) -> bytes:
            raise TypeError("a bug in a check")

        monkeypatch.setitem(p.GetInfo.SCHEMA, "cid", broken)
        with caplog.at_level(logging.ERROR, logger="zwalk.net.router"):
            await c.send_raw(
                cbor2.dumps({"v": p.PROTOCOL_VERSION, "t": "get-info", "req": 8, "cid": b"c" * 32})
            )
            err = await c.recv()
        assert err == p.Error(req=8, code=p.ErrorCode.INTERNAL, reason="TypeError")
        assert any("cannot decode" in r.getMessage() and r.exc_info for r in caplog.records)
        monkeypatch.undo()
        # a peer's own mistake is still its fault: bad-request, not internal
        await c.send_raw(
            cbor2.dumps({"v": p.PROTOCOL_VERSION, "t": "get-info", "req": 9, "cid": 5})
        )
        mistake = await c.recv()
        assert isinstance(mistake, p.Error) and mistake.code is p.ErrorCode.BAD_REQUEST


# --- a source that sends frames of the wrong length -------------------------------------------


class TruncatingRouter(Router):
    async def respond(self, msg: p.Message, sender: bytes) -> p.Message:
        reply = await super().respond(msg, sender)
        if isinstance(reply, p.Chunks) and len(reply.payload) > 1:
            return replace(reply, payload=bytes(reply.payload)[:-1])
        return reply


class TruncatingNode(Node):
    Router = TruncatingRouter


async def test_a_source_sending_short_frames_is_dropped_and_the_other_delivers(
    tmp_path: Path,
) -> None:
    data = os.urandom(24 * CS + 99)
    short = _node(tmp_path, "short", {"file.bin": data}, TruncatingNode)
    honest = _node(tmp_path, "honest", {"file.bin": data})
    ini = tmp_path / "small-frames.ini"
    ini.write_text("[transfer]\nframe_size = 65536\nwindow = 131072\nmax_window = 262144\n")
    async with running(short):
        alone, out, err = await find_async(
            tmp_path, "file.bin", "--peer", str(short.local.endpoints[0]), "--out", "dl2", "--json"
        )
    assert alone == 3, err  # found, but nothing it sends can be kept
    assert "bytes, want" in " ".join(json.loads(out)["errors"])
    assert not (tmp_path / "dl2" / "file.bin").exists()
    short = _node(tmp_path, "short2", {"file.bin": data}, TruncatingNode)
    async with running(short), running(honest):
        peers = [a for n in (short, honest) for a in ("--peer", str(n.local.endpoints[0]))]
        code, out, err = await find_async(
            tmp_path, "file.bin", "--all", *peers, "--config", str(ini), "--out", "dl", "--json"
        )
    assert code == 0, err
    assert (tmp_path / "dl" / "file.bin").read_bytes() == data
    d = json.loads(out)["download"]
    assert any("short" in k and "bytes, want" in v for k, v in d["excluded"].items()), d


# --- per-peer rate limits ---------------------------------------------------------------------


def test_a_token_bucket_allows_its_burst_then_its_rate() -> None:
    from zwalk.core.ratelimit import Rate, RateLimits, Work

    limits = RateLimits({Work.SEARCH: Rate(10.0, 5.0)}, max_peers=2)
    assert [limits.allow("a", Work.SEARCH, 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert limits.allow("b", Work.SEARCH, 0.0)  # each peer has its own bucket
    assert not limits.allow("a", Work.SEARCH, 0.05)  # half a token back
    assert limits.allow("a", Work.SEARCH, 0.1)  # one token back
    assert limits.allow("c", Work.SEARCH, 0.1) and len(limits._buckets) == 2  # bounded table


async def test_a_peer_searching_too_fast_gets_busy_and_others_are_served(
    tmp_path: Path, client_of: list[Client]
) -> None:
    from zwalk.core.ratelimit import RATES, Work

    node = _node(tmp_path, "a", {"f.bin": b"data"})
    async with running(node):
        greedy, other = Client(node), Client(node)
        client_of += [greedy, other]
        n = int(RATES[Work.SEARCH].burst) + 100
        for req in range(n):
            await greedy.send(
                p.Search(
                    req=req,
                    qid=b"q" * 16,
                    kind=p.QueryKind.NAME,
                    pattern="f.bin",
                    icase=False,
                    limit=10,
                )  # fmt: skip
            )
        replies = [await greedy.recv() for _ in range(n)]
        limited = [r for r in replies if isinstance(r, p.Error) and "rate limit" in r.reason]
        assert len(limited) >= 50, len(limited)
        assert all(r.code is p.ErrorCode.BUSY for r in limited)
        # the rest: answered (Hits), or busy because 64 requests were in progress at once
        busy = [r for r in replies if isinstance(r, p.Error) and r.code is p.ErrorCode.BUSY]
        assert len(busy) + sum(isinstance(r, p.Hits) for r in replies) == n
        hits = await other.ask(
            p.Search(
                req=1, qid=b"r" * 16, kind=p.QueryKind.NAME, pattern="f.bin", icase=False, limit=10
            )  # fmt: skip
        )
        assert isinstance(hits, p.Hits) and [h.name for h in hits.hits] == ["f.bin"]
