# One source of a download, sans-IO: what is out to it, what it delivers (rate and round trip,
# measured as BBR samples them) and what that makes its frame, window and deadline. The
# transfer options and their defaults are written here once (config.py reads them).
from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

S = TypeVar("S", bound=Hashable)  # how the shell names a source

MIB = 1 << 20
MIN_RATE = 125_000  # bytes/s (1 Mbit/s): what a deadline assumes before a rate is measured
STALL_FACTOR = 8.0  # a frame may take this many times what the rate predicts
RATE_SAMPLES = 16  # delivery-rate samples kept per source (the estimate is their maximum) ...
RATE_HORIZON = 2.0  # ... from at most this many seconds back (older ones are forgotten)
GAP_SHARE = 1 / 16  # pipeline a second frame when the round trip costs more than this share


@dataclass(frozen=True, slots=True)
class TransferOptions:
    frame_bytes: int = 4 * MIB  # the largest frame (whole chunks); slow links get smaller ones
    window: int = 2 * MIB  # bytes in flight per source until its rate is measured
    max_window: int = 64 * MIB
    max_total: int = 96 * MIB  # bytes outstanding over all sources: bounds the memory used
    queue_target: float = 0.25  # seconds of a source's rate in flight beyond its round trip
    stall_grace: float = 2.0  # seconds a source may be late beyond what its rate predicts
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
    delivered: int  # the source's delivered bytes when this was sent (for the rate sample) ...
    delivered_at: float  # ... and when those had arrived
    arrived: bool = False  # the reply is here and waits to be verified and written


@dataclass(slots=True)
class SourceState:
    window: int  # bytes this source may have on their way
    frame_chunks: int  # chunks asked of it in one frame
    outstanding: dict[int, Outstanding] = field(default_factory=dict)  # first chunk -> frame
    good: int = 0  # chunks this source delivered first
    bytes: int = 0
    rate: float | None = None  # bytes/s it delivers, once measured
    rtt: float | None = None  # least round trip of a small request to it
    delivered: int = 0  # payload bytes that arrived from it
    delivered_at: float = 0.0  # when the last of them arrived (or its pipe started again)
    rate_samples: deque[tuple[float, float]] = field(default_factory=deque)  # (when, bytes/s)
    failures: int = 0  # failures in a row (timeouts, errors); a good frame resets them
    retry_at: float = 0.0  # no requests before this time (backing off after a failure)
    excluded: str | None = None  # why this source gets no more work

    @property
    def in_flight(self) -> int:
        """Bytes asked of it that have not arrived yet."""
        return sum(o.nbytes for o in self.outstanding.values() if not o.arrived)

    @property
    def held(self) -> int:
        """Bytes asked of it that are not yet verified and written (in flight or arrived)."""
        return sum(o.nbytes for o in self.outstanding.values())

    def head(self) -> Outstanding | None:
        """The oldest frame still on its way: a source answers in order."""
        waiting = [o for o in self.outstanding.values() if not o.arrived]
        return min(waiting, key=lambda o: o.serial) if waiting else None

    def deadline(self, stall_grace: float) -> float | None:
        """When the oldest frame on its way is late: its bytes at the measured rate (or
        MIN_RATE before there is one), from when the source could start on it."""
        head = self.head()
        if head is None:
            return None
        start = max(head.sent, self.delivered_at)
        expected = (self.rtt or 0.0) + head.nbytes / (self.rate or MIN_RATE)
        return start + STALL_FACTOR * expected + stall_grace

    def sample_rate(self, now: float, rate: float) -> None:
        samples = self.rate_samples
        samples.append((now, rate))
        while len(samples) > RATE_SAMPLES or (
            len(samples) > 2 and samples[0][0] < now - RATE_HORIZON
        ):
            samples.popleft()
        self.rate = max(r for _, r in samples)

    def fit(
        self, chunk_size: int, max_frame_chunks: int, max_window: int, queue_target: float
    ) -> None:
        """Frame and window from the rate: a frame takes about half the queue target, the
        window holds a frame, the round trip and the queue target."""
        if not self.rate:
            return
        rtt = self.rtt or 0.0
        self.frame_chunks = max(
            1, min(max_frame_chunks, int(self.rate * queue_target / 2) // chunk_size)
        )
        frame = self.frame_chunks * chunk_size
        window = frame + self.rate * (rtt + queue_target)
        if self.rate * rtt > GAP_SHARE * frame:
            window = max(window, 2 * frame)  # long round trip: keep the next frame coming
        self.window = int(min(max_window, max(frame, window)))


def unrecorded_limit(sources: Iterable[SourceState], chunk_size: int) -> int:
    """Verified bytes a download may have written and not yet named in its .part's progress
    record before a record is due, whatever the time since the last: half the windows of the
    sources still at work (at least one chunk). What a crash then costs -- these bytes, plus what
    is verified while that record is saved -- stays within one window, on a fast link as on a
    slow one, where a record every so many seconds would lose that many seconds of the link."""
    return max(chunk_size, sum(st.window for st in sources if st.excluded is None) // 2)
