# The share index on disk, so that a restart serves at once and hashes nothing that did not
# change: one SQLite table in the data dir, a row per shared file keyed by its absolute path.
#
# SQLite (the standard library's sqlite3) rather than one file rewritten whole: a change writes
# only its rows, a crash mid-write leaves the last committed state, and loading a million rows
# streams. The node uses it from its one share worker thread only. A damaged or foreign file is
# put aside and started afresh: it is a cache, nothing in it is needed.
from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from zwalk.store.index import FileEntry
from zwalk.store.scanner import Change, Removed, Root

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    dev INTEGER NOT NULL,
    chunk_size INTEGER NOT NULL,
    cid BLOB NOT NULL,
    hashes BLOB NOT NULL
) WITHOUT ROWID
"""


class IndexDB:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError as e:
            log.warning("index cache %s is unreadable (%s): starting a new one", self.path, e)
            self._put_aside()
            self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise sqlite3.DatabaseError(f"schema version {version}, not {SCHEMA_VERSION}")
            # WAL: a commit is one append; NORMAL: a power loss may lose the last commits, which
            # only means hashing those files again.
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("SELECT count(*) FROM files").fetchone()  # a damaged file fails here
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _put_aside(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.replace(f"{self.path}{suffix}", f"{self.path}{suffix}.damaged")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def load(
        self, locate: Callable[[Path], tuple[Root, str] | None], batch: int = 1024
    ) -> Iterator[list[FileEntry]]:
        """The files of the last run that lie in today's shares (`locate`: Scanner.locate), in
        batches; rows of files outside them are dropped."""
        assert self._db is not None  # noqa: S101 - open() first
        out: list[FileEntry] = []
        dropped: list[str] = []
        rows = self._db.execute(
            "SELECT path, size, mtime_ns, ino, dev, chunk_size, cid, hashes FROM files"
        )
        for path, size, mtime_ns, ino, dev, cs, cid, hashes in rows:
            where = locate(Path(path))
            if where is None:
                dropped.append(path)
                continue
            root, rel = where
            out.append(
                FileEntry(
                    root=root.text,
                    rel=rel,
                    size=size,
                    mtime_ns=mtime_ns,
                    cid=bytes(cid),
                    chunk_size=cs,
                    hashes=bytes(hashes),
                    ino=ino,
                    dev=dev,
                )
            )
            if len(out) >= batch:
                yield out
                out = []
        if out:
            yield out
        self._delete(dropped)

    def write(self, changes: Iterable[Change]) -> None:
        assert self._db is not None  # noqa: S101 - open() first
        puts = []
        gone = []
        for c in changes:
            if isinstance(c, Removed):
                gone.append(c.path)
            else:
                puts.append(
                    (str(c.path), c.size, c.mtime_ns, c.ino, c.dev, c.chunk_size, c.cid, c.hashes)
                )
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)", puts
            )
            self._db.executemany("DELETE FROM files WHERE path = ?", [(g,) for g in gone])

    def _delete(self, paths: list[str]) -> None:
        assert self._db is not None  # noqa: S101
        if paths:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany("DELETE FROM files WHERE path = ?", [(x,) for x in paths])

    def count(self) -> int:
        assert self._db is not None  # noqa: S101
        return int(self._db.execute("SELECT count(*) FROM files").fetchone()[0])
