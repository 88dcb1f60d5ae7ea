# The wire protocol: message types, their CBOR encoding and the validation of every field.
#
# Sans-IO: this module never touches a socket. `encode` turns a message into ZeroMQ frames,
# `decode` turns frames from a peer into a message or raises ProtocolError -- and nothing else,
# whatever the bytes. Every bound a peer could abuse is a named constant below; docs/PROTOCOL.md
# states the same rules and must change together with this file.
from __future__ import annotations

import enum
import ipaddress
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Self

import cbor2

PROTOCOL_VERSION = 1

ID_BYTES = 16  # node ids and query ids
HASH_BYTES = 32  # BLAKE3 digest
MAX_HEADER = 8 * 1024 * 1024  # one CBOR header frame
MAX_PAYLOAD = 16 * 1024 * 1024  # one raw chunk-data frame
MAX_FRAME = max(MAX_HEADER, MAX_PAYLOAD)  # what ZMQ_MAXMSGSIZE is set to
MIN_CHUNK_SIZE = 16 * 1024
MAX_CHUNK_SIZE = 16 * 1024 * 1024
MAX_CHUNKS = 131_072  # chunk hashes in one file-info: 4 MiB of hashes
MAX_FILE_SIZE = MAX_CHUNKS * MAX_CHUNK_SIZE  # 2 TiB
MAX_REQ_ID = 2**63 - 1
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
MAX_PATTERN_BYTES = 1024
MAX_TEXT_BYTES = 1024  # display names, error reasons
MAX_REASON_CHARS = 200  # our own error reasons; fits MAX_TEXT_BYTES in any UTF-8
MAX_HITS = 1000  # hits in one reply
MAX_COUNT = 1_000_000_000  # file counts and the like
MAX_GOSSIP = 64  # peers named in one hello-ok
MAX_TTL = 255  # hops a walk may make
MAX_PATH = 256  # node ids in a walk's path: its own visits and what it was told to avoid
MAX_WALKERS = 2048  # walker numbers: twice the most walkers a search may have
MAX_TRACE = 4096  # hops reported in one find-ok
MAX_MEMBERS = 1024  # rows in one status-ok (a full one stays far below MAX_HEADER)
MAX_HOST_BYTES = 253  # a DNS name at most
MAX_DETAIL_BYTES = 800  # how a peer was learned (interface, via whom)
MAX_TIME_MS = 2**53  # Unix times in ms
INC_BYTES = 8  # incarnation: random per process run, so a restart is told from a reconnect
TOKEN_BYTES = 16
BROADCAST = "255.255.255.255"
THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")  # noqa: S104 -- RFC 1122 "this host"


class ProtocolError(Exception):
    """Anything malformed, out of bounds or unsupported. `code` is what goes back to the peer."""

    def __init__(self, reason: str, code: ErrorCode | None = None, req: int | None = None) -> None:
        # Reasons are echoed to the peer in an error message, whose text is bounded.
        reason = reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 1] + "…"
        super().__init__(reason)
        self.reason = reason
        self.code = code or ErrorCode.BAD_REQUEST
        self.req = req  # the request id, when it could be read, so an error reply can name it


class ErrorCode(enum.StrEnum):
    BAD_REQUEST = "bad-request"
    UNSUPPORTED_VERSION = "unsupported-version"
    NOT_FOUND = "not-found"
    TOO_LARGE = "too-large"
    BUSY = "busy"
    INTERNAL = "internal"


class QueryKind(enum.StrEnum):
    NAME = "name"
    GLOB = "glob"
    CID = "cid"


# --- field checks -------------------------------------------------------------------------
# Each check takes the decoded value and returns it (possibly converted) or raises ProtocolError.
Check = Callable[[Any], Any]


def _fail(what: str) -> ProtocolError:
    return ProtocolError(what)


def uint(maximum: int, minimum: int = 0) -> Check:
    def check(v: Any) -> int:
        # bool is an int subclass in Python but a distinct CBOR type: refuse it.
        if type(v) is not int or not minimum <= v <= maximum:
            raise _fail(f"expected an integer in [{minimum}, {maximum}]")
        return v

    return check


def boolean(v: Any) -> bool:
    if type(v) is not bool:
        raise _fail("expected a boolean")
    return v


