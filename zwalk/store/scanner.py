# Walking the share folders and hashing what changed since the index last saw it. Everything
# here blocks (it walks folders and reads files): the node calls it from its one share worker
# thread, never on the event loop, and applies what it returns to the index on the loop.
#
# A file is hashed only when it is new or its size, modification time or identity (inode)
# changed; a file that changes while it is hashed is left for a later look, so no entry ever
# pairs a name with bytes that were not on disk at once.
from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from zwalk.core import protocol as p
from zwalk.store.hashing import Stopped, chunk_size_for, hash_file
from zwalk.store.index import FileEntry, Index


@dataclass(frozen=True, slots=True)
class Root:
    """A shared folder (or file), and the label its files' paths start with."""

    path: Path  # resolved
    label: str  # unique among the roots: the folder's name, "-2" added for a second one
    text: str  # str(path), one object shared by every entry under it

    def rel(self, fp: Path) -> str:
        if fp == self.path:
            return self.label
        return "/".join((self.label, *fp.relative_to(self.path).parts))


def roots(folders: Iterable[Path]) -> list[Root]:
    """The share roots, each with a label no other root has (two folders named `photos` are
    shared as `photos` and `photos-2`, so that every shared path names one file)."""
    out: list[Root] = []
    used: set[str] = set()
    for folder in folders:
        path = Path(folder).resolve()
        if any(r.path == path for r in out):
            continue
        base = path.name or "share"
        label, n = base, 1
        while label in used:
            n += 1
            label = f"{base}-{n}"
        used.add(label)
        out.append(Root(path, label, str(path)))
    return out


@dataclass(frozen=True, slots=True)
class Removed:
    rel: str
    path: str  # where it was on this host


def removed(e: FileEntry) -> Removed:
    return Removed(e.rel, str(e.path))


Change = FileEntry | Removed


def is_hidden(name: str) -> bool:
    return name.startswith(".")


# What Windows Explorer and macOS Finder hide is hidden here too (a dot is not the only way).
_HIDDEN_ATTRS = getattr(stat, "FILE_ATTRIBUTE_HIDDEN", 2) | getattr(
    stat, "FILE_ATTRIBUTE_SYSTEM", 4
)


def hidden_by_flags(st: os.stat_result) -> bool:
    return bool(getattr(st, "st_file_attributes", 0) & _HIDDEN_ATTRS) or bool(
        getattr(st, "st_flags", 0) & stat.UF_HIDDEN
    )


def is_partial(name: str) -> bool:
    return name.endswith((".part", ".part.progress"))


