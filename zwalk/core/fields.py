# What every message is made of: the error a peer's bad input raises, the enums on the wire,
# the field checks, and the Message and Struct bases that run them. Sans-IO and pure.
from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from zwalk.core.limits import (
    HASH_BYTES,
    ID_BYTES,
    MAX_NAME_BYTES,
    MAX_PATH,
    MAX_PATH_BYTES,
    MAX_REASON_CHARS,
    MAX_REQ_ID,
    PROTOCOL_VERSION,
    THIS_NETWORK,
)


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


class Strategy(enum.StrEnum):
    """How a search goes through the network (one name for the wire, the policy and the CLI)."""

    KWALK = "kwalk"  # k random walkers that check back with the searcher
    FLOOD = "flood"  # every neighbour, up to a hop limit
    PROBE = "probe"  # ask peers directly, one at a time (no relaying)


WALK_STRATEGIES = (Strategy.KWALK, Strategy.FLOOD)  # what a relayed copy may use


class EndReason(enum.StrEnum):
    TTL = "ttl"  # the walker used up its hops
    DEAD_END = "dead-end"  # no neighbour left that this walker has not visited
    STOPPED = "stopped"  # the searcher said it has what it wanted
    FOUND = "found"  # it found a hit itself, and the searcher wants just one


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


def choice(enum_type: type[enum.StrEnum], only: tuple[enum.StrEnum, ...] = ()) -> Check:
    def check(v: Any) -> enum.StrEnum:
        if isinstance(v, enum_type):
            value = v
        elif type(v) is not str:
            raise _fail("expected a text string")
        else:
            try:
                value = enum_type(v)
            except ValueError:
                raise _fail(f"unknown value {v[:40]!r}") from None
        if only and value not in only:
            raise _fail(f"unknown value {str(v)[:40]!r}")
        return value

    return check


def _bad_name_char(c: str) -> bool:
    return c in "/\\\x7f" or ord(c) < 0x20


def file_name(v: Any) -> str:
    """A bare file name: one path component, no control characters. Names that a platform
    cannot store (such as `a:b` on Windows) are mapped to a local name by the downloader."""
    name: str = text(MAX_NAME_BYTES, min_chars=1)(v)
    if name in (".", "..") or any(_bad_name_char(c) for c in name):
        raise _fail("file name must be a single path component without control characters")
    return name


def rel_path(v: Any) -> str:
    """A relative POSIX path, informational only: it is shown, never used to write."""
    path: str = text(MAX_PATH_BYTES, min_chars=1)(v)
    if path.startswith("/") or "\\" in path or any(ord(c) < 0x20 or c == "\x7f" for c in path):
        raise _fail("path must be relative, '/'-separated, without control characters")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise _fail("path must not contain empty, '.' or '..' components")
    return path


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


def struct(cls: type[Struct]) -> Check:
    def check(v: Any) -> Struct:
        return v if isinstance(v, cls) else cls.from_wire(v)

    return check


def node_ids(minimum: int, maximum: int) -> Check:
    def check(v: Any) -> tuple[bytes, ...]:
        if type(v) not in (list, tuple):
            raise _fail("expected an array of node ids")
        if not minimum <= len(v) <= maximum:
            raise _fail(f"expected {minimum} to {maximum} node ids")
        return tuple(blob(exact=ID_BYTES)(x) for x in v)

    return check


node_path = node_ids(1, MAX_PATH)


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
