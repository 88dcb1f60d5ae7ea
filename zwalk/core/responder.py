# What a node answers a peer, sans-IO: given a request, the share index and who we are, the
# reply -- or, for chunk data, which bytes of which file the shell must read to build it. The
# shell (zwalk/net/router.py) decodes, gates (busy, control requests) and sends; walk messages
# go to the walk shell, which drives the relay step. Every answer is testable without a socket.
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path  # a type only: the responder reads nothing
from typing import Protocol

from zwalk.core import protocol as p
from zwalk.core.query import Query


class SharedFile(Protocol):
    """One file of the share index, as the responder needs it (store.index.FileEntry)."""

    @property
    def path(self) -> Path: ...
    @property
    def mtime_ns(self) -> int: ...
    @property
    def ino(self) -> int: ...  # the file's identity, for the shell's check at each read
    @property
    def dev(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def chunk_size(self) -> int: ...
    @property
    def cid(self) -> bytes: ...
    def hit(self) -> p.Hit: ...
    def info(self, req: int) -> p.FileInfo: ...


class ShareIndex(Protocol):
    def __len__(self) -> int: ...
    def by_cid(self, cid: bytes) -> SharedFile | None: ...
    def search(self, query: Query, limit: int = ...) -> Sequence[SharedFile]: ...


@dataclass(frozen=True, slots=True)
class Me:
    """Who this node is, as its hello-ok says."""

    node: bytes
    name: str
    port: int
    inc: bytes


@dataclass(frozen=True, slots=True)
class ReadSpan:
    """To answer a get-chunks: read `length` bytes of `entry` at `offset`, then reply with
    `chunks(data)`, or with `unreadable(...)` if the read fails."""

    msg: p.GetChunks
    entry: SharedFile
    offset: int
    length: int

    def chunks(self, data: bytes | memoryview) -> p.Chunks:
        m = self.msg
        return p.Chunks(req=m.req, cid=m.cid, index=m.index, count=m.count, payload=data)

    def unreadable(self, reason: str, *, gone: bool) -> p.Error:
        """The file could not be read. `gone`: it changed or vanished since it was indexed, so
        this copy is offered no more until the index has looked again (not-found); otherwise
        the failure may pass (a busy disk) and the downloader may ask again (internal)."""
        m = self.msg
        if not gone:
            return p.Error(
                req=m.req,
                code=p.ErrorCode.INTERNAL,
                reason=f"could not read {self.entry.name}: {reason}",
            )
        return p.Error(
            req=m.req,
            code=p.ErrorCode.NOT_FOUND,
            reason=f"{p.cid_to_text(m.cid)} is no longer shared here: {self.entry.name} "
            f"{reason} since it was indexed (it is being indexed again)",
        )


Answer = p.Message | ReadSpan


def answer(msg: p.Message, index: ShareIndex, me: Me, gossip: tuple[p.PeerRef, ...] = ()) -> Answer:
    """The reply to a hello, ping, search, get-info or get-chunks from a peer."""
    match msg:
        case p.Hello():
            return p.HelloOk(
                req=msg.req,
                node=me.node,
                name=me.name,
                files=len(index),
                port=me.port,
                inc=me.inc,
                peers=gossip,
            )
        case p.Ping():
            return p.Pong(req=msg.req, files=len(index))
        case p.Search():
            query = Query(kind=msg.kind, pattern=msg.pattern, icase=msg.icase)
            found = index.search(query, limit=msg.limit)
            return p.Hits(req=msg.req, qid=msg.qid, hits=tuple(e.hit() for e in found))
        case p.GetInfo():
            entry = index.by_cid(msg.cid)
            return entry.info(msg.req) if entry is not None else not_found(msg.req, msg.cid)
        case p.GetChunks():
            return _chunks(msg, index)
    return p.Error(req=msg.req, code=p.ErrorCode.BAD_REQUEST, reason="unexpected message")


def _chunks(msg: p.GetChunks, index: ShareIndex) -> Answer:
    entry = index.by_cid(msg.cid)
    if entry is None:
        return not_found(msg.req, msg.cid)
    # Out of range is checked before too large: a request past the end is wrong at any size.
    n = p.chunk_count(entry.size, entry.chunk_size)
    if msg.index + msg.count > n:
        return p.Error(req=msg.req, code=p.ErrorCode.BAD_REQUEST, reason="chunk out of range")
    offset = msg.index * entry.chunk_size
    length = min(msg.count * entry.chunk_size, entry.size - offset)
    if length > p.MAX_PAYLOAD:
        return p.Error(req=msg.req, code=p.ErrorCode.TOO_LARGE, reason="ask for fewer chunks")
    return ReadSpan(msg, entry, offset, length)


def not_found(req: int, cid: bytes) -> p.Error:
    return p.Error(
        req=req, code=p.ErrorCode.NOT_FOUND, reason=f"{p.cid_to_text(cid)} not shared here"
    )