def text(max_bytes: int, min_chars: int = 0) -> Check:
    def check(v: Any) -> str:
        if type(v) is not str:
            raise _fail("expected a text string")
        try:
            encoded = v.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: not representable as CBOR text
            raise _fail("text is not valid Unicode") from None
        if len(encoded) > max_bytes or len(v) < min_chars:
            raise _fail(f"text length outside [{min_chars}, {max_bytes} bytes]")
        return v

    return check


def blob(exact: int | None = None, max_len: int | None = None) -> Check:
    def check(v: Any) -> bytes:
        if type(v) is not bytes:
            raise _fail("expected a byte string")
        if exact is not None and len(v) != exact:
            raise _fail(f"expected {exact} bytes, got {len(v)}")
        if max_len is not None and len(v) > max_len:
            raise _fail(f"byte string longer than {max_len}")
        return v

    return check


def choice(enum_type: type[enum.StrEnum]) -> Check:
    def check(v: Any) -> enum.StrEnum:
        if isinstance(v, enum_type):
            return v
        if type(v) is not str:
            raise _fail("expected a text string")
        try:
            return enum_type(v)
        except ValueError:
            raise _fail(f"unknown value {v[:40]!r}") from None

    return check


def _bad_name_char(c: str) -> bool:
    return c in "/\\\x7f" or ord(c) < 0x20


def file_name(v: Any) -> str:
    """A bare file name: one path component, no control characters. Names that a platform
    cannot store (such as `a:b` on Windows) are mapped to a local name by the downloader."""
    v = text(MAX_NAME_BYTES, min_chars=1)(v)
    if v in (".", "..") or any(_bad_name_char(c) for c in v):
        raise _fail("file name must be a single path component without control characters")
    return v


def rel_path(v: Any) -> str:
    """A relative POSIX path, informational only: it is shown, never used to write."""
    v = text(MAX_PATH_BYTES, min_chars=1)(v)
    if v.startswith("/") or "\\" in v or any(ord(c) < 0x20 or c == "\x7f" for c in v):
        raise _fail("path must be relative, '/'-separated, without control characters")
    if any(part in ("", ".", "..") for part in v.split("/")):
        raise _fail("path must not contain empty, '.' or '..' components")
    return v


# --- messages -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """Base of every message. `req` pairs a reply with its request (0 is a valid id)."""

    TYPE: ClassVar[str] = ""
    SCHEMA: ClassVar[dict[str, Check]] = {}
    # Keys added to version 1 after its first draft: a message without one gets this value
    # (section 3 of docs/PROTOCOL.md); every other key is required.
    DEFAULTS: ClassVar[dict[str, Any]] = {}

    req: int

    def __post_init__(self) -> None:
        # Locally built messages obey the same rules as received ones.
        uint(MAX_REQ_ID)(self.req)
        for name, check in self.SCHEMA.items():
            check(getattr(self, name))
        self.validate()

    def validate(self) -> None:
        """Cross-field rules, beyond each field's own check."""

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {"v": PROTOCOL_VERSION, "t": self.TYPE, "req": self.req}
        for name in self.SCHEMA:
            body[name] = _to_wire_value(getattr(self, name))
        return body


def _to_wire_value(v: Any) -> Any:
    if isinstance(v, Struct):
        return {name: _to_wire_value(getattr(v, name)) for name in v.SCHEMA}
    if isinstance(v, list | tuple):
        return [_to_wire_value(x) for x in v]
    if isinstance(v, enum.StrEnum):
        return str(v)
    return v


@dataclass(frozen=True, slots=True, kw_only=True)
class Struct:
    """A record nested inside a message (a hit, a peer reference), validated like one."""

    SCHEMA: ClassVar[dict[str, Check]] = {}
    DEFAULTS: ClassVar[dict[str, Any]] = {}  # as for messages

    def __post_init__(self) -> None:
        for name, check in self.SCHEMA.items():
            check(getattr(self, name))

    @classmethod
    def from_wire(cls, v: Any) -> Self:
        if type(v) is not dict:
            raise _fail(f"{cls.__name__.lower()} must be a map")
        return cls(**_checked_fields(cls.SCHEMA, v, cls.DEFAULTS))


def struct_list(cls: type[Struct], max_items: int) -> Check:
    def check(v: Any) -> tuple[Struct, ...]:
        if type(v) not in (list, tuple):
            raise _fail(f"expected an array of {cls.__name__.lower()}s")
        if len(v) > max_items:
            raise _fail(f"more than {max_items} items")
        return tuple(x if isinstance(x, cls) else cls.from_wire(x) for x in v)

    return check


