# An exclusive, advisory lock on an open file, on every platform: held until the fd is closed.
from __future__ import annotations

import sys


def try_lock(fd: int) -> None:
    """Lock the file without waiting; OSError if another process holds it."""
    if sys.platform == "win32":
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
