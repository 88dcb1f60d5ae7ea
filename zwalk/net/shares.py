# The node's share index over time: the first scan, the periodic rescan, and the rescan a
# failed read asks for. Scanning (hashing) runs in a worker thread; the index the node answers
# from is replaced whole, never changed in place.
from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from zwalk.store.config import Config
from zwalk.store.index import Index, scan

log = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, None]], object]


class Shares:
    def __init__(
        self, cfg: Config, folders: list[Path], spawn: Spawn, on_change: Callable[[], None]
    ) -> None:
        self.cfg = cfg
        self.folders = folders
        self.index = Index()
        self._spawn = spawn
        self._on_change = on_change  # the index was replaced (node.json shows the file count)
        self._lock = asyncio.Lock()
        self._stop = threading.Event()  # tells a scan thread that the node is leaving
        self._pending = False

    async def rescan(self) -> Index:
        async with self._lock:
            exclude = [self.cfg.downloads.resolve(), self.cfg.data_dir.resolve()]
            # Not in_thread: a scan holds nothing we release, and `stop` ends it when we leave.
            index = await asyncio.to_thread(_scan, self.folders, self.cfg, exclude, self._stop)
            for path, why in index.skipped:
                log.warning("not sharing %s: %s", path, why)
            if len(index) != len(self.index) or index.total_bytes != self.index.total_bytes:
                log.info("sharing %d files, %d bytes", len(index), index.total_bytes)
            self.index = index
            self._on_change()
            return index

    async def keep_fresh(self) -> None:
        """Rescan every `rescan_interval` seconds, until cancelled."""
        while True:
            await asyncio.sleep(self.cfg.rescan_interval)
            try:
                await self.rescan()
            except OSError as e:
                log.warning("rescan failed: %s", e)

    def unreadable(self, path: Path, *, gone: bool) -> None:
        """A read of a shared file failed: look at the folders again (once for a burst of
        failures). A file that changed or vanished is offered no more meanwhile."""
        if gone:
            self.index = self.index.without(path)
        if not self._pending:
            self._pending = True
            self._spawn(self._rescan_soon())

    async def _rescan_soon(self) -> None:
        try:
            await self.rescan()
        except OSError as e:
            log.warning("rescan failed: %s", e)
        finally:
            self._pending = False

    def stop(self) -> None:
        self._stop.set()


def _scan(folders: list[Path], cfg: Config, exclude: list[Path], stop: threading.Event) -> Index:
    return scan(
        folders,
        chunk_size=cfg.chunk_size,
        cache_path=cfg.index_cache,
        exclude=exclude,
        stop=stop,
        links=cfg.links,
    )