def text_list(max_bytes: int, max_items: int) -> Check:
    def check(v: Any) -> tuple[str, ...]:
        if type(v) not in (list, tuple):
            raise _fail("expected an array of text strings")
        if len(v) > max_items:
            raise _fail(f"more than {max_items} items")
        return tuple(text(max_bytes)(x) for x in v)

    return check


def optional(inner: Check) -> Check:
    def check(v: Any) -> Any:
        return None if v is None else inner(v)

    return check


def ipv4(v: Any) -> str:
    """A unicast IPv4 address in dotted form (no names: a peer must not make us resolve)."""
    v = text(15, min_chars=7)(v)
    try:
        addr = ipaddress.IPv4Address(v)
    except ValueError:
        raise _fail("expected an IPv4 address") from None
    if addr.is_multicast or addr.is_reserved or addr in THIS_NETWORK:  # 240/4 includes broadcast
        raise _fail("expected a unicast IPv4 address")
    return str(addr)


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
    """A peer one node tells another about (gossip)."""

    SCHEMA = {
        "node": blob(exact=ID_BYTES),
        "name": text(MAX_TEXT_BYTES),
        "host": ipv4,
        "port": uint(65535, minimum=1),
    }
    node: bytes
    name: str
    host: str
    port: int


def struct(cls: type[Struct]) -> Check:
    def check(v: Any) -> Struct:
        return v if isinstance(v, cls) else cls.from_wire(v)

    return check


