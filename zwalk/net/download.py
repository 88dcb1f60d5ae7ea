# Fetching one file from its holders: the I/O around the chunk scheduler (partfile.py holds
# the .part side).
#
# Data lands in `<name>.<cid prefix>.part` in the download folder, beside a progress record
# (`.part.progress`, see resume.py) that also serves as the lock: one process owns a .part at a
# time, and a second download of the same file at once uses a .part of its own. Every chunk is
# checked against its BLAKE3 before it is written, and the whole file against the content id
# before it gets its final name, which is claimed without overwriting anything already there.
# Hashing and disk writes run in a small thread pool, off the event loop.
from __future__ import annotations

import asyncio
import functools
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from zwalk.core import protocol as p
from zwalk.core.transfer import ChunkScheduler, Request, TransferOptions
from zwalk.core.units import mib
from zwalk.net.buffers import keep_freed_frames
from zwalk.net.links import PeerError, PeerLink
from zwalk.store.index import file_blake3
from zwalk.store.partfile import PartFile

log = logging.getLogger(__name__)
T = TypeVar("T")

Progress = Callable[[int, int, int], None]  # bytes done, total bytes, active sources


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


@dataclass(slots=True)
class DownloadResult:
    path: Path
    cid: bytes
    size: int
    seconds: float
    sources: list[str] = field(default_factory=list)  # who contributed chunks
    excluded: dict[str, str] = field(default_factory=dict)  # source -> why it was dropped
    already_present: bool = False
    fetched_bytes: int = 0  # verified bytes that came over the network this time
    received_bytes: int = 0  # chunk payload bytes received, verified or not, needed or not
    resumed_bytes: int = 0  # verified bytes found in a .part from an earlier attempt
    duplicate_requests: int = 0  # end-game copies of frames asked of a second source
    bytes_by_source: dict[str, int] = field(default_factory=dict)  # verified bytes each sent


SAVE_EVERY = 0.5  # seconds between progress records: a crash re-fetches at most this much
MAX_COPIES = 1000  # `name (999).ext` at most
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
) -> tuple[list[tuple[p.FileInfo, list[PeerLink]]], dict[str, str], dict[PeerLink, float]]:
    """Ask every holder for the file's chunk hashes. Holders are grouped by the hash list they
    sent, most holders first: a list that does not produce the content id shows only once the
    whole file is hashed, and then the next group gets its turn. Also returns how long each
    answer took: the round trip of a small request, which frames cannot measure."""
    rtts: dict[PeerLink, float] = {}

    async def ask(holder: PeerLink) -> p.Message:
        started = time.monotonic()
        reply = await holder.request(p.GetInfo(req=0, cid=cid), timeout)
        # The hello's round trip, if there was one: the file-info reply carries the hash list
        # (up to 4 MiB), whose transfer is not part of the round trip.
        took = time.monotonic() - started
        rtts[holder] = min(took, holder.rtt) if holder.rtt is not None else took
        return reply

    replies = await asyncio.gather(*(ask(h) for h in holders), return_exceptions=True)
    groups: dict[tuple[int, bytes], tuple[p.FileInfo, list[PeerLink]]] = {}
    excluded: dict[str, str] = {}
    for holder, r in zip(holders, replies, strict=True):
        if isinstance(r, BaseException):
            if not isinstance(r, PeerError | TimeoutError):
                raise r
            excluded[holder.label] = str(r) or f"no answer within {timeout:g} s"
        elif not isinstance(r, p.FileInfo) or r.cid != cid or r.size != size:
            excluded[holder.label] = "file-info does not match the search hit"
        else:
            groups.setdefault((r.chunk_size, r.hashes), (r, []))[1].append(holder)
    if not groups:
        raise DownloadError(
            "no holder answered with usable file info: "
            + "; ".join(f"{k}: {v}" for k, v in excluded.items())
        )
    return sorted(groups.values(), key=lambda g: -len(g[1])), excluded, rtts


