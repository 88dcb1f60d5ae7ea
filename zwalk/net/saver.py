# Writing a download's progress record off the event loop, at most every SAVE_EVERY seconds,
# and sooner when more is unrecorded than a crash should cost (core/sources.py's
# unrecorded_limit).
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from zwalk.net.tasks import in_thread
from zwalk.store.partfile import PartFile

log = logging.getLogger(__name__)

SAVE_EVERY = 0.5  # seconds between progress records, unless the bytes unrecorded call sooner


class ProgressSaver:
    """Writes the progress record off the event loop: one write at a time, always the latest,
    at most one every SAVE_EVERY seconds unless `limit` bytes or more are unrecorded, then as
    soon as the write under way is done (each flushes the .part's data to disk first)."""

    def __init__(self, part: PartFile, pool: ThreadPoolExecutor) -> None:
        self.part, self.pool = part, pool
        self._running: asyncio.Future[None] | None = None
        self._later: asyncio.TimerHandle | None = None
        self._dirty = False
        self._last = -SAVE_EVERY
        self._unsaved = 0  # bytes marked since the last record was started
        self._limit = 0

    def mark(self, nbytes: int = 0, limit: int = 0) -> None:
        """`nbytes` more are verified and written (the .part's bits say which); `limit`: how many
        may go unrecorded before a record is due at once (0: only the time counts)."""
        loop = asyncio.get_running_loop()
        self._unsaved += nbytes
        self._limit = limit or self._limit
        busy = self._running is not None and not self._running.done()
        wait = self._last + SAVE_EVERY - loop.time()
        if self._limit and self._unsaved >= self._limit:
            wait = 0
        if busy or wait > 0:
            self._dirty = True
            if not busy and self._later is None:
                self._later = loop.call_later(wait, self._again)
            return
        if self._later is not None:
            self._later.cancel()
            self._later = None
        self._dirty = False
        self._unsaved = 0
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
                await in_thread(self.part.save, bytes(self.part.bits))
            except OSError as e:
                log.warning("cannot save download progress: %s", e)
