# The node's share index over time: loaded from the data dir at start, checked against the disk,
# then kept in step with it by file-system events (watchfiles), with full rescans as the safety
# net (and as the only way where events are not available).
#
# All disk work -- walking, hashing, the index's copy on disk -- runs in one share worker thread,
# in order; the index itself changes only on the event loop, in batches the worker hands over
# and waits for. Searches that scan (globs, listings) run in other threads, so a search never
# waits behind hashing, and the loop never waits for either.
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from zwalk.core.query import Query
from zwalk.store.config import Config
from zwalk.store.hashing import Stopped
from zwalk.store.index import FileEntry, Index
from zwalk.store.indexdb import IndexDB
from zwalk.store.scanner import Change, Removed, Scanner, is_hidden, is_partial, roots

log = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, None]], object]

SETTLE = 0.5  # s: a file modified this recently may still be being written; look again later
SETTLE_STEP = 0.25  # s between looks at what events reported
MAX_SETTLE = 30.0  # s: a file that never stops changing is indexed anyway (and again later)
WATCH_DEBOUNCE_MS = 200  # watchfiles groups events this long (its default, 1.6 s, is too slow)
WATCHED_RESCAN = 600.0  # s between full rescans while events arrive (events can be lost)
CHANGED_EVERY = 0.5  # s: node.json and peers hear of a changed index at most this often
INDEX_DB = "index.sqlite"  # in the data dir


