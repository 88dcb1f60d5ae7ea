# The share index: which files this node offers, with their content ids and chunk hashes.
#
# Everything here blocks (it walks folders and reads files); the node calls it from a worker
# thread, never on the event loop. A content id is the plain BLAKE3 of the whole file, so it equals
# what `b3sum` prints; each chunk also gets its own BLAKE3 so a download can verify piece by piece.
# Hashes are cached in the data dir, keyed by path, size and mtime, so an unchanged tree is not
# read again.
from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import blake3
import cbor2

from zwalk.core import protocol as p
from zwalk.core.query import Query

log = logging.getLogger(__name__)

CACHE_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class FileEntry:
    path: Path  # absolute, on this host
    rel: str  # '/'-separated, starting with the share folder's own name
    size: int
    mtime_ns: int
    cid: bytes
    chunk_size: int
    hashes: bytes  # concatenated chunk hashes
    ino: int = 0  # the file's identity when indexed: a read checks it is still the same file
    dev: int = 0

    @property
    def name(self) -> str:
        return self.path.name

    def info(self, req: int) -> p.FileInfo:
        return p.FileInfo(
            req=req, cid=self.cid, size=self.size, chunk_size=self.chunk_size, hashes=self.hashes
        )

    def hit(self) -> p.Hit:
        mtime_ms = min(p.MAX_TIME_MS, max(0, self.mtime_ns // 1_000_000))
        return p.Hit(name=self.name, path=self.rel, size=self.size, cid=self.cid, mtime_ms=mtime_ms)


@dataclass(slots=True)
class Index:
    entries: list[FileEntry] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # path, why
    _by_cid: dict[bytes, FileEntry] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._by_cid = {e.cid: e for e in self.entries}

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries)

    def by_cid(self, cid: bytes) -> FileEntry | None:
        return self._by_cid.get(cid)

    def without(self, path: Path) -> Index:
        """The same index without one file (other copies of its content stay)."""
        return Index(entries=[e for e in self.entries if e.path != path], skipped=self.skipped)

    def search(self, query: Query, limit: int = p.MAX_HITS) -> list[FileEntry]:
        if query.kind is p.QueryKind.CID:  # a content id is a key, not a scan
            entry = self._by_cid.get(p.cid_from_text(query.pattern))
            return [entry] if entry is not None else []
        # One hit per content id: the same bytes under two paths are one thing to fetch.
        out: dict[bytes, FileEntry] = {}
        for e in self.entries:
            if e.cid not in out and query.matches(e.name, e.cid):
                out[e.cid] = e
                if len(out) >= limit:
                    break
        return list(out.values())


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


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _walk_files(
    root: Path, exclude: set[Path], skipped: list[tuple[Path, str]], links: str = "inside"
) -> Iterator[tuple[Path, os.stat_result]]:
    """Regular files under root, hidden ones and excluded folders left out; no directory
    symlinks followed (no loops); devices and pipes skipped (reading them could block). A file
    symlink is shared as the file it points to if that lies inside `root` too, or whatever it
    points to with `links="follow"`; others go to `skipped`, with the reason."""
    if root.is_file():
        yield root, root.stat()
        return
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        d = Path(dirpath)
        dirnames[:] = sorted(
            n for n in dirnames if not _is_hidden(n) and (d / n).resolve() not in exclude
        )
        for name in sorted(filenames):
            if _is_hidden(name) or name.endswith((".part", ".part.progress")):
                continue
            fp = d / name
            try:
                st = fp.stat()
                if links != "follow" and fp.is_symlink():
                    target = fp.resolve(strict=True)
                    if not target.is_relative_to(root):
                        skipped.append((fp, f"a link to {target}, outside the shared folder "
                                        "([share] links = follow shares it)"))  # fmt: skip
                        continue
            except (OSError, RuntimeError):  # gone, unreadable, or a loop of links
                continue
            if stat.S_ISREG(st.st_mode):
                yield fp, st


def _rel_name(root: Path, fp: Path) -> str:
    base = root.name or "share"
    if fp == root:
        return base
    return "/".join((base, *fp.relative_to(root).parts))


def load_cache(cache_path: Path | None) -> dict[str, tuple[int, int, int, bytes, bytes]]:
    """path -> (size, mtime_ns, chunk_size, cid, hashes). A damaged cache is ignored, not fatal."""
    if cache_path is None or not cache_path.exists():
        return {}
    try:
        raw = cbor2.loads(cache_path.read_bytes())
        if raw.get("version") != CACHE_VERSION:
            return {}
        out: dict[str, tuple[int, int, int, bytes, bytes]] = {}
        for path, (size, mtime, cs, cid, hashes) in raw["files"].items():
            out[str(path)] = (int(size), int(mtime), int(cs), bytes(cid), bytes(hashes))
        return out
    except Exception as e:
        log.warning("ignoring unreadable index cache %s: %s", cache_path, e)
        return {}


def save_cache(cache_path: Path, entries: Iterable[FileEntry]) -> None:
    files = {str(e.path): [e.size, e.mtime_ns, e.chunk_size, e.cid, e.hashes] for e in entries}
    data = cbor2.dumps({"version": CACHE_VERSION, "files": files})
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_path.with_name(f"{cache_path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, cache_path)


class Stopped(Exception):
    """The scan was asked to stop (the node is leaving)."""


def scan(
    roots: Iterable[Path],
    *,
    chunk_size: int,
    cache_path: Path | None = None,
    exclude: Iterable[Path] = (),
    stop: threading.Event | None = None,
    links: str = "inside",
) -> Index:
    """Walk the share folders and hash what changed since the cache was written. Setting
    `stop` ends the scan soon (between files, and between chunks of a big one)."""
    excluded = {Path(x).resolve() for x in exclude}
    cache = load_cache(cache_path)
    entries: list[FileEntry] = []
    skipped: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for root in roots:
        root = Path(root).resolve()
        for fp, st in _walk_files(root, excluded, skipped, links):
            if stop is not None and stop.is_set():
                raise Stopped
            fp = fp.absolute()
            if fp in seen:
                continue
            seen.add(fp)
            if st.st_size > p.MAX_FILE_SIZE:
                skipped.append((fp, f"larger than {p.MAX_FILE_SIZE} bytes"))
                continue
            rel = _rel_name(root, fp)
            try:
                p.file_name(fp.name)
                p.rel_path(rel)
            except p.ProtocolError as e:
                skipped.append((fp, f"name cannot be shared: {e.reason}"))
                continue
            cs = chunk_size_for(st.st_size, chunk_size)
            hit = cache.get(str(fp))
            if hit is not None and hit[:3] == (st.st_size, st.st_mtime_ns, cs):
                cid, hashes = hit[3], hit[4]
            else:
                try:
                    cid, hashes = hash_file(fp, cs, st.st_size, stop)
                    changed = fp.stat().st_mtime_ns != st.st_mtime_ns
                except OSError as e:
                    skipped.append((fp, e.strerror or str(e)))
                    continue
                if changed:  # still being written: share it on a later scan
                    skipped.append((fp, "changed while being hashed"))
                    continue
            entries.append(
                FileEntry(
                    path=fp,
                    rel=rel,
                    size=st.st_size,
                    mtime_ns=st.st_mtime_ns,
                    cid=cid,
                    chunk_size=cs,
                    hashes=hashes,
                    ino=st.st_ino,
                    dev=st.st_dev,
                )
            )
    if cache_path is not None:
        try:
            save_cache(cache_path, entries)
        except (OSError, ValueError, cbor2.CBOREncodeError) as e:
            log.warning("could not write index cache %s: %s", cache_path, e)
    return Index(entries=entries, skipped=skipped)
