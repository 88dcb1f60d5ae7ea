# The download folder: names a platform can store for names from the network, where a .part
# lives, whether a file is already there, room on the disk, and giving a verified file its
# final name without overwriting anything.
from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from zwalk.core import protocol as p
from zwalk.core.units import mib
from zwalk.store.hashing import file_blake3
from zwalk.store.partfile import PartFile

log = logging.getLogger(__name__)


class DownloadError(Exception):
    """A download that did not complete. What it kept (if anything) stays in `part`, which a
    later download of the same file resumes."""

    def __init__(
        self,
        message: str,
        *,
        part: Path | None = None,
        kept: int = 0,
        allocated: int = 0,
        changed: bool = False,
    ) -> None:
        super().__init__(message)
        self.part = part  # the .part file left behind, if any
        self.kept = kept  # verified bytes in it
        self.allocated = allocated  # bytes it takes on disk (allocated in full up front)
        self.changed = changed  # every holder said the file is no longer shared (it changed)


class OutDirError(Exception):
    """The download folder cannot take files (a usage error, found before any search)."""


MAX_COPIES = 1000  # `name (999).ext` at most
MAX_LOCAL_NAME = 224  # bytes: room under the usual 255 for " (999)" or ".<16 hex>.part"
WINDOWS_RESERVED = {
    "CON",
    "PRN",
    "AUX",
    "NUL",
    *(f"COM{i}" for i in "0123456789¹²³"),  # Windows 11 reserves COM0, LPT0 and the
    *(f"LPT{i}" for i in "0123456789¹²³"),  # superscript digits too
}


def _trim(text: str, max_bytes: int) -> str:
    while len(text.encode()) > max_bytes:
        text = text[:-1]
    return text


def local_name(name: str, windows: bool = os.name == "nt") -> str:
    """A name this platform can store, for a (validated) name from the network."""
    if windows:
        name = "".join("_" if c in '<>:"|?*' else c for c in name).rstrip(". ") or "_"
        if name.split(".")[0].rstrip(" ").upper() in WINDOWS_RESERVED:
            name = "_" + name
    if len(name.encode()) > MAX_LOCAL_NAME:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext.encode()) <= 16:
            name = _trim(stem, MAX_LOCAL_NAME - len(ext.encode()) - 1) + "." + ext
        else:
            name = _trim(name, MAX_LOCAL_NAME)
    return name


def part_path(out_dir: Path, name: str, cid: bytes) -> Path:
    return out_dir / f"{local_name(name)}.{cid.hex()[:16]}.part"


def candidates(out_dir: Path, name: str) -> Iterator[Path]:
    """Where a file of this name may be saved: `name`, then `name (1).ext`, ..."""
    name = local_name(name)
    stem, dot, ext = name.rpartition(".")
    if not stem:
        stem, dot, ext = name, "", ""
    for n in range(MAX_COPIES):
        yield out_dir / (name if n == 0 else f"{stem} ({n}){dot}{ext}")


def already_saved(out_dir: Path, name: str, cid: bytes, size: int) -> Path | None:
    """A file with this content already in the download folder, under the name it would get
    (or a `name (n).ext` before the first free one): checked by size, then by BLAKE3."""
    for candidate in candidates(out_dir, name):
        try:
            st = candidate.stat()
        except FileNotFoundError:
            return None
        except OSError:
            continue
        try:
            if st.st_size == size and candidate.is_file() and file_blake3(candidate) == cid:
                return candidate
        except OSError:  # unreadable: not ours to judge, and place() will not overwrite it
            continue
    return None


def check_out_dir(out_dir: Path) -> None:
    """Whether files can be saved in `out_dir` (it, or the folder it would be made in, is a
    writable folder); raises OutDirError saying why not. Creates nothing."""
    path = out_dir.absolute()
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        what = "is" if probe == path else f"would be made in {probe}, which is"
        raise OutDirError(f"cannot save into {out_dir}: it {what} not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "" if probe == path else f" (it would be made in {probe})"
        raise OutDirError(f"cannot save into {out_dir}{where}: permission denied")


def place(part: Path, out_dir: Path, name: str, cid: bytes) -> tuple[Path, bool]:
    """Give a verified .part file its final name without clobbering anything.

    Returns (path, already_present). If the name is taken by other bytes, `name (1).ext` etc."""
    for candidate in candidates(out_dir, name):
        if candidate.exists():
            if candidate.stat().st_size == part.stat().st_size and file_blake3(candidate) == cid:
                part.unlink()
                return candidate, True
            continue
        try:
            os.link(part, candidate)  # fails if the name appeared meanwhile: never overwrites
        except FileExistsError:
            continue
        except OSError:  # file system without hard links
            if candidate.exists():
                continue
            os.replace(part, candidate)
            return candidate, False
        part.unlink()
        return candidate, False
    raise DownloadError(f"could not find a free name for {name} in {out_dir}")


def check_room(out_dir: Path, part: Path, size: int) -> None:
    """Create the download folder and check it has room for what is still to come."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(out_dir).free + allocated(part)
    except OSError as e:
        raise DownloadError(f"cannot write to {out_dir}: {e}") from None
    if size > free:
        raise DownloadError(
            f"not enough space in {out_dir}: the file needs {mib(size)}, {mib(free)} is free"
        )


def allocated(path: Path) -> int:
    """Bytes a (sparse) file already occupies on disk."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return 0
    blocks = getattr(st, "st_blocks", None)
    return blocks * 512 if blocks is not None else st.st_size


def open_part(out_dir: Path, name: str, cid: bytes, info: p.FileInfo) -> PartFile:
    path = part_path(out_dir, name, cid)
    try:
        try:
            return PartFile(path, info)
        except BlockingIOError:
            # Another download of the same file is running: fetch beside it, not into it.
            log.info("%s is being fetched by another process; using a .part of our own", name)
            own = path.with_name(f"{path.stem}.{os.getpid()}{path.suffix}")
            return PartFile(own, info, private=True)
    except OSError as e:
        raise DownloadError(f"cannot write {path}: {e.strerror or e}") from None