def _candidates(out_dir: Path, name: str) -> Iterator[Path]:
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
    for candidate in _candidates(out_dir, name):
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
    for candidate in _candidates(out_dir, name):
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
    options: TransferOptions | None = None,
    progress: Progress | None = None,
    more_holders: asyncio.Queue[PeerLink] | None = None,
) -> DownloadResult:
    """Fetch one file from its holders into `out_dir`. Holders found later (a search still
    running) can be handed in through `more_holders`; each joins once its file-info agrees."""
    started = time.monotonic()
    options = options or TransferOptions()
    keep_freed_frames()
    p.file_name(name)  # the name came from the network: it must stay inside out_dir
    groups, excluded, rtts = await fetch_info(holders, cid, size, options.info_timeout)
    received = 0
    gone: set[PeerLink] = set()  # sources that no longer share the file
    await asyncio.to_thread(_check_room, out_dir, part_path(out_dir, name, cid), size)
    for info, sources in groups:
        part = await asyncio.to_thread(_open_part, out_dir, name, cid, info)
        try:
            sched, resumed, got = await _attempt(
                part, info, sources, rtts, options, progress, more_holders, excluded, gone
            )
            received += got
            for link, why in sched.failure_reasons().items():
                excluded[link.label] = why
            if not sched.complete:
                # The .part holds only verified chunks and its record says which: a later
                # find of the same file goes on from there (unless other holders, with
                # another hash list, can do better now).
                if (info, sources) != groups[-1]:
                    log.warning("every holder with this hash list failed; trying the next")
                    if part.private:
                        part.discard()  # nobody would ever resume it
                    part.close()
                    continue
                kept = 0 if part.private else sched.bytes_done
                raise DownloadError(
                    "every source failed: " + "; ".join(f"{k}: {v}" for k, v in excluded.items()),
                    part=None if part.private else part.path,
                    kept=kept,
                    allocated=0 if part.private else _allocated(part.path),
                    changed=bool(sched.sources) and all(link in gone for link in sched.sources),
                )
            await _in_thread(part.finish)
            whole = await _in_thread(part.whole_digest)
            if whole != cid:
                lie = "their chunk hashes do not add up to the content id"
                log.warning("%s: %s", ", ".join(s.label for s in sources), lie)
                excluded.update({s.label: lie for s in sources})
                part.discard()
                continue
            if os.name == "nt":  # Windows cannot link or remove a file that is open
                part.close()
            final, present = await _in_thread(place, part.path, out_dir, name, cid)
            part.forget_progress()  # while still holding its lock
        except BaseException:
            if part.private:  # nobody would ever resume it
                part.discard()
            raise
        finally:
            part.close()
        for link, st in sched.sources.items():
            log.info(
                "%s: %s verified%s, at %s/s, frames of %d chunks, window %s%s",
                link.label,
                mib(st.bytes),
                f" ({st.good} chunks)" if st.good else "",
                mib(int(st.rate or 0)),
                st.frame_chunks,
                mib(st.window),
                f"; dropped: {st.excluded}" if st.excluded else "",
            )
        return DownloadResult(
            path=final,
            cid=cid,
            size=size,
            seconds=time.monotonic() - started,
            sources=[link.label for link, st in sched.sources.items() if st.good],
            excluded=excluded,
            already_present=present,
            fetched_bytes=sum(st.bytes for st in sched.sources.values()),
            received_bytes=received,
            resumed_bytes=resumed,
            duplicate_requests=sched.duplicates,
            bytes_by_source={
                link.label: st.bytes for link, st in sched.sources.items() if st.bytes
            },
        )
    raise DownloadError(
        "no holder sent chunk hashes that match the content id: "
        + "; ".join(f"{k}: {v}" for k, v in excluded.items())
    )


def _forget_done(forget: Callable[[int], None], serial: int, _: object) -> None:
    forget(serial)


