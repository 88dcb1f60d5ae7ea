# Chunk scheduling for one download, sans-IO: which chunk to ask which source for, and what a
# good, bad or missing answer changes. The shell does the sending, hashing and writing and
# reports back; time is passed in. A chunk counts only once its BLAKE3 matched the file-info.
from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from zwalk import protocol as p

S = TypeVar("S", bound=Hashable)  # how the shell names a source


@dataclass(slots=True)
class SourceState:
    inflight: dict[int, float] = field(default_factory=dict)  # chunk -> sent at
    good: int = 0
    bytes: int = 0
    excluded: str | None = None  # why this source gets no more work


class ChunkScheduler(Generic[S]):
    def __init__(
        self,
        info: p.FileInfo,
        sources: Iterable[S],
        *,
        window: int,
        timeout: float,
        have: Iterable[int] = (),
    ) -> None:
        self.info = info
        self.count = p.chunk_count(info.size, info.chunk_size)
        self.window = window
        self.timeout = timeout
        self.done_chunks: set[int] = {i for i in have if 0 <= i < self.count}
        self._queue: deque[int] = deque(i for i in range(self.count) if i not in self.done_chunks)
        self.sources: dict[S, SourceState] = {s: SourceState() for s in sources}
        self.bytes_done = sum(self.span(i)[1] for i in self.done_chunks)

    # --- geometry ---------------------------------------------------------------------------
    def span(self, index: int) -> tuple[int, int]:
        """(offset, length) of a chunk in the file."""
        offset = index * self.info.chunk_size
        return offset, min(self.info.chunk_size, self.info.size - offset)

    def expected_hash(self, index: int) -> bytes:
        return self.info.chunk_hash(index)

    # --- decisions --------------------------------------------------------------------------
    def requests(self, now: float) -> list[tuple[S, int]]:
        """Chunk requests to send now: fill each usable source's window, round-robin."""
        out: list[tuple[S, int]] = []
        active = [s for s, st in self.sources.items() if st.excluded is None]
        progress = True
        while self._queue and progress:
            progress = False
            for s in active:
                st = self.sources[s]
                if self._queue and len(st.inflight) < self.window:
                    i = self._queue.popleft()
                    st.inflight[i] = now
                    out.append((s, i))
                    progress = True
        return out

    def overdue(self, now: float) -> list[tuple[S, int]]:
        return [
            (s, i)
            for s, st in self.sources.items()
            for i, sent in st.inflight.items()
            if now - sent >= self.timeout
        ]

    def next_deadline(self) -> float | None:
        sent = [t for st in self.sources.values() for t in st.inflight.values()]
        return min(sent) + self.timeout if sent else None

    # --- events -----------------------------------------------------------------------------
    def on_good(self, source: S, index: int, now: float) -> None:
        st = self.sources[source]
        st.inflight.pop(index, None)
        if index in self.done_chunks:
            return
        self.done_chunks.add(index)
        length = self.span(index)[1]
        st.good += 1
        st.bytes += length
        self.bytes_done += length

    def on_bad(self, source: S, index: int, reason: str, now: float) -> None:
        """A chunk failed verification: the source lies or is broken, so it gets no more work."""
        self.exclude(source, f"sent bad data for chunk {index}: {reason}")

    def on_failure(self, source: S, index: int, reason: str, now: float) -> None:
        """A request timed out or the source answered with an error."""
        self.exclude(source, reason)

    def exclude(self, source: S, reason: str) -> None:
        st = self.sources[source]
        if st.excluded is None:
            st.excluded = reason
        for i in sorted(st.inflight, reverse=True):
            if i not in self.done_chunks:
                self._queue.appendleft(i)
        st.inflight.clear()

    # --- state ------------------------------------------------------------------------------
    def accepts(self, source: S, index: int) -> bool:
        """Whether an answer from this source for this chunk is still wanted."""
        st = self.sources.get(source)
        return st is not None and st.excluded is None and index in st.inflight

    @property
    def complete(self) -> bool:
        return len(self.done_chunks) == self.count

    @property
    def stuck(self) -> bool:
        """No source left to ask and chunks still missing: the download has failed."""
        return not self.complete and all(st.excluded for st in self.sources.values())

    @property
    def active_sources(self) -> int:
        return sum(1 for st in self.sources.values() if st.excluded is None)

    def failure_reasons(self) -> dict[S, str]:
        return {s: st.excluded for s, st in self.sources.items() if st.excluded}
