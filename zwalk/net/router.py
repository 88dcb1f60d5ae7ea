# The node's ROUTER socket: everything peers send us comes in here. Each message is decoded,
# gated (notifications, hello checks, the busy limit) and answered through the sans-IO
# responder; chunk data is read off the event loop into pooled buffers and sent without a copy.
#
# Who sent a message is the key its connection proved in the CurveZMQ handshake (the User-Id
# ZAP gave it, net/gate.py); the routing id is only where the reply goes.
#
# Errors split as h11 splits them: a malformed message is the peer's fault and gets the
# protocol's error answer when its request id could be read (docs/PROTOCOL.md section 8); a bug
# of ours in decoding or answering is logged with its traceback and answered as internal.
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import zmq
import zmq.asyncio

from zwalk.core import protocol as p
from zwalk.core import responder
from zwalk.core.ratelimit import RateLimits, Work
from zwalk.net.buffers import BufferPool
from zwalk.net.local import Local
from zwalk.net.peers import PeerTable
from zwalk.net.shares import Shares
from zwalk.net.tasks import in_thread
from zwalk.net.walks import WalkService
from zwalk.store.reading import FileChanged, check_file, read_span

log = logging.getLogger(__name__)
# Who searched for what and who fetched what: `serve -v` shows it.
access = logging.getLogger("zwalk.access")

MAX_CONCURRENT_REQUESTS = 64  # per node, beyond this a request is answered "busy"
MAX_CONCURRENT_READS = 8

Spawn = Callable[[Coroutine[Any, Any, None]], object]


