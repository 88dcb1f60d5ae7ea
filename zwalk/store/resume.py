# The progress record kept beside a `.part` file, so that a later download of the same content
# fetches only what is missing. Sans-IO: bytes in, bytes out.
#
# The record names the file (content id, size, chunk size, a hash of the chunk hash list) and
# holds one bit per chunk written and verified. It is a claim, not proof: a resumed download
# checks every claimed chunk against its hash again before counting it, so a stale, torn or
# forged record can cost time but never put wrong bytes in place.
from __future__ import annotations

import struct
from collections.abc import Iterable

import blake3

from zwalk.core import protocol as p

MAGIC = b"zwalk-part\x00\x01"
_HEAD = struct.Struct(">12s32sQI32sI")  # magic, cid, size, chunk size, hash-list hash, chunks
_CHECK = 16  # bytes of BLAKE3 over everything before, at the end


class BadRecord(ValueError):
    pass


def list_hash(info: p.FileInfo) -> bytes:
    """What a record keeps of the chunk hash list (worth computing once per download: the list
    is up to 4 MiB)."""
    return blake3.blake3(info.hashes).digest()


def bitmap(info: p.FileInfo, done: Iterable[int]) -> bytearray:
    """One bit per chunk, chunk i in bit i % 8 of byte i // 8."""
    n = p.chunk_count(info.size, info.chunk_size)
    bits = bytearray((n + 7) // 8)
    for i in done:
        if 0 <= i < n:
            bits[i // 8] |= 1 << (i % 8)
    return bits


def encode_bits(
    info: p.FileInfo, bits: bytes | bytearray, hashes_hash: bytes | None = None
) -> bytes:
    n = p.chunk_count(info.size, info.chunk_size)
    if len(bits) != (n + 7) // 8:
        raise ValueError("bitmap length does not fit the file")
    hashes_hash = hashes_hash or list_hash(info)
    body = _HEAD.pack(MAGIC, info.cid, info.size, info.chunk_size, hashes_hash, n) + bits
    return body + blake3.blake3(body).digest()[:_CHECK]


def record_size(info: p.FileInfo) -> int:
    return _HEAD.size + (p.chunk_count(info.size, info.chunk_size) + 7) // 8 + _CHECK


def decode(data: bytes, info: p.FileInfo) -> set[int]:
    """The chunks a record claims, if it is intact and about this very file and hash list."""
    if len(data) != record_size(info):  # checked first: the rest costs time in the record's size
        raise BadRecord("not the size of a record for this file")
    cid, claimed = peek(data)
    _, _, size, chunk_size, hashes, n = _HEAD.unpack_from(data)
    if (cid, size, chunk_size) != (info.cid, info.size, info.chunk_size):
        raise BadRecord("for other content or another chunk size")
    if hashes != list_hash(info) or n != p.chunk_count(info.size, info.chunk_size):
        raise BadRecord("for another chunk hash list")
    return claimed


def describe(data: bytes) -> tuple[bytes, int, int, set[int]]:
    """(content id, size, chunk size, chunks claimed) of an intact record."""
    cid, claimed = peek(data)
    _, _, size, chunk_size, _, _ = _HEAD.unpack_from(data)
    return cid, size, chunk_size, claimed


def peek(data: bytes) -> tuple[bytes, set[int]]:
    """(content id, chunks claimed) of an intact record, without checking it against a hash
    list: enough to say how far an interrupted download got."""
    if len(data) < _HEAD.size + _CHECK:
        raise BadRecord("too short")
    body = data[:-_CHECK]
    if blake3.blake3(body).digest()[:_CHECK] != data[-_CHECK:]:
        raise BadRecord("checksum mismatch (torn or edited)")
    magic, cid, _, _, _, n = _HEAD.unpack_from(body)
    bits = body[_HEAD.size :]
    if magic != MAGIC or n > p.MAX_CHUNKS or len(bits) != (n + 7) // 8:
        raise BadRecord("not a zwalk progress record")
    return cid, {i for i in range(n) if bits[i // 8] >> (i % 8) & 1}