@dataclass(frozen=True, slots=True, kw_only=True)
class Learned(Struct):
    how: str  # mdns, static, gossip, inbound
    detail: str

    SCHEMA = {"how": text(16, min_chars=1), "detail": text(MAX_DETAIL_BYTES)}


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberInfo(Struct):
    """One row of a node's membership table, as the local control endpoint reports it."""

    SCHEMA = {
        "node": optional(blob(exact=ID_BYTES)),
        "name": text(MAX_TEXT_BYTES),
        "host": text(MAX_HOST_BYTES, min_chars=1),
        "port": uint(65535),
        "version": optional(uint(MAX_COUNT)),
        "state": text(16, min_chars=1),
        "learned": struct_list(Learned, 4),
        "first_seen_ms": uint(2**53),
        "last_seen_ms": uint(2**53),
        "rtt_us": optional(uint(MAX_COUNT)),
        "files": uint(MAX_COUNT),
    }
    node: bytes | None
    name: str
    host: str
    port: int
    version: int | None
    state: str
    learned: tuple[Learned, ...]
    first_seen_ms: int
    last_seen_ms: int
    rtt_us: int | None
    files: int


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
    }
    node: bytes
    name: str
    files: int
    port: int
    inc: bytes
    peers: tuple[PeerRef, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping(Message):
    """Are you still there? Sent to a peer that has been quiet for a while."""

    TYPE = "ping"


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


class WalkStrategy(enum.StrEnum):
    KWALK = "kwalk"
    FLOOD = "flood"


class EndReason(enum.StrEnum):
    TTL = "ttl"
    DEAD_END = "dead-end"
    STOPPED = "stopped"
    FOUND = "found"


def node_ids(minimum: int, maximum: int) -> Check:
    def check(v: Any) -> tuple[bytes, ...]:
        if type(v) not in (list, tuple):
            raise _fail("expected an array of node ids")
        if not minimum <= len(v) <= maximum:
            raise _fail(f"expected {minimum} to {maximum} node ids")
        return tuple(blob(exact=ID_BYTES)(x) for x in v)

    return check


node_path = node_ids(1, MAX_PATH)


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
        "strategy": choice(WalkStrategy),
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
    strategy: WalkStrategy
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Address(Struct):
    """A peer endpoint a local user named (an IPv4 address or a host name, and a port)."""

    SCHEMA = {"host": text(MAX_HOST_BYTES, min_chars=1), "port": uint(65535, minimum=1)}
    host: str
    port: int


MAX_NAMED = 64  # peers a control request may name


@dataclass(frozen=True, slots=True, kw_only=True)
class Status(Message):
    """Local control only: a client run by the same user asks the running node for its state,
    after the node has met the peers it names (if any)."""

    TYPE = "status"
    SCHEMA = {"token": blob(exact=TOKEN_BYTES), "peers": struct_list(Address, MAX_NAMED)}
    DEFAULTS = {"peers": ()}
    token: bytes
    peers: tuple[Address, ...] = ()


MAX_FAILURES = 64  # rows in one status-ok's `failed`


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure(Struct):
    """A peer a node tried and could not reach, or lost: where, who, how it was learned, why."""

    SCHEMA = {
        "host": text(MAX_HOST_BYTES, min_chars=1),
        "port": uint(65535),
        "node": optional(blob(exact=ID_BYTES)),
        "name": text(MAX_TEXT_BYTES),
        "learned": struct_list(Learned, 4),
        "reason": text(MAX_TEXT_BYTES),
        "ago_ms": uint(MAX_TIME_MS),
    }
    host: str
    port: int
    node: bytes | None
    name: str
    learned: tuple[Learned, ...]
    reason: str
    ago_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusOk(Message):
    TYPE = "status-ok"
    SCHEMA = {
        "node": blob(exact=ID_BYTES),
        "name": text(MAX_TEXT_BYTES),
        "endpoints": struct_list(PeerRef, 16),
        "files": uint(MAX_COUNT),
        "bytes": uint(2**63 - 1),
        "members": struct_list(MemberInfo, MAX_MEMBERS),
        "sent": uint(2**63 - 1),
        "failed": struct_list(Failure, MAX_FAILURES),
    }
    DEFAULTS = {"failed": ()}
    node: bytes
    name: str
    endpoints: tuple[PeerRef, ...]
    files: int
    bytes: int
    members: tuple[MemberInfo, ...]
    sent: int = 0  # query messages this node sent: walk copies, check-backs, probe searches
    failed: tuple[Failure, ...] = ()  # peers it could not reach or lost, latest first


@dataclass(frozen=True, slots=True, kw_only=True)
class Holder(Struct):
    SCHEMA = {
        "node": blob(exact=ID_BYTES),
        "name": text(MAX_TEXT_BYTES),
        "host": text(MAX_HOST_BYTES, min_chars=1),
        "port": uint(65535),
        "path": rel_path,
    }
    node: bytes
    name: str
    host: str
    port: int
    path: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FoundFile(Struct):
    SCHEMA = {
        "name": file_name,
        "size": uint(MAX_FILE_SIZE),
        "cid": blob(exact=HASH_BYTES),
        "holders": struct_list(Holder, MAX_GOSSIP),
        "mtime_ms": uint(MAX_TIME_MS),
    }
    DEFAULTS = {"mtime_ms": 0}
    name: str
    size: int
    cid: bytes
    holders: tuple[Holder, ...]
    mtime_ms: int = 0  # the newest a holder reported


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceHop(Struct):
    SCHEMA = {
        "node": optional(blob(exact=ID_BYTES)),
        "name": text(MAX_TEXT_BYTES),
        "latency_us": uint(MAX_COUNT * 1000),
        "verdict": text(16, min_chars=1),
        "hits": uint(MAX_HITS),
    }
    node: bytes | None
    name: str
    latency_us: int
    verdict: str
    hits: int


class SearchStrategy(enum.StrEnum):
    KWALK = "kwalk"
    FLOOD = "flood"
    PROBE = "probe"


@dataclass(frozen=True, slots=True, kw_only=True)
class Find(Message):
    """Local control only: search the LAN from the running node."""

    TYPE = "find"
    SCHEMA = {
        "token": blob(exact=TOKEN_BYTES),
        "kind": choice(QueryKind),
        "pattern": text(MAX_PATTERN_BYTES, min_chars=1),
        "icase": boolean,
        "strategy": choice(SearchStrategy),
        "walkers": uint(MAX_WALKERS, minimum=1),
        "initial": uint(MAX_WALKERS, minimum=1),
        "ttl": uint(MAX_TTL, minimum=1),
        "check_every": uint(MAX_TTL),
        "timeout_ms": uint(3_600_000, minimum=1),
        "want": uint(MAX_HITS, minimum=1),
        "peers": struct_list(Address, MAX_NAMED),
        "linger_ms": uint(3_600_000),
    }
    DEFAULTS = {"peers": (), "linger_ms": 0}
    token: bytes
    kind: QueryKind
    pattern: str
    icase: bool
    strategy: SearchStrategy
    walkers: int
    initial: int
    ttl: int
    check_every: int
    timeout_ms: int
    want: int
    peers: tuple[Address, ...] = ()  # named by the user: met first, and searched too
    linger_ms: int = 0  # end this long after the first hit, whatever `want` (0: no such end)

    def validate(self) -> None:
        if self.kind is QueryKind.CID and not _is_cid_text(self.pattern):
            raise _fail("a cid query's pattern must be 'b3:' and 64 lowercase hex digits")


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalHit(Struct):
    """A file that matches a find and that the searching node shares itself."""

    SCHEMA = {
        "name": file_name,
        "size": uint(MAX_FILE_SIZE),
        "cid": blob(exact=HASH_BYTES),
        "path": text(MAX_PATH_BYTES, min_chars=1),  # where it is on this host (absolute)
    }
    name: str
    size: int
    cid: bytes
    path: str


MAX_LOCAL_HITS = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class FindOk(Message):
    TYPE = "find-ok"
    SCHEMA = {
        "found": struct_list(FoundFile, MAX_HITS),
        "messages": uint(MAX_COUNT),
        "hops": uint(MAX_COUNT),
        "first_hit_hops": optional(uint(MAX_COUNT)),
        "visited": uint(MAX_COUNT),
        "known": uint(MAX_COUNT),
        "elapsed_us": uint(MAX_COUNT * 1000),
        "trace": struct_list(TraceHop, MAX_TRACE),
        "errors": text_list(MAX_TEXT_BYTES, MAX_FAILURES),
        "local": struct_list(LocalHit, MAX_LOCAL_HITS),
    }
    DEFAULTS = {"errors": (), "local": ()}
    found: tuple[FoundFile, ...]
    messages: int
    hops: int
    first_hit_hops: int | None
    visited: int
    known: int
    elapsed_us: int
    trace: tuple[TraceHop, ...]
    errors: tuple[str, ...] = ()  # peers that could not be asked, and why
    local: tuple[LocalHit, ...] = ()  # matches among the node's own shares


MESSAGE_TYPES: dict[str, type[Message]] = {
    m.TYPE: m
    for m in (
        Hello,
        HelloOk,
        Ping,
        Pong,
        Bye,
        Walk,
        WalkOk,
        WalkHits,
        WalkCheck,
        WalkGo,
        WalkEnd,
        Search,
        Hits,
        GetInfo,
        FileInfo,
        GetChunks,
        Chunks,
        Error,
        Status,
        StatusOk,
        Find,
        FindOk,
    )
}
REQUESTS = (Hello, Ping, Search, Walk, WalkCheck, GetInfo, GetChunks)  # a peer may ask these
NOTIFICATIONS = (Bye, WalkHits, WalkEnd)  # a peer may send these without expecting a reply
CONTROL_REQUESTS = (Status, Find)  # what the local control endpoint answers


# --- encoding -------------------------------------------------------------------------------


def encode(msg: Message) -> list[bytes | memoryview]:
    """The frames to send for `msg`: a CBOR header, plus the raw payload for chunk data."""
    header = cbor2.dumps(msg.to_wire())
    if len(header) > MAX_HEADER:
        raise ProtocolError("message header too large", ErrorCode.TOO_LARGE)
    if isinstance(msg, Chunks):
        return [header, msg.payload]
    return [header]


def check_wellformed(data: bytes, max_depth: int = 8) -> None:
    """Walk the CBOR item structure without building it (RFC 8949 section 3).

    Accepts exactly one item using only what this protocol uses: integers, byte and text strings,
    arrays, maps, false, true and null, all definite-length, nested at most `max_depth` deep.
    Tags, floats, other simple values, indefinite lengths and trailing bytes are refused here, so
    cbor2 never runs one of its tag decoders on peer input."""
    pos, end = 0, len(data)
    pending = [1]  # items still to read at each open level
    while pending:
        if pending[-1] == 0:
            pending.pop()
            continue
        pending[-1] -= 1
        if pos >= end:
            raise ProtocolError("truncated CBOR")
        initial = data[pos]
        pos += 1
        major, info = initial >> 5, initial & 0x1F
        if major == 7:
            if info not in (20, 21, 22):  # false, true, null
                raise ProtocolError("CBOR floats and simple values are not part of this protocol")
            continue
        if info < 24:
            arg = info
        elif info <= 27:
            width = 1 << (info - 24)
            if pos + width > end:
                raise ProtocolError("truncated CBOR")
            arg = int.from_bytes(data[pos : pos + width], "big")
            pos += width
        else:
            raise ProtocolError("indefinite-length or reserved CBOR item")
        if major in (0, 1):
            continue
        if major in (2, 3):
            if arg > end - pos:
                raise ProtocolError("truncated CBOR string")
            pos += arg
            continue
        if major == 6:
            raise ProtocolError("CBOR tags are not part of this protocol")
        items = arg if major == 4 else 2 * arg
        if items > end - pos:  # every item takes at least one byte
            raise ProtocolError("CBOR container larger than the message")
        pending.append(items)
        if len(pending) > max_depth + 1:
            raise ProtocolError("CBOR nested too deeply")
    if pos != end:
        raise ProtocolError("bytes after the CBOR message")


def decode(frames: Sequence[bytes | memoryview]) -> Message:
    """Parse the frames of one message from a peer. Raises only ProtocolError."""
    if not 1 <= len(frames) <= 2:
        raise ProtocolError(f"expected 1 or 2 frames, got {len(frames)}")
    header = frames[0]
    if len(header) > MAX_HEADER:
        raise ProtocolError("message header too large", ErrorCode.TOO_LARGE)
    data = bytes(header)
    check_wellformed(data)
    try:
        body = cbor2.loads(data, max_depth=8, allow_indefinite=False, allow_duplicate_keys=False)
    except Exception as e:  # cbor2 raises several types on malformed input; all mean the same
        raise ProtocolError(f"malformed CBOR: {e}") from None
    if type(body) is not dict:
        raise ProtocolError("message must be a CBOR map")
    req = body.get("req")
    req = req if type(req) is int and 0 <= req <= MAX_REQ_ID else None
    try:
        return _decode_body(body, frames)
    except ProtocolError as e:
        e.req = req
        raise
    except Exception as e:  # a bug in a check must still not escape as anything else
        raise ProtocolError(f"invalid message: {e}", req=req) from None


def _decode_body(body: dict[Any, Any], frames: Sequence[bytes | memoryview]) -> Message:
    version = body.get("v")
    if type(version) is not int:
        raise ProtocolError("missing protocol version")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {version} is not supported (this node speaks {PROTOCOL_VERSION})",
            ErrorCode.UNSUPPORTED_VERSION,
        )
    mtype = body.get("t")
    cls = MESSAGE_TYPES.get(mtype) if type(mtype) is str else None
    if cls is None:
        raise ProtocolError(f"unknown message type {str(mtype)[:40]!r}")
    rest = {k: v for k, v in body.items() if k not in ("v", "t")}
    schema = {"req": uint(MAX_REQ_ID), **cls.SCHEMA}
    values = _checked_fields(schema, rest, cls.DEFAULTS)
    if cls is Chunks:
        if len(frames) != 2:
            raise ProtocolError("chunks must carry a payload frame")
        values["payload"] = frames[1]
    elif len(frames) != 1:
        raise ProtocolError(f"{cls.TYPE} takes no payload frame")
    return cls(**values)


