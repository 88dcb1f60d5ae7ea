# The messages peers send each other (docs/PROTOCOL.md section 6.1-6.20), each a frozen dataclass
# whose SCHEMA checks every field, whether built here or decoded from a peer.
from __future__ import annotations

import math
from dataclasses import dataclass, field

from zwalk.core.fields import (
    WALK_STRATEGIES,
    Check,
    EndReason,
    ErrorCode,
    Message,
    ProtocolError,
    QueryKind,
    Strategy,
    Struct,
    _fail,
    _is_cid_text,
    blob,
    boolean,
    choice,
    file_name,
    ipv4,
    node_ids,
    node_path,
    optional,
    rel_path,
    struct,
    struct_list,
    text,
    text_list,
    uint,
)
from zwalk.core.limits import (
    HASH_BYTES,
    ID_BYTES,
    INC_BYTES,
    KEY_BYTES,
    MAX_CHUNK_SIZE,
    MAX_CHUNKS,
    MAX_COUNT,
    MAX_FEATURE_BYTES,
    MAX_FEATURES,
    MAX_FILE_SIZE,
    MAX_GOSSIP,
    MAX_HITS,
    MAX_PATH,
    MAX_PATTERN_BYTES,
    MAX_PAYLOAD,
    MAX_TEXT_BYTES,
    MAX_TIME_MS,
    MAX_TTL,
    MAX_WALKERS,
    MIN_CHUNK_SIZE,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Hit(Struct):
    """One shared file that matches a query, as the holder describes it."""

    SCHEMA = {
        "name": file_name,
        "path": rel_path,
        "size": uint(MAX_FILE_SIZE),
        "cid": blob(exact=HASH_BYTES),
        "mtime_ms": uint(MAX_TIME_MS),
    }
    DEFAULTS = {"mtime_ms": 0}
    name: str
    path: str
    size: int
    cid: bytes
    mtime_ms: int = 0  # last modified, Unix time in ms (0: unknown)


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerRef(Struct):
    """A peer one node tells another about (gossip, a walk's origin), with the public key that
    its id must be the hash of: the receiver connects with that key, and CurveZMQ proves it."""

    SCHEMA = {
        "node": blob(exact=ID_BYTES),
        "name": text(MAX_TEXT_BYTES),
        "host": ipv4,
        "port": uint(65535, minimum=1),
        "key": blob(exact=KEY_BYTES),
    }
    node: bytes
    name: str
    host: str
    port: int
    key: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello(Message):
    """First message to a peer: who we are, where we listen, which run of us this is."""

    TYPE = "hello"
    SCHEMA = {
        "node": blob(exact=ID_BYTES),
        "name": text(MAX_TEXT_BYTES),
        "port": uint(65535),  # our ROUTER's port; 0 when we do not listen
        "inc": blob(exact=INC_BYTES),
    }
    node: bytes
    name: str
    port: int
    inc: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class HelloOk(Message):
    TYPE = "hello-ok"
    SCHEMA = {
        "node": blob(exact=ID_BYTES),
        "name": text(MAX_TEXT_BYTES),
        "files": uint(MAX_COUNT),
        "port": uint(65535),
        "inc": blob(exact=INC_BYTES),
        "peers": struct_list(PeerRef, MAX_GOSSIP),
        "features": text_list(MAX_FEATURE_BYTES, MAX_FEATURES),
    }
    DEFAULTS = {"features": ()}
    node: bytes
    name: str
    files: int
    port: int
    inc: bytes
    peers: tuple[PeerRef, ...] = ()
    features: tuple[str, ...] = ()  # the optional requests it answers (section 3)


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping(Message):
    """Are you still there? Sent to a peer that has been quiet for a while, and to every peer
    when the sender's share index changed (`files`: how many files it shares now)."""

    TYPE = "ping"
    SCHEMA = {"files": optional(uint(MAX_COUNT))}
    DEFAULTS = {"files": None}
    files: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Pong(Message):
    TYPE = "pong"
    SCHEMA = {"files": uint(MAX_COUNT)}
    files: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Bye(Message):
    """We are leaving. One-way: it gets no reply."""

    TYPE = "bye"


@dataclass(frozen=True, slots=True, kw_only=True)
class Search(Message):
    """Ask a peer whether it holds files matching a query."""

    TYPE = "search"
    SCHEMA = {
        "qid": blob(exact=ID_BYTES),
        "kind": choice(QueryKind),
        "pattern": text(MAX_PATTERN_BYTES, min_chars=1),
        "icase": boolean,
        "limit": uint(MAX_HITS, minimum=1),
    }
    qid: bytes
    kind: QueryKind
    pattern: str
    icase: bool = False
    limit: int = 100

    def validate(self) -> None:
        if self.kind is QueryKind.CID and not _is_cid_text(self.pattern):
            raise _fail("a cid query's pattern must be 'b3:' and 64 lowercase hex digits")


@dataclass(frozen=True, slots=True, kw_only=True)
class Hits(Message):
    """Reply to search: the matching files (possibly none)."""

    TYPE = "hits"
    SCHEMA = {"qid": blob(exact=ID_BYTES), "hits": struct_list(Hit, MAX_HITS)}
    qid: bytes
    hits: tuple[Hit, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class GetInfo(Message):
    """Ask for a file's size, chunk size and chunk hashes."""

    TYPE = "get-info"
    SCHEMA = {"cid": blob(exact=HASH_BYTES)}
    cid: bytes


def chunk_count(size: int, chunk_size: int) -> int:
    return math.ceil(size / chunk_size)


@dataclass(frozen=True, slots=True, kw_only=True)
class FileInfo(Message):
    """Reply to get-info. `hashes` is the concatenation of each chunk's 32-byte BLAKE3."""

    TYPE = "file-info"
    SCHEMA = {
        "cid": blob(exact=HASH_BYTES),
        "size": uint(MAX_FILE_SIZE),
        "chunk_size": uint(MAX_CHUNK_SIZE, minimum=MIN_CHUNK_SIZE),
        "hashes": blob(max_len=MAX_CHUNKS * HASH_BYTES),
    }
    cid: bytes
    size: int
    chunk_size: int
    hashes: bytes

    def validate(self) -> None:
        n = chunk_count(self.size, self.chunk_size)
        if n > MAX_CHUNKS:
            raise _fail(f"file would have {n} chunks, more than {MAX_CHUNKS}")
        if len(self.hashes) != n * HASH_BYTES:
            raise _fail(f"expected {n} chunk hashes for this size and chunk size")

    def chunk_hash(self, index: int) -> bytes:
        return self.hashes[index * HASH_BYTES : (index + 1) * HASH_BYTES]


@dataclass(frozen=True, slots=True, kw_only=True)
class GetChunks(Message):
    """Ask for `count` consecutive chunks starting at `index`; they come back in one frame."""

    TYPE = "get-chunks"
    SCHEMA = {
        "cid": blob(exact=HASH_BYTES),
        "index": uint(MAX_CHUNKS - 1),
        "count": uint(MAX_PAYLOAD // MIN_CHUNK_SIZE, minimum=1),
    }
    cid: bytes
    index: int
    count: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Chunks(Message):
    """Reply to get-chunks. The data travels as a second, raw frame, never inside CBOR."""

    TYPE = "chunks"
    SCHEMA = {
        "cid": blob(exact=HASH_BYTES),
        "index": uint(MAX_CHUNKS - 1),
        "count": uint(MAX_PAYLOAD // MIN_CHUNK_SIZE, minimum=1),
    }
    cid: bytes
    index: int
    count: int
    # Not part of the CBOR header; bytes, or a zero-copy buffer from the socket or an mmap.
    payload: bytes | memoryview = field(default=b"", repr=False, compare=False)

    def validate(self) -> None:
        if len(self.payload) > MAX_PAYLOAD:
            raise ProtocolError("chunk payload too large", ErrorCode.TOO_LARGE)


@dataclass(frozen=True, slots=True, kw_only=True)
class Error(Message):
    """Reply to any request that could not be served."""

    TYPE = "error"
    SCHEMA = {"code": choice(ErrorCode), "reason": text(MAX_TEXT_BYTES)}
    code: ErrorCode
    reason: str


WALK_STATE: dict[str, Check] = {
    "qid": blob(exact=ID_BYTES),
    "walker": uint(MAX_WALKERS - 1),
    "hops": uint(MAX_TTL),
    "path": node_path,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Walk(Message):
    """A query copy handed to the next node of a walk (or of a flood). Acknowledged at once with
    walk-ok; the receiver then checks its index and passes the copy on by itself."""

    TYPE = "walk"
    SCHEMA = {
        **WALK_STATE,
        "strategy": choice(Strategy, only=WALK_STRATEGIES),
        "ttl": uint(MAX_TTL),
        "check_every": uint(MAX_TTL),
        "origin": struct(PeerRef),
        "kind": choice(QueryKind),
        "pattern": text(MAX_PATTERN_BYTES, min_chars=1),
        "icase": boolean,
        "stop_on_hit": boolean,
        "backtrack": boolean,
    }
    qid: bytes
    walker: int
    hops: int
    path: tuple[bytes, ...]
    strategy: Strategy
    ttl: int
    check_every: int
    origin: PeerRef
    kind: QueryKind
    pattern: str
    icase: bool = False
    stop_on_hit: bool = False
    backtrack: bool = False

    def validate(self) -> None:
        if self.path[0] != self.origin.node:
            raise _fail("a walk's path starts at its origin")
        if self.kind is QueryKind.CID and not _is_cid_text(self.pattern):
            raise _fail("a cid query's pattern must be 'b3:' and 64 lowercase hex digits")


@dataclass(frozen=True, slots=True, kw_only=True)
class WalkOk(Message):
    TYPE = "walk-ok"


@dataclass(frozen=True, slots=True, kw_only=True)
class WalkHits(Message):
    """To the searcher, one-way: what a node on the walk holds."""

    TYPE = "walk-hits"
    SCHEMA = {**WALK_STATE, "hits": struct_list(Hit, MAX_HITS)}
    qid: bytes
    walker: int
    hops: int
    path: tuple[bytes, ...]
    hits: tuple[Hit, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class WalkCheck(Message):
    """To the searcher: shall this walker go on? Answered with walk-go."""

    TYPE = "walk-check"
    SCHEMA = dict(WALK_STATE)
    qid: bytes
    walker: int
    hops: int
    path: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class WalkGo(Message):
    """Answer to walk-check; `avoid` names nodes other walkers visited, to be skipped."""

    TYPE = "walk-go"
    SCHEMA = {"go": boolean, "avoid": node_ids(0, MAX_PATH)}
    go: bool
    avoid: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class WalkEnd(Message):
    """To the searcher, one-way: this walker stopped here, and why."""

    TYPE = "walk-end"
    SCHEMA = {**WALK_STATE, "reason": choice(EndReason)}
    qid: bytes
    walker: int
    hops: int
    path: tuple[bytes, ...]
    reason: EndReason
