# The download folder: names a platform can store for names from the network (and folder trees
# of such names), where a .part lives, whether a file is already there, room on the disk, and
# giving a verified file its final name (or the exact one `find -o FILE` asks for) without
# overwriting anything it was not told to replace.
from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import blake3

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
        sources: bool = False,
    ) -> None:
        super().__init__(message)
        self.sources = sources  # its sources failed: other holders found now may do better
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


def content_at(path: Path, cid: bytes, size: int) -> str:
    """What `path` holds: 'absent', 'same' (a file with this content: size, then BLAKE3) or
    'other' (other bytes, a folder, something unreadable)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return "absent"
    except OSError:
        return "other"
    try:
        if path.is_file() and st.st_size == size and file_blake3(path) == cid:
            return "same"
    except OSError:
        pass
    return "other"


def place_at(part: Path, target: Path, cid: bytes, *, replace: bool = False) -> tuple[Path, bool]:
    """Give a verified .part exactly the name `target` (`find -o FILE`). A target that holds
    this content already counts as present. One with other bytes is replaced (in one rename:
    never a partial file under its name) only if `replace`; otherwise it is an error and the
    verified .part stays for the next run. Returns (path, already_present)."""
    there = content_at(target, cid, part.stat().st_size)
    if there == "same":
        part.unlink()
        return target, True
    if there == "other" and not replace:
        raise DownloadError(
            f"{target} appeared meanwhile and holds other content; it was not overwritten "
            "(--force replaces it)",
            part=part,
            kept=part.stat().st_size,
            allocated=allocated(part),
        )
    if there == "other":
        os.replace(part, target)
        return target, False
    try:
        os.link(part, target)  # fails if the name appeared meanwhile: never overwrites
    except FileExistsError:
        return place_at(part, target, cid, replace=replace)
    except OSError:  # file system without hard links
        if target.exists():
            return place_at(part, target, cid, replace=replace)
        os.replace(part, target)
        return target, False
    part.unlink()
    return target, False


def copy_verified(src: Path, dst: Path, cid: bytes) -> bool:
    """Copy `src` to a new file `dst`, hashing as it goes; whether the copy has the content id
    (if not, `dst` is removed). A file shared here may have changed since it was indexed."""
    digest = blake3.blake3()
    try:
        with open(src, "rb") as fin, open(dst, "xb") as fout:
            while block := fin.read(1 << 20):
                digest.update(block)
                fout.write(block)
    except BaseException:
        dst.unlink(missing_ok=True)
        raise
    if digest.digest() != cid:
        dst.unlink()
        return False
    return True


def local_path(out_dir: Path, path: str, windows: bool = os.name == "nt") -> Path:
    """Where a file a peer lists at `path` ('/'-separated, from the network) goes below
    `out_dir`, keeping its folders: each part must be a plain file name (no '..', separators
    or control characters) and is mapped to one this platform can store, as single downloads
    are. Raises ValueError for a path that could leave `out_dir`."""
    try:
        parts = [local_name(p.file_name(part), windows) for part in path.split("/")]
    except p.ProtocolError as e:
        raise ValueError(f"unsafe path {path!r} ({e})") from None
    if any(part in ("", ".", "..") for part in parts):  # local_name never makes one: be sure
        raise ValueError(f"unsafe path {path!r}")
    return out_dir.joinpath(*parts)


def make_folders(out_dir: Path, folder: Path) -> None:
    """Create `folder` (below `out_dir`) one level at a time, refusing to go through a symbolic
    link or anything but a folder: a link made there must not carry a download elsewhere."""
    out_dir.mkdir(parents=True, exist_ok=True)
    here = out_dir
    for part in folder.relative_to(out_dir).parts:
        here = here / part
        if _is_link(here):
            raise DownloadError(f"{here} is a symbolic link: not followed")
        with contextlib.suppress(FileExistsError):
            here.mkdir()
        if _is_link(here) or not here.is_dir():
            raise DownloadError(f"{here} is not a folder")


def _is_link(path: Path) -> bool:
    """A symbolic link, or a Windows junction (which is_symlink does not see)."""
    return path.is_symlink() or bool(getattr(os.path, "isjunction", lambda _: False)(path))


def check_room(out_dir: Path, part: Path, size: int) -> None:
    """Create the download folder and check it has room for what is still to come."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(out_dir).free + allocated(part)
    except OSError as e:
        raise DownloadError(f"cannot write to {out_dir}: {e}") from None
    if size > free:
        raise DownloadError(no_room(out_dir, size, free))


def no_room(folder: Path, need: int, free: int | None = None, more: str = "") -> str:
    """What a full disk is called wherever it stops a download: the folder and the space."""
    if free is None:
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            free = 0
    return f"not enough space in {folder}: the file needs {mib(need)}{more}, {mib(free)} is free"


def write_error(part: PartFile, e: OSError) -> DownloadError:
    """The .part could not be written (a full disk, an I/O error): the error names the folder
    and the space still needed, or the file; what is verified in it stays for the next run."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        message = no_room(part.path.parent, max(0, part.info.size - allocated(part.path)),
                          more=" more")  # fmt: skip
    else:
        message = f"cannot write {part.path}: {e.strerror or e}"
    if part.private:  # nobody would resume it: it is removed
        return DownloadError(message)
    return DownloadError(
        message, part=part.path, kept=part.kept_bytes(), allocated=allocated(part.path)
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
    except OSError as e:  # a new .part is removed: a full disk fails before anything is fetched
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DownloadError(no_room(out_dir, info.size)) from None
        raise DownloadError(f"cannot write {path}: {e.strerror or e}") from None
