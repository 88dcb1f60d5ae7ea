# An exclusive, advisory lock on an open file, on every platform: held until the fd is closed.
# POSIX: flock on the whole file. Windows: msvcrt locks the first byte, counted from the file
# position (0 just after opening), and the lock is mandatory for other processes.
from __future__ import annotations

import os
import sys


def try_lock(fd: int) -> None:
    """Lock the file without waiting; OSError if another process holds it. Call it right
    after opening the file (Windows locks from the current position)."""
    if sys.platform == "win32":
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def unlock(fd: int) -> None:
    """Let the lock go before closing the fd. Closing is enough on POSIX; Windows also frees a
    lock at close, but only "when resources allow", so there it is released explicitly."""
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)  # the locked byte: reads and writes may have moved on
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
