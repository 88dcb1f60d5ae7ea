# Fetching one file from its holders: the I/O around the chunk scheduler.
#
# Data lands in `<name>.<cid prefix>.part` in the download folder; every chunk is checked against
# its BLAKE3 before it is written, and the whole file against the content id before it gets its
# final name. The final name is claimed without overwriting anything already there.
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import blake3

from zwalk import protocol as p
from zwalk.index import file_blake3
from zwalk.node import PeerError, PeerLink
from zwalk.transfer import ChunkScheduler

log = logging.getLogger(__name__)

Progress = Callable[[int, int, int], None]  # bytes done, total bytes, active sources


class DownloadError(Exception):
    pass


@dataclass(slots=True)
class DownloadResult:
    path: Path
    cid: bytes
    size: int
    seconds: float
    sources: list[str] = field(default_factory=list)  # who contributed chunks
    excluded: dict[str, str] = field(default_factory=dict)  # source -> why it was dropped
    already_present: bool = False


MAX_LOCAL_NAME = 224  # bytes: room under the usual 255 for " (999)" or ".<16 hex>.part"
WINDOWS_RESERVED = {
    "CON",
    "PRN",
    "AUX",
    "NUL",
    *(f"COM{i}" for i in range(1, 10)),
    *(f"LPT{i}" for i in range(1, 10)),
}


def _trim(text: str, max_bytes: int) -> str:
    while len(text.encode()) > max_bytes:
        text = text[:-1]
    return text


def local_name(name: str, windows: bool = os.name == "nt") -> str:
    """A name this platform can store, for a (validated) name from the network."""
    if windows:
        name = "".join("_" if c in '<>:"|?*' else c for c in name).rstrip(". ") or "_"
        if name.split(".")[0].upper() in WINDOWS_RESERVED:
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


async def fetch_info(
    holders: Sequence[PeerLink], cid: bytes, size: int, timeout: float
) -> tuple[p.FileInfo, list[PeerLink], dict[str, str]]:
    """Ask every holder for the file's chunk hashes; keep those that agree with the first."""
    replies = await asyncio.gather(
        *(h.request(p.GetInfo(req=0, cid=cid), timeout) for h in holders), return_exceptions=True
    )
    info: p.FileInfo | None = None
    sources: list[PeerLink] = []
    excluded: dict[str, str] = {}
    for holder, r in zip(holders, replies, strict=True):
        if isinstance(r, BaseException):
            if not isinstance(r, PeerError | TimeoutError):
                raise r
            excluded[holder.label] = str(r) or "no answer"
        elif not isinstance(r, p.FileInfo) or r.cid != cid or r.size != size:
            excluded[holder.label] = "file-info does not match the search hit"
        elif info is None or (r.chunk_size, r.hashes) == (info.chunk_size, info.hashes):
            info = info or r
            sources.append(holder)
        else:
            excluded[holder.label] = "chunk hashes disagree with other holders"
    if info is None:
        raise DownloadError(
            "no holder answered with usable file info: "
            + "; ".join(f"{k}: {v}" for k, v in excluded.items())
        )
    return info, sources, excluded


class _Writer:
    """Positioned writes to the .part file, from worker threads."""

    def __init__(self, path: Path, size: int) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o644)
        os.ftruncate(self.fd, size)
        self._lock = threading.Lock()  # only for platforms without pwrite

    def verify_and_write(self, data: memoryview | bytes, offset: int, expected: bytes) -> bool:
        if blake3.blake3(data).digest() != expected:
            return False
        if hasattr(os, "pwrite"):
            view = memoryview(data)
            while view:
                n = os.pwrite(self.fd, view, offset)
                view, offset = view[n:], offset + n
        else:
            with self._lock:
                os.lseek(self.fd, offset, os.SEEK_SET)
                view = memoryview(data)
                while view:
                    view = view[os.write(self.fd, view) :]
        return True

    def finish(self) -> None:
        os.fsync(self.fd)
        os.close(self.fd)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def place(part: Path, out_dir: Path, name: str, cid: bytes) -> tuple[Path, bool]:
    """Give a verified .part file its final name without clobbering anything.

    Returns (path, already_present). If the name is taken by other bytes, `name (1).ext` etc."""
    name = local_name(name)
    stem, dot, ext = name.rpartition(".")
    if not stem:
        stem, dot, ext = name, "", ""
    for n in range(1000):
        candidate = out_dir / (name if n == 0 else f"{stem} ({n}){dot}{ext}")
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


