# Outgoing links: one DEALER per peer endpoint, matching replies to requests by id, and a second
# DEALER to the same endpoint, opened on first use, for chunk requests. A peer's ROUTER answers
# each connection in order, so a pong sent after 16 MiB of chunk data would wait behind all of
# it (seconds on a slow link, long enough for the peer to be taken for dead); on a connection of
# its own, a ping's answer waits only for the link's own queue. Both connections count as proof
# of life: anything that arrives on either refreshes the peer's last-seen time.
#
# Every connection is a CurveZMQ client: it proves our key, and it talks only to the server that
# proves the key we expect (a node whose id is that key's hash). Nothing else gets a byte.
#
# The first connection is watched (a ZeroMQ socket monitor): when its TCP connection closes, the
# owner hears of it at once. A peer process that dies closes its sockets, and that is the first
# sign of it; pings would take seconds to tell.
from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import zmq
import zmq.asyncio
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

from zwalk.core import protocol as p
from zwalk.core.addresses import Endpoint
from zwalk.core.keys import node_id_for
from zwalk.store.identity import Identity

log = logging.getLogger(__name__)

HWM = 256  # messages queued per socket before a send fails (and the peer counts as gone)
HANDSHAKE_MS = 5000  # a connection that has not finished its CurveZMQ handshake by then is closed
_monitors = itertools.count(1)  # inproc names of socket monitors, one per link


class PeerError(Exception):
    """A peer answered with an error, could not be reached, or said something malformed. The
    message says what happened, not to whom: the caller names the peer (once)."""

    def __init__(self, message: str, code: p.ErrorCode | None = None) -> None:
        super().__init__(message)
        self.code = code  # the peer's error code, when it answered with one


class PeerGone(PeerError):
    """The peer's send queue is full or its link is closed: treat it as gone."""


def configure(sock: zmq.Socket[Any]) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_MS)
    sock.setsockopt(zmq.MAXMSGSIZE, p.MAX_FRAME)
    sock.setsockopt(zmq.SNDHWM, HWM)
    sock.setsockopt(zmq.RCVHWM, HWM)


@dataclass(frozen=True, slots=True)
class PeerInfo:
    node: bytes
    name: str
    files: int
    endpoint: Endpoint
    features: tuple[str, ...] = ()  # the optional requests it answers

    @property
    def short(self) -> str:
        return self.node.hex()[:12]


