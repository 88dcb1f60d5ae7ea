# Hashing shared and downloaded files: the content id is the plain BLAKE3 of the whole file, so
# it equals what `b3sum` prints, and each chunk gets its own BLAKE3 so that a download can verify
# piece by piece. Everything here blocks: the node calls it from worker threads.
from __future__ import annotations

import threading
from pathlib import Path

import blake3

from zwalk.core import protocol as p


class Stopped(Exception):
    """The work was asked to stop (the node is leaving)."""


def chunk_size_for(size: int, preferred: int) -> int:
    """The preferred chunk size, doubled until the file fits in MAX_CHUNKS chunks."""
    cs = preferred
    while p.chunk_count(size, cs) > p.MAX_CHUNKS and cs < p.MAX_CHUNK_SIZE:
        cs *= 2
    return cs


def hash_file(
    path: Path, chunk_size: int, size: int, stop: threading.Event | None = None
) -> tuple[bytes, bytes]:
    """(content id, concatenated chunk hashes) of the first `size` bytes, in one pass.

    Raises OSError if the file is shorter than `size` (it changed under us)."""
    whole = blake3.blake3(max_threads=blake3.blake3.AUTO)
    hashes = bytearray()
    view = memoryview(bytearray(chunk_size))
    left = size
    with open(path, "rb", buffering=0) as f:
        while left > 0:
            if stop is not None and stop.is_set():
                raise Stopped
            want = min(chunk_size, left)
            n = _read_full(f, view[:want])
            if n != want:
                raise OSError(f"{path} shrank while being hashed")
            piece = view[:n]
            whole.update(piece)
            hashes += blake3.blake3(piece).digest()
            left -= n
    return whole.digest(), bytes(hashes)


def _read_full(f: object, view: memoryview) -> int:
    # readinto may return short counts; a chunk boundary must be exact.
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return got


def file_blake3(path: Path, block: int = 16 << 20) -> bytes:
    """BLAKE3 of a whole file, using every core (the final check of a download). Reads into one
    reusable buffer rather than mapping the file, so memory stays bounded for any size (a
    mapped file's pages count against the process)."""
    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    buf = bytearray(block)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.digest()
