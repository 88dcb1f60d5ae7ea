# The asyncio shell of a node: it owns every ZeroMQ socket and runs the sans-IO core.
#
# One ROUTER bound per node takes everything that comes in; one DEALER per peer carries what goes
# out, with our node id as its routing id (ZeroMQ's Harmony pattern). Requests carry an id and
# replies name it. Sends never block: a peer whose queue is full is treated as gone. Disk work and
# hashing go to worker threads so the loop stays responsive.
from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from zwalk import protocol as p
from zwalk.config import Config, Endpoint
from zwalk.identity import Identity
from zwalk.index import Index, scan
from zwalk.netif import resolve
from zwalk.query import Query

log = logging.getLogger(__name__)

MAX_CONCURRENT_REQUESTS = 64  # per node, beyond this a request is answered "busy"
MAX_CONCURRENT_READS = 8
STATE_FILE = "node.json"


class PeerError(Exception):
    """A peer answered with an error, could not be reached, or said something malformed."""


class PeerGone(PeerError):
    """The peer's send queue is full or the peer does not answer: treat it as gone."""


def configure(sock: zmq.Socket[Any]) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, p.MAX_FRAME)
    sock.setsockopt(zmq.SNDHWM, 256)
    sock.setsockopt(zmq.RCVHWM, 256)


@dataclass(frozen=True, slots=True)
class PeerInfo:
    node: bytes
    name: str
    files: int
    endpoint: Endpoint

    @property
    def short(self) -> str:
        return self.node.hex()[:12]


