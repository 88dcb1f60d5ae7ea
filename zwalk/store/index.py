# The share index: which files this node offers, with their content ids and chunk hashes, kept
# for lookups that stay fast at a million files -- by exact name and content id through dicts,
# by glob through a scan of each block's joined names for the pattern's longest literal, and in
# path order for listings.
#
# The index changes in place, only on the event loop (put/remove). A glob search or a listing
# may run in a worker thread meanwhile: it reads each block through a snapshot (`_Block.view`),
# so a concurrent change makes it see the index slightly before or after, never a torn state.
# Hashing and walking folders live in store/scanner.py, the copy on disk in store/indexdb.py.
from __future__ import annotations

import bisect
import fnmatch
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from zwalk.core import protocol as p
from zwalk.core.query import Query, glob_literal, nfc

BLOCK = 4096  # entries per block: a block's joined names are a few hundred KB at most


@dataclass(frozen=True, slots=True, kw_only=True)
class FileEntry:
    root: str  # the share folder (or shared file) on this host: one string shared by its files
    rel: str  # '/'-separated, starting with the share's label (its folder's name)
    size: int
    mtime_ns: int
    cid: bytes
    chunk_size: int
    hashes: bytes  # concatenated chunk hashes
    ino: int = 0  # the file's identity when indexed: a read checks it is still the same file
    dev: int = 0

    @property
    def name(self) -> str:
        return self.rel.rpartition("/")[2]

    @property
    def path(self) -> Path:
        """Where the file is on this host (the root itself for a shared file)."""
        _, slash, tail = self.rel.partition("/")
        return Path(self.root, *tail.split("/")) if slash else Path(self.root)

    def same_file(self, st: os.stat_result) -> bool:
        """Whether a stat describes the file as it was indexed (then its hashes still hold)."""
        return (st.st_size, st.st_mtime_ns) == (self.size, self.mtime_ns) and (
            not self.ino or not st.st_ino or (st.st_ino, st.st_dev) == (self.ino, self.dev)
        )

    def info(self, req: int) -> p.FileInfo:
        return p.FileInfo(
            req=req, cid=self.cid, size=self.size, chunk_size=self.chunk_size, hashes=self.hashes
        )

    def hit(self) -> p.Hit:
        mtime_ms = min(p.MAX_TIME_MS, max(0, self.mtime_ns // 1_000_000))
        return p.Hit(name=self.name, path=self.rel, size=self.size, cid=self.cid, mtime_ms=mtime_ms)


# A dict value: one entry, or a tuple of them (most names and contents occur once: no list each).
Many = FileEntry | tuple[FileEntry, ...]


def _add(d: dict[str, Many] | dict[bytes, Many], key: str | bytes, e: FileEntry) -> None:
    old = d.get(key)  # type: ignore[arg-type]
    if old is None:
        d[key] = e  # type: ignore[index]
    else:
        d[key] = (*_all(old), e)  # type: ignore[index]


def _discard(d: dict[str, Many] | dict[bytes, Many], key: str | bytes, e: FileEntry) -> None:
    old = d.get(key)  # type: ignore[arg-type]
    if old is None:
        return
    rest = tuple(x for x in _all(old) if x is not e)
    if not rest:
        del d[key]  # type: ignore[arg-type]
    else:
        d[key] = rest[0] if len(rest) == 1 else rest  # type: ignore[index]


def _all(v: Many | None) -> tuple[FileEntry, ...]:
    if v is None:
        return ()
    return v if isinstance(v, tuple) else (v,)


def _key(e: FileEntry) -> str:
    return e.rel


@dataclass(slots=True, eq=False)
class _Block:
    """Up to 2 * BLOCK entries in path order, and a cache of their names joined by newlines
    (no shared name holds a control character) for glob searches."""

    entries: list[FileEntry] = field(default_factory=list)
    version: int = 0
    _view: tuple[int, list[FileEntry], str, str] | None = None

    def changed(self) -> None:
        self.version += 1
        self._view = None

    def view(self, icase: bool) -> tuple[list[FileEntry], str]:
        """A snapshot of the entries and their (NFC, maybe case-folded) names, one per line.
        Safe from a worker thread: the copy is one C call, so it is never half changed."""
        v = self._view
        if v is None or v[0] != self.version:
            version = self.version
            snap = list(self.entries)
            names = "\n".join([nfc(e.name) for e in snap])
            v = (version, snap, names, names.casefold())
            self._view = v
        return v[1], v[3] if icase else v[2]


class Index:
    """The files this node shares. Change it on the event loop only; read it anywhere."""

    def __init__(self, entries: Iterable[FileEntry] = ()) -> None:
        self._by_rel: dict[str, FileEntry] = {}
        self._by_name: dict[str, Many] = {}  # NFC name
        self._by_fold: dict[str, Many] = {}  # case-folded NFC name
        self._by_cid: dict[bytes, Many] = {}
        self._blocks: list[_Block] = []
        self.total_bytes = 0
        self.version = 0  # counts changes: a listing cursor or a cache can tell it moved on
        for e in entries:
            self.put(e)

    def __len__(self) -> int:
        return len(self._by_rel)

    def __iter__(self) -> Iterator[FileEntry]:
        """Every entry in path order (from a snapshot of each block)."""
        for block in list(self._blocks):
            yield from list(block.entries)

    @property
    def entries(self) -> list[FileEntry]:
        return list(self)

    def get(self, rel: str) -> FileEntry | None:
        return self._by_rel.get(rel)

    def rels(self) -> list[str]:
        return list(self._by_rel)

    def by_cid(self, cid: bytes) -> FileEntry | None:
        found = _all(self._by_cid.get(cid))
        return found[0] if found else None

    # --- changes (event loop only) --------------------------------------------------------
    def put(self, e: FileEntry) -> None:
        """Add a file, or replace the entry at its path."""
        old = self._by_rel.get(e.rel)
        if old is not None:
            self.remove(e.rel)
        self._by_rel[e.rel] = e
        name = nfc(e.name)
        _add(self._by_name, name, e)
        fold = name.casefold()
        _add(self._by_fold, name if fold == name else fold, e)
        _add(self._by_cid, e.cid, e)
        self.total_bytes += e.size
        self._insert(e)
        self.version += 1

    def remove(self, rel: str) -> FileEntry | None:
        e = self._by_rel.pop(rel, None)
        if e is None:
            return None
        name = nfc(e.name)
        _discard(self._by_name, name, e)
        _discard(self._by_fold, name.casefold(), e)
        _discard(self._by_cid, e.cid, e)
        self.total_bytes -= e.size
        self._delete(e)
        self.version += 1
        return e

    def under(self, rel: str) -> list[str]:
        """The paths of the entries at `rel` or below it (a folder that went away)."""
        out = [rel] if rel in self._by_rel else []
        prefix = rel + "/"
        for e in self.page(after=prefix, prefix=prefix, limit=len(self) + 1)[0]:
            out.append(e.rel)
        return out

    def _find_block(self, rel: str) -> int:
        """The block that holds, or would hold, `rel`."""
        i = bisect.bisect_left(self._blocks, rel, key=lambda b: b.entries[-1].rel)
        return min(i, len(self._blocks) - 1)

    def _insert(self, e: FileEntry) -> None:
        if not self._blocks:
            self._blocks.append(_Block([e]))
            return
        i = self._find_block(e.rel)
        block = self._blocks[i]
        bisect.insort(block.entries, e, key=_key)
        block.changed()
        if len(block.entries) > 2 * BLOCK:  # split: readers holding the old block keep it whole
            half = len(block.entries) // 2
            self._blocks[i : i + 1] = [
                _Block(block.entries[:half]),
                _Block(block.entries[half:]),
            ]

    def _delete(self, e: FileEntry) -> None:
        i = self._find_block(e.rel)
        block = self._blocks[i]
        j = bisect.bisect_left(block.entries, e.rel, key=_key)
        if j < len(block.entries) and block.entries[j] is e:
            del block.entries[j]
            block.changed()
        if not block.entries:
            del self._blocks[i]

    # --- lookups ----------------------------------------------------------------------------
    def search(self, query: Query, limit: int = p.MAX_HITS) -> list[FileEntry]:
        """One entry per content id (the same bytes under two paths are one thing to fetch).
        Names and content ids are dict lookups; a glob scans, so the node runs it off the
        event loop when the index is large (`is_quick`)."""
        if query.kind is p.QueryKind.CID:
            entry = self.by_cid(p.cid_from_text(query.pattern))
            return [entry] if entry is not None else []
        if query.kind is p.QueryKind.NAME:
            pattern = nfc(query.pattern)
            found = (
                _all(self._by_fold.get(pattern.casefold()))
                if query.icase
                else _all(self._by_name.get(pattern))
            )
            return _distinct(found, limit)
        return self._glob(query, limit)

    def warm(self) -> None:
        """Build the glob views of blocks that changed (a worker thread does it after changes,
        so that a search seldom builds one itself: building all of a million takes ~0.7 s)."""
        for block in list(self._blocks):
            block.view(False)

    def is_quick(self, query: Query) -> bool:
        """Whether `search` takes next to no time (a dict lookup, or a small index)."""
        return query.kind is not p.QueryKind.GLOB or len(self) <= BLOCK

    def _glob(self, query: Query, limit: int) -> list[FileEntry]:
        pattern = nfc(query.pattern)
        if query.icase:
            pattern = pattern.casefold()
        rx = re.compile(fnmatch.translate(pattern))
        literal = glob_literal(pattern)
        if "\n" in literal:
            # Every match holds the literal, and no shared name holds a control character
            # (fields.file_name); in the views a line break only separates names.
            return []
        out: dict[bytes, FileEntry] = {}
        for block in list(self._blocks):
            snap, names = block.view(query.icase)
            if literal:
                _scan_literal(snap, names, literal, rx, out, limit)
            else:
                for i, name in enumerate(names.split("\n")):
                    if rx.match(name) and snap[i].cid not in out:
                        out[snap[i].cid] = snap[i]
                        if len(out) >= limit:
                            break
            if len(out) >= limit:
                break
        return list(out.values())

    def page(
        self, *, after: str = "", prefix: str = "", query: Query | None = None, limit: int = 100
    ) -> tuple[list[FileEntry], str]:
        """Entries in path order whose path comes after `after` and starts with `prefix`, and
        whose name matches `query` (a glob or a name) if one is given: at most `limit` of them,
        and the cursor for the next page ('' when this was the last)."""
        start = max(after, prefix)
        blocks = list(self._blocks)
        i = bisect.bisect_right(blocks, start, key=lambda b: b.entries[-1].rel if b.entries else "")
        out: list[FileEntry] = []
        for block in blocks[i:]:
            snap = list(block.entries)
            j = bisect.bisect_right(snap, start, key=_key)
            for e in snap[j:]:
                if not e.rel.startswith(prefix):
                    return out, ""
                if e.rel == after:
                    continue
                if query is None or query.matches(e.name, e.cid):
                    if len(out) == limit:
                        return out, out[-1].rel
                    out.append(e)
        return out, ""


def _scan_literal(
    snap: list[FileEntry],
    names: str,
    literal: str,
    rx: re.Pattern[str],
    out: dict[bytes, FileEntry],
    limit: int,
) -> None:
    """Find each name holding `literal` (str.find: C speed), then check the whole pattern."""
    pos = names.find(literal)
    line, at = 0, 0
    while pos != -1:
        start = names.rfind("\n", 0, pos) + 1
        end = names.find("\n", pos)
        if end == -1:
            end = len(names)
        line += names.count("\n", at, start)
        at = start
        if rx.match(names, start, end):
            e = snap[line]
            if e.cid not in out:
                out[e.cid] = e
                if len(out) >= limit:
                    return
        pos = names.find(literal, max(end, pos + 1))  # always forward, whatever `literal` is


def _distinct(found: Iterable[FileEntry], limit: int) -> list[FileEntry]:
    out: dict[bytes, FileEntry] = {}
    for e in found:
        out.setdefault(e.cid, e)
        if len(out) >= limit:
            break
    return list(out.values())