@dataclass(slots=True)
class Scanner:
    """Turns what is on disk into index changes. `hashed` counts the files it had to read."""

    roots: list[Root]
    chunk_size: int
    exclude: set[Path] = field(default_factory=set)  # resolved folders never shared
    links: str = "inside"  # file symlinks: those that stay inside their share, or any
    stop: threading.Event = field(default_factory=threading.Event)
    hashed: int = 0
    skipped: dict[Path, str] = field(default_factory=dict)  # not shared, and why (latest look)
    retry: set[Path] = field(default_factory=set)  # being written: look again a little later

    def locate(self, path: Path) -> tuple[Root, str] | None:
        """The root and shared path of an absolute path; None if it is not ours to share (outside
        every root, hidden, partial, or in an excluded folder)."""
        for root in self.roots:
            if path != root.path and not path.is_relative_to(root.path):
                continue
            parts = path.relative_to(root.path).parts
            if any(is_hidden(x) for x in parts) or (parts and is_partial(parts[-1])):
                return None
            if any(path == x or path.is_relative_to(x) for x in self.exclude):
                return None
            return root, root.rel(path)
        return None

    # --- a whole look ---------------------------------------------------------------------------
    def full(self, index: Index, emit: Callable[[list[Change]], None], batch: int = 512) -> None:
        """Walk every root; emit batches of changes against `index` (files added or changed,
        then the paths no longer there)."""
        seen: set[str] = set()
        out: list[Change] = []
        self.skipped.clear()
        for root in self.roots:
            for change in self._look(root, root.path, index, seen):
                out.append(change)
                if len(out) >= batch:
                    emit(out)
                    out = []
        out += [removed(e) for rel in index.rels() if rel not in seen and (e := index.get(rel))]
        if out:
            emit(out)

    def paths(
        self, index: Index, paths: Iterable[Path], young_ns: int | None = None
    ) -> list[Change]:
        """What changed at these paths (files or folders that were added, changed, moved or
        removed). A file moved within the shares keeps its hashes. A file modified after
        `young_ns` (ns since the epoch) may still be being written: it goes to `retry`."""
        gone: dict[tuple[int, int, int, int], FileEntry] = {}
        looks: list[tuple[Root, Path, str]] = []
        out: list[Change] = []
        for path in paths:
            where = self.locate(path)
            if where is None:
                continue
            root, rel = where
            try:
                path.lstat()
                looks.append((root, path, rel))
            except FileNotFoundError:
                for r in index.under(rel):
                    if (e := index.get(r)) is not None:
                        gone[(e.dev, e.ino, e.size, e.mtime_ns)] = e
                        out.append(removed(e))
            except OSError:
                continue
        for root, path, rel in looks:
            seen: set[str] = set()
            out += self._look(root, path, index, seen, gone, young_ns)
            stale = [r for r in index.under(rel) if r not in seen]  # a pipe now, a link out
            out += [removed(e) for r in stale if (e := index.get(r)) is not None]
        return out

    def _look(
        self,
        root: Root,
        start: Path,
        index: Index,
        seen: set[str],
        moved: dict[tuple[int, int, int, int], FileEntry] | None = None,
        young_ns: int | None = None,
    ) -> Iterator[Change]:
        for fp, st in self._walk(root, start):
            if self.stop.is_set():
                raise Stopped
            rel = root.rel(fp)
            old = index.get(rel)
            seen.add(old.rel if old is not None else rel)
            cs = chunk_size_for(st.st_size, self.chunk_size)
            if old is not None and old.same_file(st) and old.chunk_size == cs:
                continue
            if young_ns is not None and st.st_mtime_ns > young_ns:
                self.retry.add(fp)  # the old entry (if any) goes: it no longer says what is there
                seen.discard(rel)
                continue
            entry = self._entry(root, fp, rel, st, cs, moved or {})
            if entry is None:
                seen.discard(rel)
            else:
                yield entry

    def _entry(
        self,
        root: Root,
        fp: Path,
        rel: str,
        st: os.stat_result,
        cs: int,
        moved: dict[tuple[int, int, int, int], FileEntry],
    ) -> FileEntry | None:
        if st.st_size > p.MAX_FILE_SIZE:
            self._skip(fp, f"larger than {p.MAX_FILE_SIZE} bytes")
            return None
        try:
            p.file_name(fp.name)
            p.rel_path(rel)
        except p.ProtocolError as e:
            self._skip(fp, f"name cannot be shared: {e.reason}")
            return None
        was = moved.get((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
        if was is not None and was.chunk_size == cs:
            cid, hashes = was.cid, was.hashes
        else:
            try:
                cid, hashes = hash_file(fp, cs, st.st_size, self.stop)
                changed = not _same(fp.stat(), st)
            except OSError as e:
                self._skip(fp, e.strerror or str(e))
                return None
            self.hashed += 1
            if changed:  # still being written: share it on a later look
                self.retry.add(fp)
                self._skip(fp, "changed while being hashed")
                return None
        self.skipped.pop(fp, None)
        return FileEntry(
            root=root.text,
            rel=rel,
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            cid=cid,
            chunk_size=cs,
            hashes=hashes,
            ino=st.st_ino,
            dev=st.st_dev,
        )

    def _skip(self, fp: Path, why: str) -> None:
        self.skipped[fp] = why

    def _walk(self, root: Root, start: Path) -> Iterator[tuple[Path, os.stat_result]]:
        """Regular files at or under `start`, hidden ones and excluded folders left out; no
        directory symlinks followed (no loops); devices and pipes skipped (reading them could
        block). A file symlink is shared as the file it points to if that lies inside the root
        too, or whatever it points to with `links="follow"`; others are skipped, with the
        reason."""
        if not start.is_dir():
            st = self._file(root, start)
            if st is not None:
                yield start, st
            return
        for dirpath, dirnames, filenames in os.walk(start, followlinks=False):
            d = Path(dirpath)
            dirnames[:] = sorted(
                n
                for n in dirnames
                if not is_hidden(n)
                and (d / n).resolve() not in self.exclude
                and not _hidden_dir(d / n)
            )
            for name in sorted(filenames):
                if is_hidden(name) or is_partial(name):
                    continue
                st = self._file(root, d / name)
                if st is not None:
                    yield d / name, st

    def _file(self, root: Root, fp: Path) -> os.stat_result | None:
        try:
            st = fp.stat()
            if self.links != "follow" and fp.is_symlink():
                target = fp.resolve(strict=True)
                if not target.is_relative_to(root.path):
                    why = (
                        f"a link to {target}, outside the shared folder ([share] links = follow "
                        "shares it)"
                    )
                    self._skip(fp, why)
                    return None
        except (OSError, RuntimeError):  # gone, unreadable, or a loop of links
            return None
        return st if stat.S_ISREG(st.st_mode) and not hidden_by_flags(st) else None


def _hidden_dir(path: Path) -> bool:
    if not (hasattr(os.stat_result, "st_file_attributes") or hasattr(os.stat_result, "st_flags")):
        return False  # Linux: only the dot hides
    try:
        return hidden_by_flags(path.lstat())
    except OSError:
        return True  # unreadable: nothing to share in it


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_ino) == (b.st_size, b.st_mtime_ns, b.st_ino)


def scan(
    folders: Iterable[Path],
    *,
    chunk_size: int,
    exclude: Iterable[Path] = (),
    stop: threading.Event | None = None,
    links: str = "inside",
) -> tuple[Index, Scanner]:
    """Index folders in one go (the node does it in steps; tests and tools use this)."""
    scanner = Scanner(
        roots(folders),
        chunk_size,
        {Path(x).resolve() for x in exclude},
        links,
        stop or threading.Event(),
    )
    index = Index()

    def apply(changes: list[Change]) -> None:
        for c in changes:
            if isinstance(c, Removed):
                index.remove(c.rel)
            else:
                index.put(c)

    scanner.full(index, apply)
    return index, scanner