class PeerLink:
    """The DEALER to one peer, matching replies to requests by id."""

    def __init__(self, node: Node, endpoint: Endpoint) -> None:
        self.node = node
        self.endpoint = endpoint
        self.info: PeerInfo | None = None
        self.sock = node.ctx.socket(zmq.DEALER)
        configure(self.sock)
        # Node id first (so the peer knows who talks), then a per-link suffix: two links from
        # one node to one peer (two addresses) must not collide on the peer's ROUTER.
        self.sock.setsockopt(zmq.ROUTING_ID, node.identity.node_id + os.urandom(4))
        self.sock.connect(endpoint.zmq)
        self._pending: dict[int, asyncio.Future[p.Message]] = {}

    def __repr__(self) -> str:
        return f"<peer {self.label}>"

    @property
    def label(self) -> str:
        if self.info:
            return f"{self.info.name} ({self.info.short}) at {self.endpoint}"
        return str(self.endpoint)

    async def request(self, msg: p.Message, timeout: float) -> p.Message:
        """Send a request and wait for its reply; error replies raise PeerError."""
        req = next(self.node.req_ids)
        msg = replace(msg, req=req)
        fut: asyncio.Future[p.Message] = asyncio.get_running_loop().create_future()
        self._pending[req] = fut
        try:
            try:
                await self.sock.send_multipart(p.encode(msg), flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                raise PeerGone(f"{self.label}: send queue full") from None
            async with asyncio.timeout(timeout):
                reply = await fut
        finally:
            self._pending.pop(req, None)
        if isinstance(reply, p.Error):
            raise PeerError(f"{self.label}: {reply.code}: {reply.reason}")
        return reply

    async def receive_loop(self) -> None:
        while True:
            frames = await self.sock.recv_multipart(copy=False)
            try:
                msg = p.decode([f.buffer for f in frames])
            except p.ProtocolError as e:
                log.warning("malformed reply from %s: %s", self.label, e)
                fut = self._pending.get(e.req) if e.req is not None else None
                if fut and not fut.done():
                    fut.set_exception(PeerError(f"{self.label}: malformed reply: {e.reason}"))
                continue
            fut = self._pending.get(msg.req)
            if fut is None or fut.done():
                log.debug("unsolicited %s from %s", msg.TYPE, self.label)
                continue
            fut.set_result(msg)

    async def hello(self, timeout: float) -> PeerInfo:
        ident = self.node.identity
        reply = await self.request(p.Hello(req=0, node=ident.node_id, name=self.node.name), timeout)
        if not isinstance(reply, p.HelloOk):
            raise PeerError(f"{self.label}: answered hello with {reply.TYPE}")
        self.info = PeerInfo(reply.node, reply.name, reply.files, self.endpoint)
        return self.info

    def close(self) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(PeerGone(f"{self.label}: link closed"))
        self.sock.close(linger=0)


class Node:
    """A zwalk node. `run` owns every task and socket and returns only when cancelled."""

    def __init__(
        self,
        cfg: Config,
        identity: Identity,
        *,
        shares: Iterable[Path] = (),
        listen: bool = True,
        state_dir: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.identity = identity
        self.name = cfg.name
        self.shares = [Path(s) for s in shares]
        self.listen = listen
        self.state_dir = state_dir  # where node.json is written while serving
        self.ctx = zmq.asyncio.Context()
        self.index = Index()
        self.endpoints: list[Endpoint] = []
        self.links: dict[Endpoint, PeerLink] = {}
        self.req_ids = itertools.count(1)
        self._tg: asyncio.TaskGroup | None = None
        self._router: zmq.asyncio.Socket | None = None
        self._request_slots = asyncio.Semaphore(MAX_CONCURRENT_REQUESTS)
        self._read_slots = asyncio.Semaphore(MAX_CONCURRENT_READS)
        self._scan_lock = asyncio.Lock()

    # --- lifecycle --------------------------------------------------------------------------
    async def run(self, ready: asyncio.Future[Node]) -> None:
        """Bind, index, then serve until cancelled. Bind errors reach `ready`, not a log line."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                try:
                    if self.listen:
                        self._bind()
                        tg.create_task(self._serve_router())
                    if self.shares:
                        await self.rescan()
                        tg.create_task(self._rescan_loop())
                    self._write_state()
                except BaseException as e:
                    if not ready.done():
                        ready.set_exception(e)
                    raise
                ready.set_result(self)
                await asyncio.Future()  # until cancelled
        finally:
            self._tg = None
            self._remove_state()
            for link in self.links.values():
                link.close()
            self.links.clear()
            if self._router is not None:
                self._router.close(linger=0)
            self.ctx.destroy(linger=0)

    def _bind(self) -> None:
        router = self.ctx.socket(zmq.ROUTER)
        configure(router)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._router = router
        addrs = resolve(self.cfg.interfaces) if self.cfg.interfaces else ["0.0.0.0"]  # noqa: S104
        port = self.cfg.port
        for addr in addrs:
            try:
                if port == 0:
                    port = router.bind_to_random_port(f"tcp://{addr}")
                else:
                    router.bind(f"tcp://{addr}:{port}")
            except zmq.ZMQError as e:
                hint = (
                    " (another node running? use --port 0 for any free port)"
                    if (e.errno == zmq.EADDRINUSE)
                    else ""
                )
                raise OSError(
                    e.errno, f"cannot listen on {addr}:{port}: {e.strerror}{hint}"
                ) from None
            self.endpoints.append(Endpoint(addr, port))

    def _write_state(self) -> None:
        if self.state_dir is None:
            return
        state = {
            "pid": os.getpid(),
            "node": self.identity.node_id.hex(),
            "name": self.name,
            "endpoints": [str(e) for e in self.endpoints],
            "files": len(self.index),
        }
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / STATE_FILE
        tmp = path.with_name(f"{STATE_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, path)

    def _remove_state(self) -> None:
        if self.state_dir is not None:
            with contextlib.suppress(OSError):
                (self.state_dir / STATE_FILE).unlink()

    # --- share index ------------------------------------------------------------------------
    async def rescan(self) -> Index:
        async with self._scan_lock:
            exclude = [self.cfg.downloads.resolve(), self.cfg.data_dir.resolve()]
            index = await asyncio.to_thread(
                scan,
                self.shares,
                chunk_size=self.cfg.chunk_size,
                cache_path=self.cfg.index_cache,
                exclude=exclude,
            )
            for path, why in index.skipped:
                log.warning("not sharing %s: %s", path, why)
            if len(index) != len(self.index) or index.total_bytes != self.index.total_bytes:
                log.info("sharing %d files, %d bytes", len(index), index.total_bytes)
            self.index = index
            return index

    async def _rescan_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.rescan_interval)
            try:
                await self.rescan()
                self._write_state()
            except OSError as e:
                log.warning("rescan failed: %s", e)

    # --- serving ----------------------------------------------------------------------------
    async def _serve_router(self) -> None:
        router, tg = self._router, self._tg
        if router is None or tg is None:
            raise RuntimeError("node is not running")
        while True:
            frames = await router.recv_multipart(copy=False)
            if len(frames) < 2:
                continue
            rid = frames[0].bytes
            try:
                msg = p.decode([f.buffer for f in frames[1:]])
            except p.ProtocolError as e:
                log.info("rejected message from %s: %s", rid.hex()[:12], e.reason)
                if e.req is not None:
                    await self._reply(rid, p.Error(req=e.req, code=e.code, reason=e.reason))
                continue
            if not isinstance(msg, p.REQUESTS):
                await self._reply(
                    rid, p.Error(req=msg.req, code=p.ErrorCode.BAD_REQUEST, reason="not a request")
                )
                continue
            if self._request_slots.locked():
                await self._reply(
                    rid, p.Error(req=msg.req, code=p.ErrorCode.BUSY, reason="too many requests")
                )
                continue
            await self._request_slots.acquire()
            tg.create_task(self._handle(rid, msg))

    async def _handle(self, rid: bytes, msg: p.Message) -> None:
        try:
            reply = await self.answer(msg)
        except Exception as e:  # a handler bug must not take the node down
            log.exception("error answering %s", msg.TYPE)
            reply = p.Error(req=msg.req, code=p.ErrorCode.INTERNAL, reason=type(e).__name__)
        finally:
            self._request_slots.release()
        await self._reply(rid, reply)

    async def _reply(self, rid: bytes, msg: p.Message) -> None:
        if self._router is None:
            return
        try:
            frames = p.encode(msg)
        except Exception:  # a reply we cannot encode is our bug; the requester will time out
            log.exception("cannot encode %s reply", msg.TYPE)
            return
        try:
            await self._router.send_multipart([rid, *frames], flags=zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as e:  # queue full or peer gone: the requester will time out
            log.debug("dropped reply to %s: %s", rid.hex()[:12], e)

    async def answer(self, msg: p.Message) -> p.Message:
        """The reply to one request (the node's whole server-side behaviour)."""
        match msg:
            case p.Hello():
                return p.HelloOk(
                    req=msg.req, node=self.identity.node_id, name=self.name, files=len(self.index)
                )
            case p.Search():
                query = Query(kind=msg.kind, pattern=msg.pattern, icase=msg.icase)
                found = self.index.search(query, limit=msg.limit)
                return p.Hits(req=msg.req, qid=msg.qid, hits=tuple(e.hit() for e in found))
            case p.GetInfo():
                entry = self.index.by_cid(msg.cid)
                if entry is None:
                    return _not_found(msg.req, msg.cid)
                return entry.info(msg.req)
            case p.GetChunks():
                return await self._chunks(msg)
        return p.Error(req=msg.req, code=p.ErrorCode.BAD_REQUEST, reason="unexpected message")

    async def _chunks(self, msg: p.GetChunks) -> p.Message:
        entry = self.index.by_cid(msg.cid)
        if entry is None:
            return _not_found(msg.req, msg.cid)
        n = p.chunk_count(entry.size, entry.chunk_size)
        if msg.index + msg.count > n:
            return p.Error(req=msg.req, code=p.ErrorCode.BAD_REQUEST, reason="chunk out of range")
        offset = msg.index * entry.chunk_size
        length = min(msg.count * entry.chunk_size, entry.size - offset)
        if length > p.MAX_PAYLOAD:
            return p.Error(req=msg.req, code=p.ErrorCode.TOO_LARGE, reason="ask for fewer chunks")
        async with self._read_slots:
            try:
                data = await asyncio.to_thread(
                    read_span, entry.path, offset, length, entry.mtime_ns
                )
            except OSError as e:
                log.warning("cannot read %s: %s", entry.path, e)
                if self._tg is not None:
                    self._tg.create_task(self.rescan())
                return _not_found(msg.req, msg.cid)
        return p.Chunks(req=msg.req, cid=msg.cid, index=msg.index, count=msg.count, payload=data)

    # --- asking peers -----------------------------------------------------------------------
    async def connect(self, endpoints: Iterable[Endpoint]) -> tuple[list[PeerLink], list[str]]:
        """Open links to endpoints and say hello; returns (reachable links, problems)."""
        if self._tg is None:
            raise RuntimeError("node is not running")
        links = []
        for ep in dict.fromkeys(endpoints):
            if ep not in self.links:
                link = PeerLink(self, ep)
                self.links[ep] = link
                self._tg.create_task(link.receive_loop())
            links.append(self.links[ep])
        results = await asyncio.gather(
            *(link.hello(self.cfg.reply_timeout) for link in links), return_exceptions=True
        )
        ok: list[PeerLink] = []
        problems: list[str] = []
        for link, r in zip(links, results, strict=True):
            if isinstance(r, PeerInfo):
                if r.node == self.identity.node_id:
                    problems.append(f"{link.endpoint} is this node itself")
                else:
                    ok.append(link)
            elif isinstance(r, TimeoutError):
                problems.append(f"{link.endpoint}: no answer within {self.cfg.reply_timeout:g}s")
            elif isinstance(r, Exception):
                problems.append(str(r))
            else:
                raise r
        return ok, problems


def _not_found(req: int, cid: bytes) -> p.Error:
    return p.Error(
        req=req, code=p.ErrorCode.NOT_FOUND, reason=f"{p.cid_to_text(cid)} not shared here"
    )


def read_span(path: Path, offset: int, length: int, mtime_ns: int) -> bytes:
    """Read a byte range of a shared file, refusing if it changed since it was indexed."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        if os.fstat(fd).st_mtime_ns != mtime_ns:
            raise OSError(f"{path} changed since it was indexed")
        if hasattr(os, "pread"):
            data = os.pread(fd, length, offset)
        else:  # Windows
            os.lseek(fd, offset, os.SEEK_SET)
            data = os.read(fd, length)
    finally:
        os.close(fd)
    if len(data) != length:
        raise OSError(f"{path} is shorter than indexed")
    return data