async def download(
    holders: Sequence[PeerLink],
    *,
    cid: bytes,
    name: str,
    size: int,
    out_dir: Path,
    window: int,
    chunk_timeout: float,
    info_timeout: float,
    progress: Progress | None = None,
) -> DownloadResult:
    started = time.monotonic()
    p.file_name(name)  # the name came from the network: it must stay inside out_dir
    info, sources, excluded = await fetch_info(holders, cid, size, info_timeout)
    part = await asyncio.to_thread(_prepare, out_dir, name, cid, size)

    sched: ChunkScheduler[PeerLink] = ChunkScheduler(
        info, sources, window=window, timeout=chunk_timeout
    )
    try:
        writer = _Writer(part, size)
    except OSError as e:
        raise DownloadError(f"cannot write {part}: {e.strerror or e}") from None
    try:
        await _run(sched, writer, cid, progress)
        for link, why in sched.failure_reasons().items():
            excluded[link.label] = why
        if not sched.complete:
            # The .part holds only verified chunks; it stays for a later attempt.
            raise DownloadError(
                "every source failed: " + "; ".join(f"{k}: {v}" for k, v in excluded.items())
            )
        await asyncio.to_thread(writer.finish)
    finally:
        writer.close()
    whole = await asyncio.to_thread(file_blake3, part)
    if whole != cid:
        part.unlink()
        raise DownloadError(
            "every chunk matched its hash but the whole file does not match the content id: "
            "the sources' hash list is wrong"
        )
    final, present = await asyncio.to_thread(place, part, out_dir, name, cid)
    return DownloadResult(
        path=final,
        cid=cid,
        size=size,
        seconds=time.monotonic() - started,
        sources=[link.label for link, st in sched.sources.items() if st.good],
        excluded=excluded,
        already_present=present,
    )


def _prepare(out_dir: Path, name: str, cid: bytes, size: int) -> Path:
    """Create the download folder and check it has room; returns the .part path."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        part = part_path(out_dir, name, cid)
        free = shutil.disk_usage(out_dir).free + _allocated(part)
    except OSError as e:
        raise DownloadError(f"cannot write to {out_dir}: {e}") from None
    if size > free:
        raise DownloadError(f"not enough space in {out_dir}: need {size} bytes, {free} free")
    return part


def _allocated(path: Path) -> int:
    """Bytes a (sparse) file already occupies on disk."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return 0
    blocks = getattr(st, "st_blocks", None)
    return blocks * 512 if blocks is not None else st.st_size


async def _run(
    sched: ChunkScheduler[PeerLink],
    writer: _Writer,
    cid: bytes,
    progress: Progress | None,
) -> None:
    """Keep every source's window full until the file is complete or no source is left."""
    events: asyncio.Queue[tuple[PeerLink, int, str, str]] = asyncio.Queue()
    clock = time.monotonic

    async def fetch(src: PeerLink, index: int) -> None:
        offset, length = sched.span(index)
        try:
            reply = await src.request(p.GetChunks(req=0, cid=cid, index=index), sched.timeout)
        except TimeoutError:
            events.put_nowait((src, index, "failed", f"no chunk within {sched.timeout:g}s"))
            return
        except PeerError as e:
            events.put_nowait((src, index, "failed", str(e)))
            return
        if not isinstance(reply, p.Chunks) or (reply.cid, reply.index) != (cid, index):
            events.put_nowait((src, index, "bad", "answer does not match the request"))
            return
        if len(reply.payload) != length:
            events.put_nowait((src, index, "bad", f"{len(reply.payload)} bytes, want {length}"))
            return
        write = asyncio.get_running_loop().run_in_executor(
            None, writer.verify_and_write, reply.payload, offset, sched.expected_hash(index)
        )
        try:
            good = await asyncio.shield(write)
        except asyncio.CancelledError:
            await asyncio.wait([write])  # the file is closed after us: let the write finish
            raise
        events.put_nowait(
            (src, index, "good", "") if good else (src, index, "bad", "hash mismatch")
        )

    async with asyncio.TaskGroup() as tg:
        tasks: list[asyncio.Task[None]] = []
        if progress:
            progress(sched.bytes_done, sched.info.size, sched.active_sources)
        while not sched.complete and not sched.stuck:
            tasks = [t for t in tasks if not t.done()]
            for src, index in sched.requests(clock()):
                tasks.append(tg.create_task(fetch(src, index)))
            src, index, verdict, why = await events.get()
            now = clock()
            if verdict == "good":
                sched.on_good(src, index, now)
                if progress:
                    progress(sched.bytes_done, sched.info.size, sched.active_sources)
            elif verdict == "bad":
                log.warning("%s: chunk %d rejected: %s", src.label, index, why)
                sched.on_bad(src, index, why, now)
            elif sched.accepts(src, index):
                log.info("%s: chunk %d: %s", src.label, index, why)
                sched.on_failure(src, index, why, now)
        for task in tasks:  # requests still out to sources we no longer need
            task.cancel()
