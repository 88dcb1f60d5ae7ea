# Messages to ZeroMQ frames and back. `decode` raises ProtocolError for anything a peer got
# wrong, and nothing else for a peer's bytes: an exception of another type is a bug of ours
# (DecoderBug), which the node logs with its traceback and answers as an internal error.
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cbor2

from zwalk.core.control_messages import (
    Find,
    FindOk,
    Status,
    StatusOk,
)
from zwalk.core.fields import (
    ErrorCode,
    Message,
    ProtocolError,
    _checked_fields,
    uint,
)
from zwalk.core.limits import (
    MAX_CONTROL_HEADER,
    MAX_CONTROL_ITEMS,
    MAX_HEADER,
    MAX_ITEMS,
    MAX_REQ_ID,
    PROTOCOL_VERSION,
)
from zwalk.core.list_messages import List, ListOk
from zwalk.core.messages import (
    Bye,
    Chunks,
    Error,
    FileInfo,
    GetChunks,
    GetInfo,
    Hello,
    HelloOk,
    Hits,
    Ping,
    Pong,
    Search,
    Walk,
    WalkCheck,
    WalkEnd,
    WalkGo,
    WalkHits,
    WalkOk,
)

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
        List,
        ListOk,
    )
}
# what a peer may ask
REQUESTS = (Hello, Ping, Search, Walk, WalkCheck, GetInfo, GetChunks, List)
NOTIFICATIONS = (Bye, WalkHits, WalkEnd)  # a peer may send these without expecting a reply
CONTROL_REQUESTS = (Status, Find)  # what the local control endpoint answers
CONTROL_MESSAGES = (Status, StatusOk, Find, FindOk)  # they may use MAX_CONTROL_HEADER


# --- encoding -------------------------------------------------------------------------------


class DecoderBug(Exception):
    """A bug of ours met while decoding (the cause is chained): answered as an internal error."""

    def __init__(self, req: int | None) -> None:
        super().__init__(f"decoder bug (request {req})")
        self.req = req


def encode(msg: Message) -> list[bytes | memoryview]:
    """The frames to send for `msg`: a CBOR header, plus the raw payload for chunk data."""
    header = cbor2.dumps(msg.to_wire())
    if len(header) > (MAX_CONTROL_HEADER if isinstance(msg, CONTROL_MESSAGES) else MAX_HEADER):
        raise ProtocolError("message header too large", ErrorCode.TOO_LARGE)
    if isinstance(msg, Chunks):
        return [header, msg.payload]
    return [header]


def check_wellformed(data: bytes, max_depth: int = 8, max_items: int = MAX_ITEMS) -> None:
    """Walk the CBOR item structure without building it (RFC 8949 section 3).

    Accepts exactly one item using only what this protocol uses: integers, byte and text strings,
    arrays, maps, false, true and null, all definite-length, nested at most `max_depth` deep.
    Tags, floats, other simple values, indefinite lengths and trailing bytes are refused here, so
    cbor2 never runs one of its tag decoders on peer input. The containers may declare at most
    `max_items` items in all: a header of millions of tiny items is refused at the first
    container that declares too many, before any of them is read or built."""
    pos, end = 0, len(data)
    pending = [1]  # items still to read at each open level
    declared = 1
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
        declared += items
        if declared > max_items:
            raise ProtocolError(f"more than {max_items} CBOR items", ErrorCode.TOO_LARGE)
        if items > end - pos:  # every item takes at least one byte
            raise ProtocolError("CBOR container larger than the message")
        pending.append(items)
        if len(pending) > max_depth + 1:
            raise ProtocolError("CBOR nested too deeply")
    if pos != end:
        raise ProtocolError("bytes after the CBOR message")


def decode(frames: Sequence[bytes | memoryview], *, control: bool = False) -> Message:
    """Parse the frames of one message from a peer (`control`: from the local control endpoint
    or its client, which allow the larger status and find reports). Raises ProtocolError for
    anything the sender got wrong, DecoderBug for a bug of ours."""
    if not 1 <= len(frames) <= 2:
        raise ProtocolError(f"expected 1 or 2 frames, got {len(frames)}")
    header = frames[0]
    if len(header) > (MAX_CONTROL_HEADER if control else MAX_HEADER):
        raise ProtocolError("message header too large", ErrorCode.TOO_LARGE)
    data = bytes(header)
    check_wellformed(data, max_items=MAX_CONTROL_ITEMS if control else MAX_ITEMS)
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
    except Exception as e:  # not the peer's fault: ours, with the traceback kept
        raise DecoderBug(req) from e


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
