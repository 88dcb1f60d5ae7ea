# What the local control endpoint answers (docs/PROTOCOL.md sections 6.13, 6.14, 6.21, 6.22):
# `zwalk peers` and `zwalk find` asking the running node, never a peer.
from __future__ import annotations

from dataclasses import dataclass

from zwalk.core.fields import (
    Message,
    QueryKind,
    Strategy,
    Struct,
    _fail,
    _is_cid_text,
    blob,
    boolean,
    choice,
    file_name,
    optional,
    rel_path,
    struct_list,
    text,
    text_list,
    uint,
)
from zwalk.core.limits import (
    HASH_BYTES,
    ID_BYTES,
    KEY_BYTES,
    MAX_COUNT,
    MAX_DETAIL_BYTES,
    MAX_FAILURES,
    MAX_FILE_SIZE,
    MAX_GOSSIP,
    MAX_HITS,
    MAX_HOST_BYTES,
    MAX_LOCAL_HITS,
    MAX_MEMBERS,
    MAX_NAMED,
    MAX_PATH_BYTES,
    MAX_PATTERN_BYTES,
    MAX_SHARES,
    MAX_TEXT_BYTES,
    MAX_TIME_MS,
    MAX_TRACE,
    MAX_TTL,
    MAX_WALKERS,
    TOKEN_BYTES,
)
from zwalk.core.messages import (
    PeerRef,
)


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
        "key": blob(max_len=KEY_BYTES),
    }
    DEFAULTS = {"key": b""}
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
    key: bytes = b""  # the public key it proved or announced (empty: not known yet)


@dataclass(frozen=True, slots=True, kw_only=True)
class Address(Struct):
    """A peer endpoint a local user named (an IPv4 address or a host name, and a port)."""

    SCHEMA = {
        "host": text(MAX_HOST_BYTES, min_chars=1),
        "port": uint(65535, minimum=1),
        "key": blob(max_len=KEY_BYTES),
    }
    DEFAULTS = {"key": b""}
    host: str
    port: int
    key: bytes = b""  # the key it must prove, when the user gave one (else first use)


@dataclass(frozen=True, slots=True, kw_only=True)
class Status(Message):
    """Local control only: a client run by the same user asks the running node for its state,
    after the node has met the peers it names (if any)."""

    TYPE = "status"
    SCHEMA = {
        "token": blob(exact=TOKEN_BYTES),
        "peers": struct_list(Address, MAX_NAMED),
        "keep": boolean,
    }
    DEFAULTS = {"peers": (), "keep": False}
    token: bytes
    peers: tuple[Address, ...] = ()
    keep: bool = False  # `zwalk connect`: keep those that answered as static peers


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
        "hashed": uint(MAX_COUNT),
        "shares": text_list(MAX_PATH_BYTES, MAX_SHARES),
    }
    DEFAULTS = {"failed": (), "hashed": 0, "shares": ()}
    node: bytes
    name: str
    endpoints: tuple[PeerRef, ...]
    files: int
    bytes: int
    members: tuple[MemberInfo, ...]
    sent: int = 0  # query messages this node sent: walk copies, check-backs, probe searches
    failed: tuple[Failure, ...] = ()  # peers it could not reach or lost, latest first
    hashed: int = 0  # files it read and hashed since it started (the others came from its cache)
    shares: tuple[str, ...] = ()  # the folders it shares (absolute paths)


@dataclass(frozen=True, slots=True, kw_only=True)
class Holder(Struct):
    SCHEMA = {
        "node": blob(exact=ID_BYTES),
        "name": text(MAX_TEXT_BYTES),
        "host": text(MAX_HOST_BYTES, min_chars=1),
        "port": uint(65535),
        "path": rel_path,
        "key": blob(max_len=KEY_BYTES),
    }
    DEFAULTS = {"key": b""}
    node: bytes
    name: str
    host: str
    port: int
    path: str
    key: bytes = b""  # the public key the holder proved (empty: not known)


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


@dataclass(frozen=True, slots=True, kw_only=True)
class Find(Message):
    """Local control only: search the LAN from the running node."""

    TYPE = "find"
    SCHEMA = {
        "token": blob(exact=TOKEN_BYTES),
        "kind": choice(QueryKind),
        "pattern": text(MAX_PATTERN_BYTES, min_chars=1),
        "icase": boolean,
        "strategy": choice(Strategy),
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
    strategy: Strategy
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
