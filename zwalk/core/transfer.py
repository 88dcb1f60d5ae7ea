# Chunk scheduling for one download, sans-IO: which chunks to ask which source for, how much to
# keep in flight, and what a good, bad, late or missing answer changes. The shell does the
# sending, hashing and writing and reports back; time is passed in. A chunk counts only once its
# BLAKE3 matched the file-info.
#
# A request asks for a run of consecutive chunks (one frame). What each source may have on its
# way follows its link, from 1 Mbit/s to 10 Gbit/s: the scheduler measures each source's delivery
# rate (bytes that arrived over the time they took, as BBR samples it) and its round trip, and
# keeps in flight one frame plus `queue_target` seconds of that rate beyond the round trip. So
# what waits toward a source stays within about `queue_target` (or one frame, when a single
# chunk takes longer than that), instead of a fixed number of bytes that takes seconds on a slow
# link, and a frame is small enough to come back within that time too. A request is late when
# nothing has arrived from its source for longer than its rate says the frame takes, times
# STALL_FACTOR, plus `stall_grace`: deadlines follow the bytes and the rate, not a fixed clock.
#
# Memory: a frame counts against its source's window until it has arrived, and against
# `max_total` (all sources) until it is verified and written, so the downloader holds at most
# `max_total` whatever the file's size.
from __future__ import annotations

from collections.abc import Iterable
from typing import Generic

