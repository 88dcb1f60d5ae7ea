# Fetching one file from its holders: the I/O around the chunk scheduler (store/partfile.py
# holds the .part side, net/fileinfo.py asks the holders for the chunk hashes first).
#
# Data lands in `<name>.<cid prefix>.part` in the download folder, beside a progress record
# (`.part.progress`, see store/resume.py) that also serves as the lock: one process owns a .part
# at a time, and a second download of the same file at once uses a .part of its own. Every chunk
# is checked against its BLAKE3 before it is written, and the whole file against the content id
# before it gets its final name, which is claimed without overwriting anything already there.
# Hashing and disk writes run in a small thread pool, off the event loop.
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from zwalk.core import protocol as p
from zwalk.core.sources import Request, TransferOptions, unrecorded_limit
from zwalk.core.transfer import ChunkScheduler
from zwalk.core.units import mib
from zwalk.net.buffers import keep_freed_frames
from zwalk.net.fileinfo import fetch_info
from zwalk.net.links import PeerError, PeerLink
from zwalk.net.saver import ProgressSaver
from zwalk.net.tasks import TaskSet, in_thread
from zwalk.store.downloads import (
    DownloadError,
    allocated,
    check_room,
    open_part,
    part_path,
    place,
    write_error,
)
from zwalk.store.partfile import PartFile

log = logging.getLogger(__name__)
T = TypeVar("T")

Progress = Callable[[int, int, int], None]  # bytes done, total bytes, active sources
Placer = Callable[[Path], tuple[Path, bool]]  # verified .part -> (final path, already present)


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
    placer: Placer | None = None,
) -> DownloadResult:
    """Fetch one file from its holders into `out_dir`. Holders found later (a search still
    running) can be handed in through `more_holders`; each joins once its file-info agrees.
    `placer` gives the verified file its final name (default: `name` in `out_dir`, or the
    first free `name (n).ext`)."""
    started = time.monotonic()
    options = options or TransferOptions()
    keep_freed_frames()
    p.file_name(name)  # the name came from the network: it must stay inside out_dir
    tid = p.cid_to_text(cid)[:15]  # how logs on every node name this transfer
    log.info("transfer %s: %s (%d bytes) from %d holders", tid, name, size, len(holders))
    groups, excluded, rtts = await fetch_info(holders, cid, size, options.info_timeout)
    received = 0
    gone: set[PeerLink] = set()  # sources that no longer share the file
    await asyncio.to_thread(check_room, out_dir, part_path(out_dir, name, cid), size)
    for info, sources in groups:
        part = await asyncio.to_thread(open_part, out_dir, name, cid, info)
        try:
            try:
                sched, resumed, got = await _attempt(
                    part, info, sources, rtts, options, progress, more_holders, excluded, gone
                )
            except OSError as e:  # the .part's disk: what it verified stays for the next run
                raise write_error(part, e) from None
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
                    allocated=0 if part.private else allocated(part.path),
                    changed=bool(sched.sources) and all(link in gone for link in sched.sources),
                    sources=True,
                )
            await in_thread(part.finish)
            whole = await in_thread(part.whole_digest)
            if whole != cid:
                lie = "their chunk hashes do not add up to the content id"
                log.warning("%s: %s", ", ".join(s.label for s in sources), lie)
                excluded.update({s.label: lie for s in sources})
                part.discard()
                continue
            if os.name == "nt":  # Windows cannot link or remove a file that is open
                part.close()
            put = placer or (lambda done: place(done, out_dir, name, cid))
            final, present = await in_thread(put, part.path)
            part.forget_progress()  # while still holding its lock
        except BaseException:
            if part.private:  # nobody would ever resume it
                part.discard()
            raise
        finally:
            part.close()
        log.info("transfer %s: verified, placed at %s", tid, final)
        for link, st in sched.sources.items():
            log.info(
                "transfer %s: %s: %s verified%s, at %s/s, frames of %d chunks, window %s%s",
                tid,
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
    claimed, have = await in_thread(part.resume)  # reads and hashes the .part: not here
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
            ProgressSaver(part, saver_pool),
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
    fatal: OSError | None = None  # the download cannot go on (the .part cannot be written)


async def _run(
    sched: ChunkScheduler[PeerLink],
    part: PartFile,
    saver: ProgressSaver,
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
    tasks = TaskSet("a download")

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
            answers.put_nowait(_Answer(req, fatal=e))
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
            if (
                not todo
                or not isinstance(reply, p.Chunks)
                or (reply.cid, reply.index, reply.count) != (cid, req.index, req.count)
                or len(reply.payload) != length
            ):
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
        # The file is closed after us: a cancelled write is waited for (in_thread).
        frame = memoryview(reply.payload)
        good, bad = await in_thread(part.write_frame, frame, req.index, req.count, executor=pool)
        return _Answer(req, good, bad, "hash mismatch" if bad else "")

    try:
        async with tasks:
            if more_holders is not None:
                tasks.spawn(adopt())
            if progress:
                progress(sched.bytes_done, sched.info.size, sched.active_sources)
            while not sched.complete and not sched.stuck:
                now = loop.time()
                for late in sched.overdue(now):
                    why = f"nothing arrived from it for {sched.late_by(late.source, now):.0f} s"
                    log.info("%s: %s", late.source.label, why)
                    sched.on_failure(late.source, late.index, why, now, late.serial)
                for req in sched.requests(now):
                    tasks.spawn(fetch(req))
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
                if a.fatal is not None:
                    raise a.fatal
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
                    saver.mark(
                        sum(sched.span(i)[1] for i in a.good),
                        unrecorded_limit(sched.sources.values(), sched.info.chunk_size),
                    )
                    if progress:
                        progress(sched.bytes_done, sched.info.size, sched.active_sources)
            # Leaving the TaskSet cancels the requests still out to sources we no longer need.
    finally:
        await saver.flush()
    return received
