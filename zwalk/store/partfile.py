# A download's `.part` file and its progress record, owned (locked) by one process at a time:
# verified chunks are written at their offsets, the record says which are there, and the whole
# file's BLAKE3 is built in file order as chunks arrive. The record is also the lock, so a second
# process downloading the same file at once is told to use a .part of its own.
from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import sys
import threading
from pathlib import Path

import blake3

from zwalk.core import protocol as p
from zwalk.store import resume
from zwalk.store.locking import try_lock, unlock

log = logging.getLogger(__name__)

# Verified chunks that arrive ahead of the whole-file hash are kept in memory up to this many
# bytes (frames finish out of order when two threads verify them, or several sources send).
HOLD_AHEAD = 32 << 20


def progress_path(part: Path) -> Path:
    return part.with_name(part.name + ".progress")


class PartFile:
    """A .part file and its progress record, owned (locked) by this process while open."""

    def __init__(self, path: Path, info: p.FileInfo, *, private: bool = False) -> None:
        self.path, self.info = path, info
        self.private = private  # this process's own .part: no later run will resume it
        self.record = progress_path(path)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0)
        self._rfd = self._lock_record(flags)
        try:
            self.fd = os.open(path, flags, 0o644)
        except OSError:
            os.close(self._rfd)
            raise
        self._fds: tuple[int, ...] = (self.fd, self._rfd)
        size = -1
        try:
            size = os.fstat(self.fd).st_size
            if size != info.size:
                os.ftruncate(self.fd, info.size)
            if size == 0:
                # A new .part only: on ext4 or XFS, a failed fallocate keeps what it got,
                # which removing the file gives back; a resumed .part must keep its data.
                reserve(self.fd, info.size)
        except OSError:
            if size == 0:  # nothing of an earlier attempt in it: leave no empty .part behind
                self.discard()
            self.close()
            raise
        self._lock = threading.Lock()  # for platforms without pread/pwrite, and the record
        # One writer at a time: concurrent writes to one file contend for its inode lock in the
        # kernel, which spins, burning the CPU that receiving and hashing need.
        self._write_lock = threading.Lock()
        n = p.chunk_count(info.size, info.chunk_size)
        self.bits = bytearray((n + 7) // 8)
        self._hashes_hash = resume.list_hash(info)  # saved with every record
        # The whole file's BLAKE3, fed in file order while the data is still in memory, so the
        # final check needs no second pass over the file. Verified chunks that arrive ahead of
        # the hashed prefix wait in `_ahead`, in memory or (past HOLD_AHEAD) to be read back.
        self._whole = blake3.blake3()
        self._hashed = 0
        # offset -> (length, the bytes if still held), for chunks written and verified
        self._ahead: dict[int, tuple[int, memoryview | None]] = {}
        self._held = 0  # bytes held in `_ahead`, up to HOLD_AHEAD
        self._hash_lock = threading.Lock()

    def _lock_record(self, flags: int) -> int:
        """Open and lock the progress record. A process that finished with this .part removes
        the record before it lets the lock go; if we locked a record that was removed under us,
        another process may lock the new one, so open it again."""
        for _ in range(3):
            fd = os.open(self.record, flags, 0o644)
            try:
                try_lock(fd)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES, errno.EDEADLK):
                    raise BlockingIOError(
                        f"{self.path} is being downloaded by another process"
                    ) from None
                # a file system without locks (some network mounts): go on unguarded
                log.warning(
                    "cannot lock %s (%s); two finds of this file at once may collide", self.path, e
                )
                return os.open(self.record, flags, 0o644)
            try:
                here, ours = os.stat(self.record), os.fstat(fd)
                if (here.st_dev, here.st_ino) == (ours.st_dev, ours.st_ino):
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)  # the record was replaced or removed meanwhile: try again
        raise BlockingIOError(f"{self.path} is being downloaded by another process")

    # --- resume -----------------------------------------------------------------------------
    def resume(self) -> tuple[set[int], set[int]]:
        """(chunks the record claims, those of them still intact): what an earlier attempt
        left that need not be fetched again."""
        claimed = self.claimed()
        return claimed, self.verify(claimed) if claimed else set()

    def claimed(self) -> set[int]:
        try:
            with self._lock:  # one byte more than a record for this file can be: a bad one
                data = _pread_all(self._rfd, resume.record_size(self.info) + 1, 0)
            return resume.decode(data, self.info) if data else set()
        except resume.BadRecord as e:
            log.info("ignoring the progress record %s: %s", self.record, e)
            return set()

    def verify(self, chunks: set[int]) -> set[int]:
        """The claimed chunks whose bytes in the .part still match their hash."""
        good = set()
        cs = self.info.chunk_size
        for i in sorted(chunks):
            length = min(cs, self.info.size - i * cs)
            data = self._read(i * cs, length)
            if blake3.blake3(data).digest() == self.info.chunk_hash(i):
                good.add(i)
                self.bits[i // 8] |= 1 << (i % 8)
                # in file order, so the whole-file hash takes the bytes now, not from a re-read
                self._add_to_whole(i * cs, length, memoryview(data))
        return good

    def kept_bytes(self) -> int:
        """Bytes of the chunks verified and written here (what a record of `bits` claims)."""
        cs, size = self.info.chunk_size, self.info.size
        n = p.chunk_count(size, cs)
        return sum(min(cs, size - i * cs) for i in range(n) if self.bits[i // 8] >> (i % 8) & 1)

    def save(self, bits: bytes) -> None:
        """Record which chunks are here. Their data is flushed to disk first, so the record
        never claims a chunk a power loss could take back, and the flushing is spread over
        the download instead of all falling on the final fsync."""
        _datasync(self.fd)
        record = resume.encode_bits(self.info, bits, self._hashes_hash)
        with self._lock:
            _pwrite_all(self._rfd, record, 0)
            os.ftruncate(self._rfd, len(record))

    # --- data ---------------------------------------------------------------------------------
    def write_frame(self, data: memoryview, index: int, count: int) -> tuple[list[int], list[int]]:
        """Check each chunk of a frame against its hash and write the good ones."""
        good, bad = [], []
        cs = self.info.chunk_size
        for k in range(count):
            i = index + k
            chunk = data[k * cs : (k + 1) * cs]
            if blake3.blake3(chunk).digest() != self.info.chunk_hash(i):
                bad.append(i)
                continue
            self._write(chunk, i * cs)
            self._add_to_whole(i * cs, len(chunk), chunk)
            good.append(i)
        return good, bad

    def _add_to_whole(self, offset: int, length: int, data: memoryview | None) -> None:
        with self._hash_lock:
            if offset < self._hashed or offset in self._ahead:
                return  # written twice (end-game): hashed already, or waiting its turn
            if offset > self._hashed or data is None:
                # Keep the bytes (they are in memory now) unless that would hold too much;
                # without them, the chunk is read back from the file when its turn comes.
                keep = data is not None and self._held + length <= HOLD_AHEAD
                self._ahead[offset] = (length, data if keep else None)
                self._held += length if keep else 0
            else:
                self._whole.update(data)
                self._hashed += length
            self._catch_up()

    def _catch_up(self) -> None:
        while (ahead := self._ahead.pop(self._hashed, None)) is not None:
            length, data = ahead
            if data is None:
                self._whole.update(self._read(self._hashed, length))
            else:
                self._whole.update(data)
                self._held -= length
            self._hashed += length

    def whole_digest(self) -> bytes | None:
        """BLAKE3 of the whole file, once every byte of it has been verified and written."""
        with self._hash_lock:
            self._catch_up()
            return self._whole.digest() if self._hashed == self.info.size else None

    def _write(self, data: memoryview, offset: int) -> None:
        with self._write_lock:
            _pwrite_all(self.fd, data, offset)

    def _read(self, offset: int, length: int) -> bytes:
        if hasattr(os, "pread"):
            return _pread_all(self.fd, length, offset)
        with self._write_lock:  # without pread, reads move the same file position as writes
            return _pread_all(self.fd, length, offset)

    def finish(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        """Close both files (which drops the lock); safe to call again."""
        fds, self._fds = self._fds, ()
        if self._rfd in fds:
            with contextlib.suppress(OSError):
                unlock(self._rfd)
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def forget_progress(self) -> None:
        with contextlib.suppress(OSError):
            self.record.unlink()

    def discard(self) -> None:
        """Remove the .part and its record (data from a hash list that turned out false, or a
        private .part nobody will resume), then let the lock go."""
        if os.name == "nt":  # Windows cannot remove a file that is open: the lock goes first
            self.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
        self.forget_progress()
        self.close()


def _datasync(fd: int) -> None:
    sync = getattr(os, "fdatasync", os.fsync)  # no fdatasync on macOS or Windows
    sync(fd)


def reserve(fd: int, size: int) -> bool:
    """Allocate a file's blocks up front, where the system can (Linux's fallocate): a disk too
    full for the file fails now rather than near the end, the file is laid out in one piece,
    and on tmpfs the pages are taken in one go instead of one at a time under each write.
    Elsewhere, or where the file system cannot, the file stays sparse (returns False)."""
    if sys.platform != "linux" or size <= 0:
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        # fallocate64 takes 64-bit offsets on 32-bit systems too (glibc); musl has only fallocate,
        # with a 64-bit off_t everywhere
        fallocate = getattr(libc, "fallocate64", None) or libc.fallocate
    except (OSError, AttributeError):
        return False
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    if fallocate(fd, 0, 0, size) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EIO):
        raise OSError(err, os.strerror(err))
    return False  # EOPNOTSUPP and the like: no harm, the writes allocate as they go


# Positioned I/O; where the platform has none (Windows) the caller holds a lock for the fd.
def _pread_all(fd: int, length: int, offset: int) -> bytes:
    if not hasattr(os, "pread"):
        os.lseek(fd, offset, os.SEEK_SET)
    parts = []
    while length > 0:
        b = os.pread(fd, length, offset) if hasattr(os, "pread") else os.read(fd, length)
        if not b:
            break
        parts.append(b)
        length -= len(b)
        offset += len(b)
    return b"".join(parts)


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    if not hasattr(os, "pwrite"):
        os.lseek(fd, offset, os.SEEK_SET)
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset) if hasattr(os, "pwrite") else os.write(fd, view)
        view, offset = view[n:], offset + n