async def _in_thread(fn: Callable[..., T], *args: object) -> T:
    """Run `fn` in a thread. If we are cancelled meanwhile (Ctrl-C), wait for it to finish
    before going on: it uses the .part's files, which the caller closes on the way out."""
    task = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


def _check_room(out_dir: Path, part: Path, size: int) -> None:
    """Create the download folder and check it has room for what is still to come."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(out_dir).free + _allocated(part)
    except OSError as e:
        raise DownloadError(f"cannot write to {out_dir}: {e}") from None
    if size > free:
        raise DownloadError(
            f"not enough space in {out_dir}: the file needs {mib(size)}, {mib(free)} is free"
        )


def _allocated(path: Path) -> int:
    """Bytes a (sparse) file already occupies on disk."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return 0
    blocks = getattr(st, "st_blocks", None)
    return blocks * 512 if blocks is not None else st.st_size


def _open_part(out_dir: Path, name: str, cid: bytes, info: p.FileInfo) -> PartFile:
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


class _Saver:
    """Writes the progress record off the event loop: one write at a time, always the latest,
    at most one every SAVE_EVERY seconds (each flushes the .part's data to disk first)."""

    def __init__(self, part: PartFile, pool: ThreadPoolExecutor) -> None:
        self.part, self.pool = part, pool
        self._running: asyncio.Future[None] | None = None
        self._later: asyncio.TimerHandle | None = None
        self._dirty = False
        self._last = -SAVE_EVERY

    def mark(self) -> None:
        loop = asyncio.get_running_loop()
        busy = self._running is not None and not self._running.done()
        wait = self._last + SAVE_EVERY - loop.time()
        if busy or wait > 0:
            self._dirty = True
            if not busy and self._later is None:
                self._later = loop.call_later(wait, self._again)
            return
        self._dirty = False
        self._last = loop.time()
        self._running = loop.run_in_executor(self.pool, self.part.save, bytes(self.part.bits))
        self._running.add_done_callback(self._done)

    def _again(self) -> None:
        self._later = None
        if self._dirty:
            self.mark()

    def _done(self, fut: asyncio.Future[None]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            log.warning("cannot save download progress: %s", fut.exception())
        if self._dirty and self._later is None:
            self.mark()

    async def flush(self) -> None:
        """Wait for the save under way, then save what is still unsaved (to the end, even if
        we are cancelled meanwhile: the caller closes the files next)."""
        if self._later is not None:
            self._later.cancel()
            self._later = None
        while self._running is not None and not self._running.done():
            await asyncio.wait([self._running])
        if self._dirty:
            self._dirty = False
            try:
                await _in_thread(self.part.save, bytes(self.part.bits))
            except OSError as e:
                log.warning("cannot save download progress: %s", e)


async def _attempt(
    part: PartFile,
    info: p.FileInfo,
    sources: list[PeerLink],
    rtts: dict[PeerLink, float],
    options: TransferOptions,
    progress: Progress | None,
    more_holders: asyncio.Queue[PeerLink] | None,
    excluded: dict[str, str],
    gone: set[PeerLink],
) -> tuple[ChunkScheduler[PeerLink], int, int]:
    """Fetch what the .part lacks from these sources; returns the scheduler, the bytes found
    already there, and the payload bytes received."""
    claimed, have = await _in_thread(part.resume)  # reads and hashes the .part: not here
    if claimed:
        log.info("resuming: %d of %d claimed chunks verified", len(have), len(claimed))
    sched: ChunkScheduler[PeerLink] = ChunkScheduler(
        info,
        [],
        frame_bytes=options.frame_bytes,
        window=options.window,
        max_window=options.max_window,
        max_total=options.max_total,
        queue_target=options.queue_target,
        stall_grace=options.stall_grace,
        have=have,
    )
    for link in sources:
        sched.add_source(link, rtts.get(link))
    resumed = sched.bytes_done
    pool = ThreadPoolExecutor(options.workers, thread_name_prefix="zwalk-verify")
    saver_pool = ThreadPoolExecutor(1, thread_name_prefix="zwalk-progress")
    try:
        received = await _run(
            sched,
            part,
            _Saver(part, saver_pool),
            pool,
            progress,
            more_holders,
            excluded,
            options.info_timeout,
            gone,
        )
    finally:
        pool.shutdown(wait=False)
        saver_pool.shutdown(wait=False)
    return sched, resumed, received


@dataclass(slots=True)
class _Answer:
    req: Request[PeerLink]
    good: list[int] = field(default_factory=list)
    bad: list[int] = field(default_factory=list)
    failure: str = ""
    busy: bool = False  # the source said it is serving all it can
    gone: bool = False  # the source no longer shares the file (it changed or was removed)
    fatal: str = ""  # the download cannot go on (the .part cannot be written)


async def _run(
    sched: ChunkScheduler[PeerLink],
    part: PartFile,
    saver: _Saver,
    pool: ThreadPoolExecutor,
    progress: Progress | None,
    more_holders: asyncio.Queue[PeerLink] | None = None,
    excluded: dict[str, str] | None = None,
    info_timeout: float = 2.0,
    gone: set[PeerLink] | None = None,
) -> int:
    """Keep every source's window full until the file is complete or no source is left.
    Returns the payload bytes received."""
    loop = asyncio.get_running_loop()
    received = 0
    answers: asyncio.Queue[_Answer | None] = asyncio.Queue()  # None: look again (room, a source)
    cid = sched.info.cid
    info = sched.info
    # Every request still waiting for its reply, given up on or not: a late reply is kept if
    # it brings chunks still missing. They end with the download (or when their link closes).
    out: dict[int, asyncio.Task[None]] = {}

    async def adopt() -> None:
        """Holders found while the download runs join once their file-info agrees."""
        assert more_holders is not None  # noqa: S101 - only started with a queue
        while True:
            link = await more_holders.get()
            if link in sched.sources or link.closed:
                continue
            started = loop.time()
            try:
                r = await link.request(p.GetInfo(req=0, cid=cid), info_timeout)
            except (PeerError, TimeoutError) as e:
                if excluded is not None:
                    excluded[link.label] = str(e) or f"no answer within {info_timeout:g} s"
                continue
            if not isinstance(r, p.FileInfo) or (r.cid, r.size, r.chunk_size, r.hashes) != (
                info.cid,
                info.size,
                info.chunk_size,
                info.hashes,
            ):
                if excluded is not None:
                    excluded[link.label] = "file-info differs from the other holders'"
                continue
            log.info("%s joins the download", link.label)
            sched.add_source(link, loop.time() - started)
            answers.put_nowait(None)

    async def fetch(req: Request[PeerLink]) -> None:
        try:
            answers.put_nowait(await ask(req))
        except asyncio.CancelledError:
            raise
        except OSError as e:  # from the .part: the disk, not the source, is the problem
            answers.put_nowait(_Answer(req, fatal=f"cannot write {part.path}: {e}"))
        except Exception as e:  # a bug must not leave the frame outstanding for ever
            log.exception("fetching chunk %d from %s", req.index, req.source.label)
            answers.put_nowait(_Answer(req, failure=f"{type(e).__name__}: {e}"))

    async def ask(req: Request[PeerLink]) -> _Answer | None:
        nonlocal received
        msg = p.GetChunks(req=0, cid=cid, index=req.index, count=req.count)
        try:
            # No timeout of its own: the scheduler says when the source is late (and then
            # asks others), and a link that closes fails it.
            reply = await req.source.request(msg, None, bulk=True)
        except PeerError as e:
            return _Answer(
                req,
                failure=str(e),
                busy=e.code is p.ErrorCode.BUSY,
                gone=e.code is p.ErrorCode.NOT_FOUND,
            )
        received += len(reply.payload) if isinstance(reply, p.Chunks) else 0
        length = sched.span(req.index, req.count)[1]
        everything = list(range(req.index, req.index + req.count))
        if not sched.accepts(req.source, req.index, req.serial):
            # Given up on (late, or its source failed), or answered first by another source.
            # If it still brings chunks we lack, keep them: a source that slowed down is still
            # sending what it was asked, and each of its replies proves it is delivering.
            sched.on_stale_arrival(req.source, loop.time())
            todo = [i for i in everything if i not in sched.done_chunks]
            usable = isinstance(reply, p.Chunks) and (reply.cid, reply.index, reply.count) == (
                cid,
                req.index,
                req.count,
            )
            if not todo or not usable or len(reply.payload) != length:
                return None
        if not isinstance(reply, p.Chunks) or (reply.cid, reply.index, reply.count) != (
            cid,
            req.index,
            req.count,
        ):
            return _Answer(req, bad=everything, failure="answered something else")
        if len(reply.payload) != length:
            why = f"sent {len(reply.payload)} bytes, want {length}"
            return _Answer(req, bad=everything, failure=why)
        if sched.accepts(req.source, req.index, req.serial):
            sched.on_arrival(req.source, req.index, req.serial, now=loop.time())
            answers.put_nowait(None)  # its window has room again: ask for more while we write
        write = loop.run_in_executor(
            pool, part.write_frame, memoryview(reply.payload), req.index, req.count
        )
        try:
            good, bad = await asyncio.shield(write)
        except asyncio.CancelledError:
            await asyncio.wait([write])  # the file is closed after us: let the write finish
            raise
        return _Answer(req, good, bad, "hash mismatch" if bad else "")

    def forget(serial: int) -> None:
        out.pop(serial, None)

    joining = asyncio.create_task(adopt()) if more_holders is not None else None
    try:
        if progress:
            progress(sched.bytes_done, sched.info.size, sched.active_sources)
        while not sched.complete and not sched.stuck:
            now = loop.time()
            for late in sched.overdue(now):
                why = f"nothing arrived from it for {sched.late_by(late.source, now):.0f} s"
                log.info("%s: %s", late.source.label, why)
                sched.on_failure(late.source, late.index, why, now, late.serial)
            for req in sched.requests(now):
                task = asyncio.create_task(fetch(req))
                out[req.serial] = task
                task.add_done_callback(functools.partial(_forget_done, forget, req.serial))
            due = sched.next_deadline()
            wait = None if due is None else max(0.01, due - loop.time())
            try:
                a = await asyncio.wait_for(answers.get(), wait)
            except TimeoutError:
                continue  # a source's pause is over, or a request is late
            if a is None:
                continue  # room in a window, a new source, or an answer no longer wanted
            now = loop.time()
            src, req = a.req.source, a.req
            if a.fatal:
                raise DownloadError(a.fatal)
            if a.bad:
                log.warning("%s: chunk %d rejected: %s", src.label, a.bad[0], a.failure)
                sched.on_frame(
                    src, req.index, a.good, a.bad, now=now, reason=a.failure, serial=req.serial
                )
            elif a.busy:
                sched.on_busy(src, req.index, now, req.serial)
            elif a.gone:  # asking again will not bring it back
                log.info("%s: %s", src.label, a.failure)
                if gone is not None:
                    gone.add(src)
                sched.exclude(src, a.failure)
            elif a.failure:
                if sched.accepts(src, req.index, req.serial):
                    log.info("%s: frame at chunk %d: %s", src.label, req.index, a.failure)
                sched.on_failure(src, req.index, a.failure, now, req.serial)
            else:
                sched.on_frame(src, req.index, a.good, now=now, serial=req.serial)
            if a.good:
                for i in a.good:
                    part.bits[i // 8] |= 1 << (i % 8)
                saver.mark()
                if progress:
                    progress(sched.bytes_done, sched.info.size, sched.active_sources)
    finally:
        tasks = [*out.values(), *([joining] if joining is not None else [])]
        for task in tasks:  # requests still out to sources we no longer need
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        await saver.flush()
    return received
