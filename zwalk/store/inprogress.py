# Downloads under way or interrupted in a download folder: each `.part` with its progress record
# (store/partfile.py), how far it got, and whether a process is fetching it now (it holds the
# record's lock). What `zwalk status` reports; nothing here changes a file.
from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from zwalk.core import protocol as p
from zwalk.store import resume
from zwalk.store.locking import try_lock, unlock
from zwalk.store.partfile import progress_path

# `<name>.<16 hex digits of the content id>.part`, as store/downloads.py names them
_PART = re.compile(r"^(?P<name>.+)\.(?P<cid>[0-9a-f]{16})\.part$")


@dataclass(frozen=True, slots=True)
class Partial:
    name: str  # the file it becomes
    part: Path
    cid: bytes | None  # None: its record is missing or damaged
    size: int
    verified: int  # bytes its record claims (each chunk is checked again on resume)
    active: bool  # a download holds it now


def partials(folder: Path, limit: int = 1000, look_at: int = 100_000) -> list[Partial]:
    """The `.part` files in a download folder and below it (a folder fetch keeps its tree),
    newest first; at most `look_at` entries are looked at, so a huge folder stays quick."""
    found: list[os.DirEntry[str]] = []
    seen = 0
    todo = [folder]
    while todo and seen < look_at:
        try:
            entries = list(os.scandir(todo.pop()))
        except OSError:
            continue
        seen += len(entries)
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                todo.append(Path(e.path))
            elif e.is_file(follow_symlinks=False) and _PART.match(e.name):
                found.append(e)
    found.sort(key=lambda e: e.stat().st_mtime, reverse=True)
    return [_describe(Path(e.path)) for e in found[:limit]]


def _describe(part: Path) -> Partial:
    m = _PART.match(part.name)
    name = m.group("name") if m else part.name
    record = progress_path(part)
    try:
        data = record.read_bytes()
        cid, size, chunk_size, claimed = resume.describe(data)
    except (OSError, resume.BadRecord):
        return Partial(name, part, None, 0, 0, False)
    verified = sum(
        min(chunk_size, size - i * chunk_size)
        for i in claimed
        if i < p.chunk_count(size, chunk_size)
    )
    return Partial(name, part, cid, size, verified, _locked(record))


def _locked(record: Path) -> bool:
    """Whether another process holds the record's lock (a download is running)."""
    try:
        fd = os.open(record, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError:
        return False
    try:
        try_lock(fd)
    except OSError:
        return True
    else:
        with contextlib.suppress(OSError):
            unlock(fd)
        return False
    finally:
        os.close(fd)