class Shares:
    def __init__(
        self, cfg: Config, folders: list[Path], spawn: Spawn, on_change: Callable[[], None]
    ) -> None:
        self.cfg = cfg
        self.folders = folders
        self.index = Index()
        self._spawn = spawn
        self._on_change = on_change  # the index changed (node.json, peers' file counts)
        exclude = {cfg.downloads.resolve(), cfg.data_dir.resolve()}
        self.scanner = Scanner(roots(folders), cfg.chunk_size, exclude, cfg.links)
        self._stop = self.scanner.stop  # tells the worker and the watcher that the node leaves
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="zwalk-share")
        self._db_path = cfg.data_dir / INDEX_DB
        self._db: IndexDB | None = IndexDB(self._db_path)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dirty: dict[Path, float] = {}  # reported by events or a failed read: since when
        self._wake = asyncio.Event()
        self._rescan_lock = asyncio.Lock()
        self._change_due = False
        self._warming = False
        self.watching = False  # file-system events arrive (else: rescans every rescan_interval)
        self.loaded = 0  # files taken from the index's copy on disk at start

    @property
    def hashed(self) -> int:
        """Files read and hashed since the node started (unchanged files are not)."""
        return self.scanner.hashed

    # --- the life of the shares -------------------------------------------------------------
    async def start(self) -> None:
        """Load the index of the last run; if there was none, index the folders before the node
        says it is ready (else the first full look runs in `keep_fresh`)."""
        self._loop = asyncio.get_running_loop()
        await self._in_worker(self._load)
        if not self.loaded:
            await self.rescan()

    async def keep_fresh(self) -> None:
        """Until cancelled: check the index against the disk, then follow the disk's events,
        with full rescans now and then; every `rescan_interval` if there are no events."""
        self._loop = asyncio.get_running_loop()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._settle_loop())
                if self.loaded:
                    await self._rescan_logged()
                tg.create_task(self._watch())
                while True:
                    await asyncio.sleep(
                        WATCHED_RESCAN if self.watching else self.cfg.rescan_interval
                    )
                    await self._rescan_logged()
        except* Stopped:
            pass  # the node is leaving

    async def _rescan_logged(self) -> None:
        try:
            await self.rescan()
        except OSError as e:
            log.warning("rescan failed: %s", e)

    async def rescan(self) -> None:
        """Look at every shared file (only new and changed ones are read)."""
        async with self._rescan_lock:
            before = self.index.version
            await self._in_worker(self.scanner.full, self.index, self._handoff)
            for path, why in self.scanner.skipped.items():
                log.warning("not sharing %s: %s", path, why)
            if self.index.version != before:
                log.info(
                    "sharing %d files, %d bytes (%d hashed since start)",
                    len(self.index),
                    self.index.total_bytes,
                    self.hashed,
                )

    def stop(self) -> None:
        """The node is leaving: the worker stops between files (or chunks of a big one), the
        watcher within a step."""
        self._stop.set()

    async def close(self) -> None:
        """After the tasks ended: close the index's copy on disk (in the worker's thread, the
        only one that may use it) and wait for the worker to end."""
        db, self._db = self._db, None
        if db is not None:
            self._worker.submit(db.close)
        await asyncio.to_thread(self._worker.shutdown, wait=True, cancel_futures=True)

    # --- what events and failed reads report ------------------------------------------------
    def unreadable(self, path: Path, *, gone: bool) -> None:
        """A read of a shared file failed, or it is not what the index says any more: look at
        it again. A file that changed or vanished is offered no more meanwhile."""
        if gone:
            where = self.scanner.locate(path)
            if where is not None and self.index.remove(where[1]) is not None:
                self._changed()
        if self._stop.is_set():
            return
        self._dirty.setdefault(path, time.monotonic())
        self._wake.set()

    async def _watch(self) -> None:
        try:
            from watchfiles import awatch
        except ImportError as e:  # a platform without a wheel for it
            log.warning(
                "no file-system events (%s): rescanning every %g s", e, self.cfg.rescan_interval
            )
            return
        paths = [r.path for r in self.scanner.roots]
        self.watching = True  # until it fails: the watcher reports a failure to start too
        try:
            async for changes in awatch(
                *paths,
                watch_filter=self._wanted,
                debounce=WATCH_DEBOUNCE_MS,
                step=50,
                stop_event=self._stop,
                ignore_permission_denied=True,
            ):
                now = time.monotonic()
                for _, path in changes:
                    self._dirty.setdefault(Path(path), now)
                self._wake.set()
        except (OSError, RuntimeError) as e:  # e.g. inotify's watch limit
            log.warning(
                "file-system events stopped (%s): rescanning every %g s instead",
                e,
                self.cfg.rescan_interval,
            )
        finally:
            self.watching = False

    def _wanted(self, change: object, path: str) -> bool:
        name = Path(path).name
        return not is_hidden(name) and not is_partial(name)

    async def _settle_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._dirty:
                await asyncio.sleep(SETTLE_STEP)
                now = time.monotonic()
                batch, self._dirty = self._dirty, {}
                # Files that changed within SETTLE may still be being written: not yet, unless
                # they have kept changing for MAX_SETTLE.
                late = [p for p, t in batch.items() if now - t >= MAX_SETTLE]
                young_ns = time.time_ns() - int(SETTLE * 1e9)
                try:
                    await self._in_worker(self._look_at, list(batch), young_ns)
                    if late:
                        await self._in_worker(self._look_at, late, None)
                except OSError as e:
                    log.warning("could not look at changed files: %s", e)
                for path in self.scanner.retry:
                    self._dirty.setdefault(path, batch.get(path, now))
                self.scanner.retry.clear()

    # --- searches off the event loop ----------------------------------------------------------
    async def search(self, query: Query, limit: int) -> list[FileEntry]:
        if self.index.is_quick(query):
            return self.index.search(query, limit)
        return await asyncio.to_thread(self.index.search, query, limit)

    async def page(
        self, *, after: str, prefix: str, query: Query | None, limit: int
    ) -> tuple[list[FileEntry], str]:
        return await asyncio.to_thread(
            self.index.page, after=after, prefix=prefix, query=query, limit=limit
        )

    # --- the worker thread --------------------------------------------------------------------
    async def _in_worker(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run fn in the share worker. Not cancelled halfway: `stop` ends it soon instead, and
        the worker must not be left holding a half-applied handoff."""
        if self._stop.is_set():
            raise Stopped
        future = asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            self._stop.set()
            with contextlib.suppress(Exception):
                await future
            raise

    def _load(self) -> None:
        if self._db is None:
            return
        try:
            self._db.open()
            for batch in self._db.load(self.scanner.locate):
                self._handoff(batch, record=False)
                self.loaded += len(batch)
        except Exception as e:  # the cache only saves time: go on without what it held
            log.warning("index cache %s not used: %s", self._db_path, e)
            self._db = None
        if self.loaded:
            log.info("%d files from the index cache", self.loaded)

    def _look_at(self, paths: list[Path], young_ns: int | None) -> None:
        changes = self.scanner.paths(self.index, paths, young_ns)
        if changes:
            self._handoff(changes)

    def _handoff(self, changes: list[Change] | list[FileEntry], record: bool = True) -> None:
        """Record changes on disk, then have the loop apply them, and wait until it has (the
        next look compares against the index, so it must see these)."""
        if self._db is not None and changes and record:
            try:
                self._db.write(changes)
            except Exception as e:  # a full disk, say: lose only the time a restart saves
                log.warning("index cache %s not updated: %s", self._db_path, e)
        done = threading.Event()

        def apply() -> None:
            try:
                self._apply(changes)
            finally:
                done.set()

        assert self._loop is not None  # noqa: S101 - set before the worker gets work
        try:
            self._loop.call_soon_threadsafe(apply)
        except RuntimeError:  # the loop is closed
            raise Stopped from None
        while not done.wait(0.1):
            if self._stop.is_set():
                raise Stopped

    def _apply(self, changes: list[Change] | list[FileEntry]) -> None:
        for c in changes:
            if isinstance(c, Removed):
                self.index.remove(c.rel)
            else:
                self.index.put(c)
        self._changed()

    def _changed(self) -> None:
        """Tell node.json and the peers, at most every CHANGED_EVERY seconds."""
        if not self._change_due:
            self._change_due = True
            asyncio.get_running_loop().call_later(CHANGED_EVERY, self._announce)

    def _announce(self) -> None:
        self._change_due = False
        self._on_change()
        if not self._warming:
            self._warming = True
            self._spawn(self._warm())

    async def _warm(self) -> None:
        try:
            await asyncio.to_thread(self.index.warm)
        finally:
            self._warming = False