class PeerLink:
    """The DEALER to one peer endpoint. `receive_loop` must run while the link is used."""

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        endpoint: Endpoint,
        *,
        identity: Identity,
        server_key: bytes,
        req_ids: Callable[[], int],
        on_reply: Callable[[Endpoint], None] | None = None,
        on_closed: Callable[[Endpoint], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.info: PeerInfo | None = None
        self.rtt: float | None = None  # seconds the hello took
        self._next_req = req_ids
        self._on_reply = on_reply
        self.server_key = server_key
        self._identity = identity
        self._ctx = ctx
        self.sock = self._connect()
        self._on_closed = on_closed
        self._monitor: zmq.asyncio.Socket | None = None
        if on_closed is not None:
            addr = f"inproc://zwalk-link-{next(_monitors)}"
            self._monitor = self.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED, addr)
        self._bulk: zmq.asyncio.Socket | None = None  # chunk requests, once there is one
        self._bulk_opened = asyncio.Event()
        self._pending: dict[int, asyncio.Future[p.Message]] = {}
        self.closed = False

    def __repr__(self) -> str:
        return f"<peer {self.label}>"

    @property
    def label(self) -> str:
        if self.info:
            return f"{self.info.name} ({self.info.short}) at {self.endpoint}"
        return str(self.endpoint)

    def send(self, msg: p.Message) -> None:
        """Send without waiting for a reply (notifications such as bye)."""
        if self.closed:
            raise PeerGone("link closed")
        # zmq.asyncio reports a full queue through the returned future, at once.
        sent = self.sock.send_multipart(p.encode(msg), flags=zmq.NOBLOCK, copy=False)
        if isinstance(sent, asyncio.Future) and sent.done() and sent.exception() is not None:
            raise PeerGone("send queue full")

    def _connect(self) -> zmq.asyncio.Socket:
        sock = self._ctx.socket(zmq.DEALER)
        configure(sock)
        try:
            sock.curve_secretkey = self._identity.secret
            sock.curve_publickey = self._identity.public
            sock.curve_serverkey = z85.encode(self.server_key)
            # Node id first (for a person reading a log), then a per-link suffix: two links
            # from one node to one peer must not collide on the peer's ROUTER. The peer takes
            # who we are from the key we prove, never from this.
            sock.setsockopt(zmq.ROUTING_ID, self._identity.node_id + os.urandom(4))
            sock.connect(self.endpoint.zmq)
        except zmq.ZMQError:
            sock.close(linger=0)  # an open socket would keep the context from ending
            raise
        return sock

    def _bulk_socket(self) -> zmq.asyncio.Socket:
        if self._bulk is None:
            self._bulk = self._connect()
            self._bulk_opened.set()
        return self._bulk

    async def request(
        self, msg: p.Message, timeout: float | None, *, bulk: bool = False
    ) -> p.Message:
        """Send a request and wait for its reply (for ever with no timeout: the caller then
        decides when to give up, by cancelling); error replies raise PeerError. `bulk` sends
        it on the connection for large replies."""
        if self.closed:
            raise PeerGone("link closed")
        req = self._next_req()
        msg = replace(msg, req=req)
        fut: asyncio.Future[p.Message] = asyncio.get_running_loop().create_future()
        self._pending[req] = fut
        try:
            sock = self._bulk_socket() if bulk else self.sock
            try:
                await sock.send_multipart(p.encode(msg), flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                raise PeerGone("send queue full") from None
            async with asyncio.timeout(timeout):
                reply = await fut
        finally:
            self._pending.pop(req, None)
        if isinstance(reply, p.Error):
            raise PeerError(f"{reply.code}: {reply.reason}", reply.code)
        return reply

    async def receive_loop(self) -> None:
        """Take replies from both connections (the bulk one once it is opened)."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._receive(self.sock))
            if self._monitor is not None:
                tg.create_task(self._watch(self._monitor))
            await self._bulk_opened.wait()
            if self._bulk is not None and not self.closed:
                tg.create_task(self._receive(self._bulk))

    async def _receive(self, sock: zmq.asyncio.Socket) -> None:
        while not self.closed:
            try:
                frames = await sock.recv_multipart(copy=False)
            except zmq.ZMQError:
                if self.closed:  # closed under us (the peer left): the loop is over
                    return
                raise
            if self._on_reply is not None:
                self._on_reply(self.endpoint)
            try:
                msg = p.decode([f.buffer for f in frames])
            except (p.ProtocolError, p.DecoderBug) as e:
                if isinstance(e, p.DecoderBug):  # ours, not the peer's: with the traceback
                    log.exception("cannot decode a reply from %s", self.label)
                else:
                    log.warning("malformed reply from %s: %s", self.label, e)
                fut = self._pending.get(e.req) if e.req is not None else None
                if fut and not fut.done():
                    fut.set_exception(PeerError(f"malformed reply: {e}"))
                continue
            fut = self._pending.get(msg.req)
            if fut is None or fut.done():
                log.debug("unsolicited %s from %s", msg.TYPE, self.label)
                continue
            fut.set_result(msg)

    async def _watch(self, monitor: zmq.asyncio.Socket) -> None:
        """Tell the owner each time the connection drops (ZeroMQ then connects again)."""
        while not self.closed:
            try:
                event = parse_monitor_message(await monitor.recv_multipart())
            except zmq.ZMQError:
                return  # closed with the link
            if event["event"] == zmq.EVENT_DISCONNECTED and not self.closed and self._on_closed:
                self._on_closed(self.endpoint)

    async def hello(self, hello: p.Hello, timeout: float) -> p.HelloOk:
        started = asyncio.get_running_loop().time()
        reply = await self.request(hello, timeout)
        if not isinstance(reply, p.HelloOk):
            raise PeerError(f"answered hello with {reply.TYPE}")
        if reply.node != node_id_for(self.server_key):
            raise PeerError("its hello-ok names another node than the key it proved")
        self.rtt = asyncio.get_running_loop().time() - started  # a small request, both ways
        self.info = PeerInfo(reply.node, reply.name, reply.files, self.endpoint, reply.features)
        return reply

    def close(self, linger_ms: int = 0) -> None:
        if self.closed:
            return
        self.closed = True
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(PeerGone("link closed"))
        if self._monitor is not None:
            with contextlib.suppress(zmq.ZMQError):
                self.sock.disable_monitor()
            self._monitor.close(linger=0)
        self.sock.close(linger=linger_ms)
        if self._bulk is not None:
            self._bulk.close(linger=0)  # nothing on it is worth waiting for
        self._bulk_opened.set()  # the receive loop stops waiting for it