from zwalk.core import protocol as p
from zwalk.core.sources import DEFAULTS, Outstanding, Request, S, SourceState


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
        queue_target: float = DEFAULTS.queue_target,
        stall_grace: float = DEFAULTS.stall_grace,
        retry_after: float = 1.0,
        max_failures: int = 3,
        have: Iterable[int] = (),
    ) -> None:
        self.info = info
        self.count = p.chunk_count(info.size, info.chunk_size)
        cs = info.chunk_size
        self.max_frame_chunks = max(1, frame_bytes // cs)
        self.max_window = max(max_window, cs)
        self.initial_window = min(max(window, cs), self.max_window)
        # before a rate is known: two frames in the first window
        first = self.initial_window // 2 // cs
        self.initial_frame_chunks = max(1, min(self.max_frame_chunks, first))
        self.max_total = max(max_total, self.max_window)
        self.queue_target = queue_target
        self.stall_grace = stall_grace
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

    def add_source(self, source: S, rtt: float | None = None) -> None:
        """A source joins; `rtt`, if known, is the time a small request to it took."""
        self.sources.setdefault(
            source, SourceState(window=self.initial_window, frame_chunks=self.initial_frame_chunks)
        )
        if rtt is not None:
            self.on_rtt(source, rtt)

    def on_rtt(self, source: S, rtt: float) -> None:
        """A small request to the source (file-info, a ping) took `rtt` seconds there and back.
        Frames cannot tell: their round trip hides under the bytes of the frames ahead, or
        under their own when the pipe was empty."""
        st = self.sources.get(source)
        if st is None or not rtt >= 0:
            return
        st.rtt = rtt if st.rtt is None else min(st.rtt, rtt)
        self._fit(st)

    # --- geometry ---------------------------------------------------------------------------
    def span(self, index: int, count: int = 1) -> tuple[int, int]:
        """(offset, length) in the file of `count` chunks from `index`."""
        offset = index * self.info.chunk_size
        return offset, max(0, min(count * self.info.chunk_size, self.info.size - offset))

    # --- decisions --------------------------------------------------------------------------
    def _usable(self, st: SourceState, now: float) -> bool:
        if st.excluded is not None or now < st.retry_at:
            return False
        st.retry_at = 0.0  # its pause is over
        return True

    def _out(self, st: SourceState, index: int, count: int, now: float, dup: bool) -> Outstanding:
        self._serial += 1
        if not st.in_flight:  # its pipe was empty: the next delivery interval starts now
            st.delivered_at = now
        o = Outstanding(
            index, count, self.span(index, count)[1], now, dup, self._serial,
            st.delivered, st.delivered_at,
        )  # fmt: skip
        st.outstanding[index] = o
        return o

    def _take_frame(self, most: int) -> tuple[int, int] | None:
        """The next run of at most `most` consecutive chunks nobody has been asked for."""
        while self._requeued:
            i = self._requeued.pop(0)
            if i in self.done_chunks or self._is_out(i):
                continue
            count = 1
            while (
                count < most
                and self._requeued
                and self._requeued[0] == i + count
                and self._requeued[0] not in self.done_chunks
                and not self._is_out(i + count)
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
            count < most
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

    def _total_held(self) -> int:
        return sum(st.held for st in self.sources.values())

    def _has_room(self, st: SourceState) -> bool:
        """Whether one more frame fits the source's window (an idle source always gets one)."""
        in_flight = st.in_flight
        return not in_flight or in_flight + st.frame_chunks * self.info.chunk_size <= st.window

    def requests(self, now: float) -> list[Request[S]]:
        """Frames to ask for now: fill each usable source's window, round-robin, then (once
        nothing is left to hand out) let idle sources duplicate the oldest frames still out."""
        out: list[Request[S]] = []
        total = self._total_held()
        usable = [s for s, st in self.sources.items() if self._usable(st, now)]
        progress = True
        while progress:
            progress = False
            for s in usable:
                st = self.sources[s]
                if not self._has_room(st):
                    continue
                frame_bytes = st.frame_chunks * self.info.chunk_size
                if total + frame_bytes > self.max_total and total:
                    return out
                frame = self._take_frame(st.frame_chunks)
                if frame is None:
                    return out + self._endgame(usable, now)
                o = self._out(st, *frame, now, False)
                total += o.nbytes
                out.append(Request(s, o.index, o.count, False, o.serial))
                progress = True
        return out

    def _endgame(self, usable: list[S], now: float) -> list[Request[S]]:
        """Every chunk is asked for: a source with nothing on its way takes a copy of the oldest
        frame another source still owes (one copy each), so the last frames do not wait on the
        slowest source."""
        out: list[Request[S]] = []
        total = self._total_held()
        owed = sorted(
            (
                (s, o)
                for s, st in self.sources.items()
                for o in st.outstanding.values()
                if not o.duplicate and not o.arrived
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
            if st.in_flight:
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
        """The oldest frame of each source that is late (the frames behind it wait on it)."""
        out = []
        for s, st in self.sources.items():
            due = st.deadline(self.stall_grace)
            head = st.head()
            if due is not None and head is not None and now >= due:
                out.append(Request(s, head.index, head.count, head.duplicate, head.serial))
        return out

    def next_deadline(self) -> float | None:
        """When something is next due: a source's deadline, or a source's retry."""
        times = [
            d for st in self.sources.values() if (d := st.deadline(self.stall_grace)) is not None
        ]
        times += [
            st.retry_at
            for st in self.sources.values()
            if st.excluded is None and not st.in_flight and st.retry_at > 0
        ]
        return min(times) if times else None

    def late_by(self, source: S, now: float) -> float:
        """Seconds since anything arrived from the source while it owed a frame (for reasons)."""
        st = self.sources[source]
        head = st.head()
        return 0.0 if head is None else max(0.0, now - max(head.sent, st.delivered_at))

    # --- events -----------------------------------------------------------------------------
    def _current(self, source: S, index: int, serial: int | None) -> Outstanding | None:
        """The outstanding frame an answer is for; None if that request was given up on or
        answered by another source (a later request for the same chunks does not count)."""
        st = self.sources.get(source)
        o = st.outstanding.get(index) if st is not None else None
        return o if o is not None and (serial is None or o.serial == serial) else None

    def on_arrival(self, source: S, index: int, serial: int | None = None, *, now: float) -> None:
        """The reply is here: the link delivered its bytes, which measures its rate and round
        trip and frees room in its window. Verifying and writing it is up to us, not the
        source, so no deadline runs for it any more; its bytes count against `max_total` until
        on_frame."""
        o = self._current(source, index, serial)
        if o is None or o.arrived:
            return
        st = self.sources[source]
        o.arrived = True
        st.delivered += o.nbytes
        interval = now - o.delivered_at
        if interval > 0 and o.count >= st.frame_chunks:  # a short frame says little
            st.sample_rate(now, (st.delivered - o.delivered) / interval)
        st.delivered_at = now
        self._fit(st)

    def on_stale_arrival(self, source: S, now: float) -> None:
        """A reply the scheduler had given up on (late, or its source failed) came after all:
        the source is delivering, so what it owes now waits behind what it was still sending
        and is not late yet. (The shell still writes the chunks it brought that are missing,
        and reports them with `on_frame`.)"""
        st = self.sources.get(source)
        if st is not None and st.in_flight:
            st.delivered_at = now

    def _fit(self, st: SourceState) -> None:
        st.fit(self.info.chunk_size, self.max_frame_chunks, self.max_window, self.queue_target)

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
        reason: str = "hash mismatch",
        serial: int | None = None,
    ) -> list[int]:
        """A frame came back and its chunks were checked (`bad`: any that failed, or that the
        reply did not carry as asked). Returns the good chunks that were new."""
        bad, good = list(bad), list(good)
        st = self.sources[source]
        o = self._current(source, index, serial)
        if o is not None:
            if not o.arrived:
                self.on_arrival(source, index, serial, now=now)
            del st.outstanding[index]
            if not bad:  # end-game: another source's copy of these chunks is not needed now
                for other in self.sources.values():
                    twin = other.outstanding.get(index)
                    # (one that arrived is being written: its bytes are still in memory)
                    if twin is not None and twin.count == o.count and not twin.arrived:
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
        return new

    def on_failure(
        self, source: S, index: int, reason: str, now: float, serial: int | None = None
    ) -> None:
        """A request was late, the source answered with an error, or it went away: its frames
        go back in the queue and it sits out a while (longer each time in a row); after
        `max_failures` in a row it is dropped."""
        st = self.sources[source]
        if self._current(source, index, serial) is None:
            return  # already given up on, or answered by another source
        self._release(st)
        st.failures += 1
        self._slow_down(st)
        if st.failures >= self.max_failures:
            st.excluded = f"{reason} ({st.failures} times in a row)"
        else:
            st.retry_at = now + self.retry_after * 2 ** (st.failures - 1)

    def on_busy(self, source: S, index: int, now: float, serial: int | None = None) -> None:
        """The source said it is serving as much as it can: not a failure, but a sign to ask
        less of it. Its frames go back in the queue, it is asked at half its rate, and it
        pauses briefly."""
        st = self.sources[source]
        if self._current(source, index, serial) is None:
            return
        self._release(st)
        self._slow_down(st)
        st.retry_at = now + self.retry_after / 4

    def _slow_down(self, st: SourceState) -> None:
        """Start again from half the rate (or half the window, with no rate yet)."""
        st.rate_samples.clear()
        if st.rate:
            st.rate /= 2
            self._fit(st)
        else:
            st.window = max(st.frame_chunks * self.info.chunk_size, st.window // 2)

    def exclude(self, source: S, reason: str) -> None:
        st = self.sources[source]
        if st.excluded is None:
            st.excluded = reason
        self._release(st)

    def _release(self, st: SourceState) -> None:
        """Give up on what the source still owes. Frames that arrived are ours to finish."""
        for index, o in list(st.outstanding.items()):
            if not o.arrived:
                self._requeue(range(o.index, o.index + o.count))
                del st.outstanding[index]

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
        return not self.complete and all(
            st.excluded and not st.outstanding for st in self.sources.values()
        )

    @property
    def active_sources(self) -> int:
        return sum(1 for st in self.sources.values() if st.excluded is None)

    def failure_reasons(self) -> dict[S, str]:
        return {s: st.excluded for s, st in self.sources.items() if st.excluded}
