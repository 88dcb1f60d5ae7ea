"""What a node answers, without a socket: the sans-IO responder (zwalk/core/responder.py)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from zwalk.core import protocol as p
from zwalk.core import responder
from zwalk.core.query import Query

ME = responder.Me(node=b"n" * 16, name="me", port=4747, inc=b"i" * 8)
CS = p.MIN_CHUNK_SIZE


@dataclass(frozen=True)
class File:
    name: str
    size: int
    cid: bytes
    chunk_size: int = CS
    path: Path = Path("/share/x")
    mtime_ns: int = 0
    ino: int = 0
    dev: int = 0

    def hit(self) -> p.Hit:
        return p.Hit(name=self.name, path=self.name, size=self.size, cid=self.cid)

    def info(self, req: int) -> p.FileInfo:
        n = p.chunk_count(self.size, self.chunk_size)
        return p.FileInfo(
            req=req, cid=self.cid, size=self.size, chunk_size=self.chunk_size, hashes=b"h" * 32 * n
        )


class Index:
    def __init__(self, *files: File) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def by_cid(self, cid: bytes) -> File | None:
        return next((f for f in self.files if f.cid == cid), None)

    def search(self, query: Query, limit: int = p.MAX_HITS) -> list[File]:
        return [f for f in self.files if query.matches(f.name, f.cid)][:limit]


BIG = File("big.bin", 10 * p.MAX_PAYLOAD // 4, b"b" * 32, chunk_size=p.MAX_PAYLOAD // 4)
SMALL = File("small.txt", 3 * CS + 5, b"s" * 32)
INDEX = Index(BIG, SMALL)


def test_hello_and_ping_say_who_we_are_and_what_we_share() -> None:
    gossip = (p.PeerRef(node=b"g" * 16, name="g", host="10.0.0.2", port=1, key=b"k" * 32),)
    hello = p.Hello(req=3, node=b"x" * 16, name="x", port=1, inc=b"j" * 8)
    ok = responder.answer(hello, INDEX, ME, gossip)
    assert ok == p.HelloOk(
        req=3,
        node=ME.node,
        name="me",
        files=2,
        port=4747,
        inc=ME.inc,
        peers=gossip,
        features=("list",),  # it answers list requests
    )
    assert responder.answer(p.Ping(req=4), INDEX, ME) == p.Pong(req=4, files=2)


def test_search_get_info_and_not_found() -> None:
    search = p.Search(req=5, qid=b"q" * 16, kind=p.QueryKind.GLOB, pattern="*.txt", icase=False)
    lookup = responder.answer(search, INDEX, ME)
    # The index is asked by the shell (a glob may scan a large index: off the event loop).
    assert isinstance(lookup, responder.Lookup) and lookup.query.pattern == "*.txt"
    hits = lookup.hits(INDEX.search(lookup.query))
    assert hits.req == 5 and hits.qid == search.qid and [h.name for h in hits.hits] == ["small.txt"]
    # A get-info is answered once the shell has checked the file is still what was indexed.
    check = responder.answer(p.GetInfo(req=6, cid=SMALL.cid), INDEX, ME)
    assert isinstance(check, responder.InfoCheck) and check.entry is SMALL
    assert check.info() == SMALL.info(6)
    changed = check.changed("changed")
    assert changed.code is p.ErrorCode.NOT_FOUND and changed.req == 6
    assert "small.txt changed since it was indexed" in changed.reason
    missing = responder.answer(p.GetInfo(req=7, cid=b"z" * 32), INDEX, ME)
    assert isinstance(missing, p.Error) and missing.code is p.ErrorCode.NOT_FOUND
    assert missing.req == 7 and p.cid_to_text(b"z" * 32) in missing.reason


def test_get_chunks_names_the_bytes_to_read() -> None:
    span = responder.answer(p.GetChunks(req=8, cid=SMALL.cid, index=2, count=2), INDEX, ME)
    assert isinstance(span, responder.ReadSpan)
    assert (span.entry, span.offset, span.length) == (SMALL, 2 * CS, CS + 5)  # the short tail
    reply = span.chunks(b"d" * (CS + 5))
    assert (reply.req, reply.cid, reply.index, reply.count) == (8, SMALL.cid, 2, 2)


@pytest.mark.parametrize(
    ("index", "count", "code", "reason"),
    [
        (3, 2, p.ErrorCode.BAD_REQUEST, "chunk out of range"),  # past the end
        (4, 1, p.ErrorCode.BAD_REQUEST, "chunk out of range"),
        (0, 5, p.ErrorCode.TOO_LARGE, "ask for fewer chunks"),  # 5 x 4 MiB > MAX_PAYLOAD
        (8, 5, p.ErrorCode.BAD_REQUEST, "chunk out of range"),  # both: out of range wins
    ],
)
def test_get_chunks_out_of_range_or_too_large(
    index: int, count: int, code: p.ErrorCode, reason: str
) -> None:
    file = SMALL if count == 2 or index == 4 else BIG
    err = responder.answer(p.GetChunks(req=9, cid=file.cid, index=index, count=count), INDEX, ME)
    assert err == p.Error(req=9, code=code, reason=reason)


def test_a_failed_read_is_not_found_when_the_file_changed_else_internal() -> None:
    span = responder.answer(p.GetChunks(req=10, cid=SMALL.cid, index=0), INDEX, ME)
    assert isinstance(span, responder.ReadSpan)
    gone = span.unreadable("changed", gone=True)
    assert gone.code is p.ErrorCode.NOT_FOUND and "small.txt changed since it was" in gone.reason
    passing = span.unreadable("Input/output error", gone=False)
    assert passing.code is p.ErrorCode.INTERNAL and "Input/output error" in passing.reason


def test_a_list_is_answered_with_a_page_and_a_cursor() -> None:
    from zwalk.store.index import FileEntry, Index

    index = Index(
        FileEntry(
            root="/r",
            rel=f"r/{n}",
            size=1,
            mtime_ns=0,
            cid=bytes([i]) * 32,
            chunk_size=CS,
            hashes=b"",
        )  # fmt: skip
        for i, n in enumerate(["a.txt", "b.iso", "c.iso", "d.iso"])
    )
    listing = responder.answer(p.List(req=12, pattern="*.iso", limit=2), index, ME)
    assert isinstance(listing, responder.Listing) and listing.query is not None
    found, cursor = index.page(after=listing.msg.after, query=listing.query, limit=2)
    page = listing.page(found, cursor, len(index))
    assert [h.path for h in page.files] == ["r/b.iso", "r/c.iso"] and page.next == "r/c.iso"
    assert page.req == 12 and page.total == 4
    more = responder.answer(p.List(req=13, after=page.next, pattern="*.iso"), index, ME)
    assert isinstance(more, responder.Listing)
    found, cursor = index.page(after=more.msg.after, query=more.query, limit=more.msg.limit)
    assert [e.rel for e in found] == ["r/d.iso"] and cursor == ""
    everything = responder.answer(p.List(req=14), index, ME)
    assert isinstance(everything, responder.Listing) and everything.query is None


def test_anything_else_is_a_bad_request() -> None:
    err = responder.answer(p.WalkOk(req=11), INDEX, ME)
    assert isinstance(err, p.Error) and err.code is p.ErrorCode.BAD_REQUEST and err.req == 11


def test_a_local_find_for_more_walkers_than_can_be_numbered_runs_with_half() -> None:
    from zwalk.net.control import find_options

    find = p.Find(
        req=1, token=b"t" * 16, kind=p.QueryKind.NAME, pattern="x", icase=False,
        strategy=p.Strategy.KWALK, walkers=p.MAX_WALKERS, initial=p.MAX_WALKERS, ttl=8,
        check_every=8, timeout_ms=5000, want=1,
    )  # fmt: skip
    opts = find_options(find)
    assert (opts.walkers, opts.initial) == (p.MAX_WALKERS // 2, p.MAX_WALKERS // 2)
    assert 2 * opts.walkers - 1 <= p.MAX_WALKERS - 1  # every walker gets a number
    assert find_options(replace(find, walkers=16, initial=1)).walkers == 16
