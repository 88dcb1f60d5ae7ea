# Reading a shared file for a peer: exactly the bytes the index describes, or an error saying
# the file is not what was indexed any more.
from __future__ import annotations

import os
from pathlib import Path


class FileChanged(OSError):
    """A shared file is not what the index says any more."""


def read_span(
    path: Path, offset: int, into: memoryview, mtime_ns: int, ino: int = 0, dev: int = 0
) -> None:
    """Fill `into` from a shared file at `offset`, refusing if the file changed since it was
    indexed (its modification time, or another file now at that path: a file swapped for a
    link with the same size and time) or is now shorter."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        st = os.fstat(fd)
        if st.st_mtime_ns != mtime_ns:
            raise FileChanged(f"{path} changed since it was indexed")
        if ino and st.st_ino and (st.st_ino, st.st_dev) != (ino, dev):
            raise FileChanged(f"{path} is another file than the one indexed")
        if not hasattr(os, "preadv"):  # Windows
            os.lseek(fd, offset, os.SEEK_SET)
        view = into
        while view:
            if hasattr(os, "preadv"):
                n = os.preadv(fd, [view], offset)
            else:
                got = os.read(fd, len(view))
                n = len(got)
                view[:n] = got
            if n <= 0:
                raise FileChanged(f"{path} is shorter than indexed")
            view, offset = view[n:], offset + n
    finally:
        os.close(fd)


def check_file(path: Path, size: int, mtime_ns: int, ino: int = 0, dev: int = 0) -> None:
    """Raise FileChanged (or FileNotFoundError) unless the file at `path` is still the one that
    was indexed: its size, modification time and identity."""
    st = os.stat(path)
    if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
        raise FileChanged(f"{path} changed since it was indexed")
    if ino and st.st_ino and (st.st_ino, st.st_dev) != (ino, dev):
        raise FileChanged(f"{path} is another file than the one indexed")
