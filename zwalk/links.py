# Outgoing links: one DEALER per peer endpoint, matching replies to requests by id.
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import zmq
import zmq.asyncio

from zwalk import protocol as p
from zwalk.config import Endpoint

log = logging.getLogger(__name__)

HWM = 256  # messages queued per socket before a send fails (and the peer counts as gone)


class PeerError(Exception):
    """A peer answered with an error, could not be reached, or said something malformed."""

    def __init__(self, message: str, code: p.ErrorCode | None = None) -> None:
        super().__init__(message)
        self.code = code  # the peer's error code, when it answered with one


class PeerGone(PeerError):
    """The peer's send queue is full or its link is closed: treat it as gone."""


def configure(sock: zmq.Socket[Any]) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, p.MAX_FRAME)
    sock.setsockopt(zmq.SNDHWM, HWM)
    sock.setsockopt(zmq.RCVHWM, HWM)


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
    """The DEALER to one peer endpoint. `receive_loop` must run while the link is used."""

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        endpoint: Endpoint,
        *,
        node_id: bytes,
        req_ids: Callable[[], int],
        on_reply: Callable[[Endpoint], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.info: PeerInfo | None = None
        self._next_req = req_ids
        self._on_reply = on_reply
        self.sock = ctx.socket(zmq.DEALER)
        configure(self.sock)
        # Node id first (so the peer knows who talks), then a per-link suffix: two links from
        # one node to one peer (two addresses) must not collide on the peer's ROUTER.
        try:
            self.sock.setsockopt(zmq.ROUTING_ID, node_id + os.urandom(4))
            self.sock.connect(endpoint.zmq)
        except zmq.ZMQError:
            self.sock.close(linger=0)  # an open socket would keep the context from ending
            raise
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
            raise PeerGone(f"{self.label}: link closed")
        # zmq.asyncio reports a full queue through the returned future, at once.
        sent = self.sock.send_multipart(p.encode(msg), flags=zmq.NOBLOCK, copy=False)
        if sent.done() and sent.exception() is not None:
            raise PeerGone(f"{self.label}: send queue full")

    async def request(self, msg: p.Message, timeout: float) -> p.Message:
        """Send a request and wait for its reply; error replies raise PeerError."""
        if self.closed:
            raise PeerGone(f"{self.label}: link closed")
        req = self._next_req()
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
            raise PeerError(f"{self.label}: {reply.code}: {reply.reason}", reply.code)
        return reply

    async def receive_loop(self) -> None:
        while True:
            frames = await self.sock.recv_multipart(copy=False)
            if self._on_reply is not None:
                self._on_reply(self.endpoint)
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

    async def hello(self, hello: p.Hello, timeout: float) -> p.HelloOk:
        reply = await self.request(hello, timeout)
        if not isinstance(reply, p.HelloOk):
            raise PeerError(f"{self.label}: answered hello with {reply.TYPE}")
        self.info = PeerInfo(reply.node, reply.name, reply.files, self.endpoint)
        return reply

    def close(self, linger_ms: int = 0) -> None:
        if self.closed:
            return
        self.closed = True
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(PeerGone(f"{self.label}: link closed"))
        self.sock.close(linger=linger_ms)
