# Chunk scheduling for one download, sans-IO: which chunks to ask which source for, how much to
# keep in flight, and what a good, bad or missing answer changes. The shell does the sending,
# hashing and writing and reports back; time is passed in. A chunk counts only once its BLAKE3
# matched the file-info.
#
# A request asks for a run of consecutive chunks (one frame). Each source has a window of bytes
# it may have outstanding, adapted to its link the way TCP Vegas does: while a frame comes back
# in about the least time seen, the link has room and the window grows by a frame; once frames
# queue up (a reply takes far longer than the least time seen), it shrinks. A window is only
# freed once the frame is verified and written, so the downloader's memory is bounded by the sum
# of the windows, whatever the file's size.
from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from zwalk import protocol as p

S = TypeVar("S", bound=Hashable)  # how the shell names a source

MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class TransferOptions:
    frame_bytes: int = 4 * MIB  # bytes asked for in one request (whole chunks)
    window: int = 16 * MIB  # bytes outstanding per source to start with; adapted to the link
    max_window: int = 64 * MIB
    max_total: int = 96 * MIB  # bytes outstanding over all sources: bounds the memory used
    chunk_timeout: float = 10.0  # seconds for one frame before the source counts as failing
    info_timeout: float = 2.0
    workers: int = 2  # threads that verify and write


DEFAULTS = TransferOptions()  # the one place the defaults are written (config.py reads them)


@dataclass(frozen=True, slots=True)
class Request(Generic[S]):
    source: S
    index: int  # first chunk
    count: int  # consecutive chunks, one frame
    duplicate: bool = False  # end-game: the same chunks are out to another source too
    serial: int = 0  # tells this request from an earlier one for the same chunks


@dataclass(slots=True)
class Outstanding:
    index: int
    count: int
    nbytes: int
    sent: float
    duplicate: bool
    serial: int
    arrived: bool = False  # the reply is here and waits to be verified and written


@dataclass(slots=True)
class SourceState:
    window: int  # bytes this source may have outstanding
    outstanding: dict[int, Outstanding] = field(default_factory=dict)  # first chunk -> frame
    good: int = 0  # chunks this source delivered first
    bytes: int = 0
    min_rtt: float | None = None  # least reply time seen for a full frame
    failures: int = 0  # failures in a row (timeouts, errors); a good frame resets them
    retry_at: float = 0.0  # no requests before this time (backing off after a failure)
    excluded: str | None = None  # why this source gets no more work

    @property
    def in_flight(self) -> int:
        return sum(o.nbytes for o in self.outstanding.values())