class Router:
    def __init__(
        self,
        sock: zmq.asyncio.Socket,
        local: Local,
        peers: PeerTable,
        shares: Shares,
        walks: WalkService,
        spawn: Spawn,
    ) -> None:
        self.sock = sock
        self.local = local
        self.peers = peers
        self.shares = shares
        self.walks = walks
        self.spawn = spawn
        self._request_slots = asyncio.Semaphore(MAX_CONCURRENT_REQUESTS)
        self._read_slots = asyncio.Semaphore(MAX_CONCURRENT_READS)
        self._buffers = BufferPool(keep=2 * MAX_CONCURRENT_READS)
        self.limits = RateLimits()

    async def serve(self) -> None:
        """Take messages until cancelled; no message, and no bug one finds, stops it."""
        while True:
            frames = await self.sock.recv_multipart(copy=False)
            try:
                await self._on_message(frames)
            except Exception:
                log.exception("error handling a message")

    async def _on_message(self, frames: list[zmq.Frame]) -> None:
        if len(frames) < 2:
            return
        rid = frames[0].bytes
        user = str(frames[1].get("User-Id") or "")
        sender = self.peers.gate.sender(user)
        if sender is None:  # not through the handshake: no CurveZMQ socket lets this happen
            log.error("a message with no authenticated sender: dropped")
            return
        self.peers.on_traffic(sender)
        try:
            msg = p.decode([f.buffer for f in frames[1:]])
            if log.isEnabledFor(logging.DEBUG):  # -vv: every message
                log.debug("<- %s req %d from %s", msg.TYPE, msg.req, self._who(sender))
        except p.ProtocolError as e:  # the peer's fault
            log.info("rejected message from %s: %s", rid.hex()[:12], e.reason)
            if e.req is not None:
                await reply(self.sock, rid, p.Error(req=e.req, code=e.code, reason=e.reason))
            return
        except p.DecoderBug as e:  # ours
            log.exception("cannot decode a message from %s", rid.hex()[:12])
            if e.req is not None:
                await reply(self.sock, rid, _internal(e.req, e.__cause__ or e))
            return
        if isinstance(msg, p.NOTIFICATIONS):
            if isinstance(msg, p.Bye):
                self.peers.on_bye(sender)
            else:
                self.spawn(self.walks.on_notification(msg, sender))
            return
        if isinstance(msg, p.Hello):
            if msg.node != sender:
                why = "hello names another node than the key this connection proved"
                await reply(self.sock, rid, _bad(msg.req, why))
                return
            # The address the connection came from (libzmq's Peer-Address frame property).
            self.peers.on_hello(
                msg, str(frames[1].get("Peer-Address")), self.peers.gate.key_of(user)
            )
        if not isinstance(msg, p.REQUESTS):
            why = (
                "control requests go to the control endpoint"
                if isinstance(msg, p.CONTROL_REQUESTS)
                else "not a request"
            )
            await reply(self.sock, rid, _bad(msg.req, why))
            return
        if isinstance(msg, p.Ping) and msg.files is not None:
            self.peers.membership.on_files(sender, msg.files)
        if isinstance(msg, p.Hello | p.Ping):  # membership must work however busy we are
            await reply(self.sock, rid, await self.respond(msg, sender))
            return
        work = _work(msg)
        if work is not None and not self.limits.allow(sender, work, self.peers.now()):
            busy = p.Error(req=msg.req, code=p.ErrorCode.BUSY, reason=f"{work} rate limit")
            await reply(self.sock, rid, busy)
            return
        if self._request_slots.locked():
            # A message that is ready is read without a pause, so the slots may be held by
            # handlers spawned but not yet started (a burst of walks, each answered at once):
            # they get their turn before this request is refused.
            await asyncio.sleep(0)
        if self._request_slots.locked():
            busy = p.Error(req=msg.req, code=p.ErrorCode.BUSY, reason="too many requests")
            await reply(self.sock, rid, busy)
            return
        await self._request_slots.acquire()
        self.spawn(self._handle(rid, msg, sender))

    def answer(self, msg: p.Message, sender: bytes) -> responder.Answer:
        """What the node answers one request (walk messages go to the walk shell)."""
        match msg:
            case p.Walk():
                if not self.walks.can_relay():
                    return p.Error(req=msg.req, code=p.ErrorCode.BUSY, reason="relaying enough")
                self.spawn(self.walks.relay_walk(msg, sender))
                return p.WalkOk(req=msg.req)
            case p.WalkCheck():
                return self.walks.on_check(msg, sender)
        gossip = self.peers.gossip(exclude=sender) if isinstance(msg, p.Hello) else ()
        return responder.answer(msg, self.shares.index, self.local.me(), gossip)

    async def respond(self, msg: p.Message, sender: bytes) -> p.Message:
        """The reply to a request that passed the gate, chunk data read in."""
        answer = self.answer(msg, sender)
        match answer:
            case responder.ReadSpan():
                return await self._read(answer)
            case responder.Lookup():
                found = await self.shares.search(answer.query, answer.msg.limit)
                access.info(
                    "%s searched for %r: %d hits",
                    self._who(sender),
                    answer.query.pattern,
                    len(found),
                )
                return answer.hits(found)
            case responder.InfoCheck():
                return await self._check(answer, sender)
            case responder.Listing():
                m = answer.msg
                found, cursor = await self.shares.page(
                    after=m.after, prefix=m.prefix, query=answer.query, limit=m.limit
                )
                if not m.after:
                    access.info("%s lists %r", self._who(sender), m.prefix or "everything")
                return answer.page(found, cursor, len(self.shares.index))
        return answer

    async def _check(self, check: responder.InfoCheck, sender: bytes) -> p.Message:
        e = check.entry
        try:
            await in_thread(check_file, e.path, e.size, e.mtime_ns, e.ino, e.dev)
        except OSError as err:
            gone = isinstance(err, FileChanged | FileNotFoundError)
            log.info("%s: %s", e.path, err)
            self.shares.unreadable(e.path, gone=gone)
            if not gone:
                why = err.strerror or "read error"
                return p.Error(
                    req=check.msg.req, code=p.ErrorCode.INTERNAL, reason=f"cannot read: {why}"
                )
            return check.changed("changed" if isinstance(err, FileChanged) else "was removed")
        access.info(
            "transfer %s: %s fetches %s (%d bytes)",
            p.cid_to_text(e.cid)[:15],
            self._who(sender),
            e.name,
            e.size,
        )
        return check.info()

    def _who(self, sender: bytes) -> str:
        m = self.peers.membership.by_node(sender)
        return f"{m.name} ({sender.hex()[:12]})" if m is not None else sender.hex()[:12]

    async def _handle(self, rid: bytes, msg: p.Message, sender: bytes) -> None:
        try:
            out = await self.respond(msg, sender)
        except Exception as e:  # a handler bug must not take the node down
            log.exception("error answering %s", msg.TYPE)
            out = _internal(msg.req, e)
        finally:
            self._request_slots.release()
        # A payload read into one of our buffers goes back to the pool once ZeroMQ is done.
        pooled = out.payload if isinstance(out, p.Chunks) else None
        pooled = pooled if isinstance(pooled, memoryview) else None
        tracker = None
        try:
            tracker = await reply(self.sock, rid, out, track=pooled is not None)
        finally:
            if pooled is not None:
                self._buffers.give_back(pooled, tracker)

    async def _read(self, span: responder.ReadSpan) -> p.Message:
        entry = span.entry
        path = entry.path
        async with self._read_slots:
            data = self._buffers.take(span.length)
            try:
                await in_thread(
                    read_span, path, span.offset, data, entry.mtime_ns, entry.ino, entry.dev
                )
            except BaseException as e:
                self._buffers.give_back(data, None)
                if not isinstance(e, OSError):
                    raise
                log.warning("cannot read %s: %s", path, e)
                gone = isinstance(e, FileChanged | FileNotFoundError)
                self.shares.unreadable(path, gone=gone)
                if not gone:
                    return span.unreadable(e.strerror or "read error", gone=False)
                return span.unreadable(
                    "changed" if isinstance(e, FileChanged) else "was removed", gone=True
                )
        return span.chunks(data)


async def reply(
    sock: zmq.asyncio.Socket, rid: bytes, msg: p.Message, *, track: bool = False
) -> zmq.MessageTracker | None:
    """Send a reply; with `track`, returns when ZeroMQ is done with its buffers."""
    try:
        frames = p.encode(msg)
    except Exception:  # a reply we cannot encode is our bug; the requester will time out
        log.exception("cannot encode %s reply", msg.TYPE)
        return None
    try:
        sent = await sock.send_multipart([rid, *frames], flags=zmq.NOBLOCK, copy=False, track=track)
    except zmq.ZMQError as e:  # queue full or peer gone: the requester will time out
        log.debug("dropped reply to %s: %s", rid.hex()[:12], e)
        return None
    return sent if isinstance(sent, zmq.MessageTracker) else None


def _work(msg: p.Message) -> Work | None:
    """What a request makes us do for its sender that a rate limit bounds."""
    match msg:
        case p.Walk(strategy=p.Strategy.FLOOD):
            return Work.FLOOD
        case p.Walk():
            return Work.WALK
        case p.Search() | p.List():
            return Work.SEARCH
        case p.GetChunks():
            return Work.CHUNKS
    return None


def _bad(req: int, reason: str) -> p.Error:
    return p.Error(req=req, code=p.ErrorCode.BAD_REQUEST, reason=reason)


def _internal(req: int, e: BaseException) -> p.Error:
    return p.Error(req=req, code=p.ErrorCode.INTERNAL, reason=type(e).__name__)
