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


@dataclass(frozen=True, slots=True)
class Lookup:
    """To answer a search: look `query` up in the index (a glob scans it, so the shell may do
    that off its event loop), then reply with `hits(found)`."""

    msg: p.Search
    query: Query

    def hits(self, found: Sequence[SharedFile]) -> p.Hits:
        m = self.msg
        return p.Hits(req=m.req, qid=m.qid, hits=tuple(e.hit() for e in found[: m.limit]))


@dataclass(frozen=True, slots=True)
class InfoCheck:
    """To answer a get-info: check that the file is still what was indexed (its size, time and
    identity), then reply with `info()`, or with `changed()` if it is not: hashes of a file
    that changed on disk would fail every chunk."""

    msg: p.GetInfo
    entry: SharedFile

    def info(self) -> p.FileInfo:
        return self.entry.info(self.msg.req)

    def changed(self, what: str) -> p.Error:
        m = self.msg
        return p.Error(
            req=m.req,
            code=p.ErrorCode.NOT_FOUND,
            reason=f"{p.cid_to_text(m.cid)} is no longer shared here: {self.entry.name} {what} "
            "since it was indexed (it is being indexed again)",
        )


@dataclass(frozen=True, slots=True)
class Listing:
    """To answer a list: read one page of the index in path order (a scan: off the loop),
    then reply with `page(...)`."""

    msg: p.List

    @property
    def query(self) -> Query | None:
        m = self.msg
        return Query(kind=m.kind, pattern=m.pattern, icase=m.icase) if m.pattern else None

    def page(self, found: Sequence[SharedFile], cursor: str, total: int) -> p.ListOk:
        files = tuple(e.hit() for e in found[: self.msg.limit])
        return p.ListOk(req=self.msg.req, files=files, next=cursor, total=total)


FEATURES = (p.FEATURE_LIST,)  # the optional requests this node answers (protocol section 3)

Answer = p.Message | ReadSpan | Lookup | InfoCheck | Listing


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
                features=FEATURES,
            )
        case p.Ping():
            return p.Pong(req=msg.req, files=len(index))
        case p.Search():
            return Lookup(msg, Query(kind=msg.kind, pattern=msg.pattern, icase=msg.icase))
        case p.GetInfo():
            entry = index.by_cid(msg.cid)
            return InfoCheck(msg, entry) if entry is not None else not_found(msg.req, msg.cid)
        case p.GetChunks():
            return _chunks(msg, index)
        case p.List():
            return Listing(msg)
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