class ChunkScheduler(Generic[S]):
    def __init__(
        self,
        info: p.FileInfo,
        sources: Iterable[S],
        *,
        frame_bytes: int = DEFAULTS.frame_bytes,
        window: int = DEFAULTS.window,
        max_window: int = DEFAULTS.max_window,
        max_total: int = DEFAULTS.max_total,
        timeout: float = DEFAULTS.chunk_timeout,
        retry_after: float = 1.0,
        max_failures: int = 3,
        have: Iterable[int] = (),
    ) -> None:
        self.info = info
        self.count = p.chunk_count(info.size, info.chunk_size)
        self.frame_chunks = max(1, frame_bytes // info.chunk_size)
        self.frame_bytes = self.frame_chunks * info.chunk_size
        self.min_window = 2 * self.frame_bytes  # one frame on the wire, one being answered
        self.max_window = max(max_window, self.min_window)
        self.initial_window = min(max(window, self.min_window), self.max_window)
        self.max_total = max(max_total, self.max_window)
        self.timeout = timeout
        self.retry_after = retry_after
        self.max_failures = max_failures
        self.done_chunks: set[int] = {i for i in have if 0 <= i < self.count}
        self._missing: list[int] = [i for i in range(self.count) if i not in self.done_chunks]
        self._next = 0  # position in _missing of the first chunk never handed out
        self._requeued: list[int] = []  # chunks whose frame failed, asked for again first
        self.sources: dict[S, SourceState] = {}
        for s in sources:
            self.add_source(s)
        self.bytes_done = sum(self.span(i)[1] for i in self.done_chunks)
        self.duplicates = 0  # end-game requests sent
        self._serial = 0

    def add_source(self, source: S) -> None:
        self.sources.setdefault(source, SourceState(window=self.initial_window))

    # --- geometry ---------------------------------------------------------------------------
    def span(self, index: int, count: int = 1) -> tuple[int, int]:
        """(offset, length) in the file of `count` chunks from `index`."""
        offset = index * self.info.chunk_size
        return offset, max(0, min(count * self.info.chunk_size, self.info.size - offset))

    def expected_hash(self, index: int) -> bytes:
        return self.info.chunk_hash(index)

    # --- decisions --------------------------------------------------------------------------
    def _usable(self, st: SourceState, now: float) -> bool:
        if st.excluded is not None or now < st.retry_at:
            return False
        st.retry_at = 0.0  # its pause is over
        return True

    def _out(self, st: SourceState, index: int, count: int, now: float, dup: bool) -> Outstanding:
        self._serial += 1
        o = Outstanding(index, count, self.span(index, count)[1], now, dup, self._serial)
        st.outstanding[index] = o
        return o

    def _take_frame(self) -> tuple[int, int] | None:
        """The next run of consecutive chunks nobody has been asked for."""
        while self._requeued:
            i = self._requeued.pop(0)
            if i in self.done_chunks or self._is_out(i):
                continue
            count = 1
            while (
                count < self.frame_chunks
                and self._requeued
                and self._requeued[0] == i + count
                and self._requeued[0] not in self.done_chunks
            ):
                self._requeued.pop(0)
                count += 1
            return i, count
        missing = self._missing
        while self._next < len(missing) and missing[self._next] in self.done_chunks:
            self._next += 1
        if self._next >= len(missing):
            return None
        i = missing[self._next]
        count = 1
        self._next += 1
        while (
            count < self.frame_chunks
            and self._next < len(missing)
            and missing[self._next] == i + count
            and missing[self._next] not in self.done_chunks
        ):
            self._next += 1
            count += 1
        return i, count

    def _is_out(self, index: int) -> bool:
        return any(
            o.index <= index < o.index + o.count
            for st in self.sources.values()
            for o in st.outstanding.values()
        )

    def _total_in_flight(self) -> int:
        return sum(st.in_flight for st in self.sources.values())

    def requests(self, now: float) -> list[Request[S]]:
        """Frames to ask for now: fill each usable source's window, round-robin, then (once
        nothing is left to hand out) let idle sources duplicate the oldest frames still out."""
        out: list[Request[S]] = []
        total = self._total_in_flight()
        usable = [s for s, st in self.sources.items() if self._usable(st, now)]
        progress = True
        while progress:
            progress = False
            for s in usable:
                st = self.sources[s]
                if st.in_flight + self.frame_bytes > st.window and st.outstanding:
                    continue
                if total + self.frame_bytes > self.max_total and total:
                    return out
                frame = self._take_frame()
                if frame is None:
                    return out + self._endgame(usable, now)
                o = self._out(st, *frame, now, False)
                total += o.nbytes
                out.append(Request(s, o.index, o.count, False, o.serial))
                progress = True
        return out

    def _endgame(self, usable: list[S], now: float) -> list[Request[S]]:
        """Every chunk is asked for: a source with nothing to do takes a copy of the oldest
        frame another source still owes (one copy each), so the last frames do not wait on the
        slowest source."""
        out: list[Request[S]] = []
        total = self._total_in_flight()
        owed = sorted(
            (
                (s, o)
                for s, st in self.sources.items()
                for o in st.outstanding.values()
                if not o.duplicate
            ),
            key=lambda so: (so[1].sent, so[1].index),
        )
        copied = {  # chunks a copy is already out for
            i
            for st in self.sources.values()
            for o in st.outstanding.values()
            if o.duplicate
            for i in range(o.index, o.index + o.count)
        }
        for s in usable:
            st = self.sources[s]
            if st.outstanding:
                continue
            for owner, o in owed:
                if owner == s:
                    continue
                # the first run of the frame's chunks that is neither done nor copied yet
                todo = [
                    i
                    for i in range(o.index, o.index + o.count)
                    if i not in self.done_chunks and i not in copied
                ]
                if not todo:
                    continue
                index = count = todo[0]
                while count + 1 in todo:
                    count += 1
                count = count - index + 1
                if total + self.span(index, count)[1] > self.max_total:
                    return out
                copied.update(range(index, index + count))
                o = self._out(st, index, count, now, True)
                total += o.nbytes
                self.duplicates += 1
                out.append(Request(s, index, count, True, o.serial))
                break
        return out

    def overdue(self, now: float) -> list[Request[S]]:
        return [
            Request(s, o.index, o.count, o.duplicate, o.serial)
            for s, st in self.sources.items()
            for o in st.outstanding.values()
            if not o.arrived and now - o.sent >= self.timeout
        ]

    def next_deadline(self) -> float | None:
        """When something is next due: a frame's timeout, or a source's retry."""
        times = [
            o.sent + self.timeout
            for st in self.sources.values()
            for o in st.outstanding.values()
            if not o.arrived
        ]
        times += [
            st.retry_at
            for st in self.sources.values()
            if st.excluded is None and not st.outstanding and st.retry_at > 0
        ]
        return min(times) if times else None

    # --- events -----------------------------------------------------------------------------
    def _current(self, source: S, index: int, serial: int | None) -> Outstanding | None:
        """The outstanding frame an answer is for; None if that request was given up on or
        answered by another source (a later request for the same chunks does not count)."""
        st = self.sources.get(source)
        o = st.outstanding.get(index) if st is not None else None
        return o if o is not None and (serial is None or o.serial == serial) else None

    def on_arrival(self, source: S, index: int, serial: int | None = None) -> None:
        """The reply is here; verifying and writing it is up to us, not the source, so its
        timeout no longer runs (a slow disk must not count against the sources). Its bytes
        still count against the window until on_frame."""
        o = self._current(source, index, serial)
        if o is not None:
            o.arrived = True

    def accepts(self, source: S, index: int, serial: int | None = None) -> bool:
        """Whether an answer from this source for the frame at `index` is still awaited."""
        return self._current(source, index, serial) is not None

    def on_frame(
        self,
        source: S,
        index: int,
        good: Iterable[int],
        bad: Iterable[int] = (),
        *,
        now: float,
        rtt: float | None = None,
        reason: str = "hash mismatch",
        serial: int | None = None,
    ) -> list[int]:
        """A frame came back and its chunks were checked (`bad`: any that failed, or that the
        reply did not carry as asked). Returns the good chunks that were new."""
        bad, good = list(bad), list(good)
        st = self.sources[source]
        o = self._current(source, index, serial)
        if o is not None:
            del st.outstanding[index]
            if not bad:  # end-game: another source's copy of these chunks is not needed now
                for other in self.sources.values():
                    twin = other.outstanding.get(index)
                    if twin is not None and twin.count == o.count:
                        del other.outstanding[index]
        new: list[int] = []
        for i in good:
            length = self.span(i)[1]
            if i in self.done_chunks:
                continue  # another copy came first
            self.done_chunks.add(i)
            new.append(i)
            st.good += 1
            st.bytes += length
            self.bytes_done += length
        if bad:
            self.exclude(source, f"sent bad data for chunk {bad[0]}: {reason}")
            # everything the frame should have brought and did not goes back in the queue
            owed = range(o.index, o.index + o.count) if o is not None else bad
            self._requeue(i for i in owed if i not in self.done_chunks)
            return new
        st.failures = 0
        if o is not None and rtt is not None:
            self._adapt(st, o, rtt)
        return new

    def _adapt(self, st: SourceState, o: Outstanding, rtt: float) -> None:
        if o.count < self.frame_chunks or rtt <= 0:
            return  # a short frame says little about the link
        if st.min_rtt is None or rtt < st.min_rtt:
            st.min_rtt = rtt
        # Bytes queued somewhere on the path: what the window would carry at the least reply
        # time, minus what it carries now (TCP Vegas's diff, in bytes).
        queued = st.window * (1 - st.min_rtt / rtt)
        if queued < self.frame_bytes:
            st.window = min(self.max_window, st.window + self.frame_bytes)
        elif queued > 3 * self.frame_bytes:
            st.window = max(self.min_window, st.window - self.frame_bytes)

    def on_failure(
        self, source: S, index: int, reason: str, now: float, serial: int | None = None
    ) -> None:
        """A request timed out, the source answered with an error, or it went away: its frames
        go back in the queue and it sits out a while (longer each time in a row); after
        `max_failures` in a row it is dropped."""
        st = self.sources[source]
        if self._current(source, index, serial) is None:
            return  # already given up on, or answered by another source
        self._release(st)
        st.failures += 1
        st.window = max(self.min_window, st.window // 2)
        if st.failures >= self.max_failures:
            st.excluded = f"{reason} ({st.failures} times in a row)"
        else:
            st.retry_at = now + self.retry_after * 2 ** (st.failures - 1)

    def on_busy(self, source: S, index: int, now: float, serial: int | None = None) -> None:
        """The source said it is serving as much as it can: not a failure, but a sign to ask
        less of it. Its frames go back in the queue, its window halves, and it pauses briefly."""
        st = self.sources[source]
        if self._current(source, index, serial) is None:
            return
        self._release(st)
        st.window = max(self.min_window, st.window // 2)
        st.retry_at = now + self.retry_after / 4

    def exclude(self, source: S, reason: str) -> None:
        st = self.sources[source]
        if st.excluded is None:
            st.excluded = reason
        self._release(st)

    def _release(self, st: SourceState) -> None:
        for o in st.outstanding.values():
            self._requeue(range(o.index, o.index + o.count))
        st.outstanding.clear()

    def _requeue(self, chunks: Iterable[int]) -> None:
        todo = sorted(set(self._requeued) | {i for i in chunks if i not in self.done_chunks})
        self._requeued = todo

    # --- state ------------------------------------------------------------------------------
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