def _checked_fields(
    schema: dict[str, Check], body: dict[Any, Any], defaults: dict[str, Any]
) -> dict[str, Any]:
    # Unknown keys are ignored (room for additive changes); missing ones are errors, but for
    # those added later, which take their default.
    out: dict[str, Any] = {}
    for name, check in schema.items():
        if name not in body:
            if name in defaults:
                out[name] = defaults[name]
                continue
            raise ProtocolError(f"missing field {name!r}")
        try:
            out[name] = check(body[name])
        except ProtocolError as e:
            raise ProtocolError(f"field {name!r}: {e.reason}", e.code) from None
    return out


# --- content ids ----------------------------------------------------------------------------

CID_PREFIX = "b3:"


def _is_cid_text(s: str) -> bool:
    hexpart = s[len(CID_PREFIX) :]
    return (
        s.startswith(CID_PREFIX)
        and len(hexpart) == 2 * HASH_BYTES
        and all(c in "0123456789abcdef" for c in hexpart)
    )


def cid_to_text(cid: bytes) -> str:
    return CID_PREFIX + cid.hex()


def cid_from_text(s: str) -> bytes:
    s = s.strip().lower()
    if not _is_cid_text(s):
        raise ValueError(f"not a content id (want b3: and 64 hex digits): {s[:80]!r}")
    return bytes.fromhex(s[len(CID_PREFIX) :])


def message_fields(msg: Message) -> dict[str, Any]:
    """The message's fields by name (for logs and tests)."""
    return {f.name: getattr(msg, f.name) for f in fields(msg)}
