# What a search has found so far and when it is over, for every strategy; and the `probe`
# strategy itself (ask random peers one at a time, no relaying). Sans-IO: the shell sends what
# `next_ask` returns, reports replies and failures back, and passes the clock in.
from __future__ import annotations

import enum
import random
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from zwalk.core import protocol as p

K = TypeVar("K", bound=Hashable)  # how the shell names a peer


class Verdict(enum.StrEnum):
    HIT = "hit"
    MISS = "miss"
    TIMEOUT = "timeout"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Hop(Generic[K]):
    peer: K
    latency: float  # seconds from ask to answer (or to giving up)
    verdict: Verdict
    hits: int = 0


@dataclass(slots=True)
class Found(Generic[K]):
    """One distinct content id and every peer known to hold it."""

    cid: bytes
    name: str
    size: int
    holders: dict[K, str] = field(default_factory=dict)  # peer -> its relative path
    mtime_ms: int = 0  # the newest modification time a holder reported (0: unknown)


class Outcome(Generic[K]):
    """What every searcher adds up: distinct hits (by content id) with their holders, the trace,
    and when the first hit came. Subclasses set these attributes in their constructors."""

    found: dict[bytes, Found[K]]
    trace: list[Hop[K]]
    want: int
    started: float
    ended_at: float | None
    first_hit_hops: int | None
    first_hit_at: float | None

    def _add_hits(self, at: K, hits: list[p.Hit], hops: int, now: float, latency: float) -> None:
        for h in hits:
            f = self.found.setdefault(h.cid, Found(cid=h.cid, name=h.name, size=h.size))
            f.holders.setdefault(at, h.path)
            f.mtime_ms = max(f.mtime_ms, h.mtime_ms)
        self.trace.append(Hop(at, latency, Verdict.HIT if hits else Verdict.MISS, len(hits)))
        if hits and self.first_hit_hops is None:
            self.first_hit_hops = hops
            self.first_hit_at = now

    @property
    def satisfied(self) -> bool:
        return len(self.found) >= self.want

    linger: float | None = None  # set by searches that want every hit (see lingered)

    def lingered(self, now: float) -> bool:
        """A search that wants every hit still ends once a hit is in and the search has gone
        on for `linger` seconds after it (or as long again as the hit took, if more): walkers
        lost at a dead peer must not hold it until the deadline."""
        if self.linger is None or self.first_hit_at is None:
            return False
        return now >= self.first_hit_at + max(self.linger, self.first_hit_at - self.started)

    def ranked(self) -> list[Found[K]]:
        """Best first: most holders (fastest to fetch), then the newest, then name, then
        content id: the same hits always rank the same."""
        return sorted(
            self.found.values(), key=lambda f: (-len(f.holders), -f.mtime_ms, f.name, f.cid)
        )


class WalkOutcome(Outcome[K]):
    """Outcome of a search whose copies travel on by themselves (kwalk, flood)."""

    visited: set[K]
    known: int

    @property
    def coverage(self) -> float:
        return min(1.0, len(self.visited) / self.known) if self.known else 0.0


class ProbeSearch(Outcome[K]):
    def __init__(
        self,
        peers: Iterable[K],
        *,
        rng: random.Random,
        now: float,
        deadline: float,
        want: int = 1,
    ) -> None:
        self._order = list(dict.fromkeys(peers))
        rng.shuffle(self._order)
        self.known = len(self._order)
        self.started = now
        self.deadline = deadline
        self.want = want  # distinct hits that satisfy the search
        self.found: dict[bytes, Found[K]] = {}
        self.trace: list[Hop[K]] = []
        self.messages = 0
        self.first_hit_hops: int | None = None
        self.first_hit_at: float | None = None
        self._pending: dict[K, float] = {}
        self.ended_at: float | None = None

    # --- what to do -------------------------------------------------------------------------
    def next_ask(self, now: float) -> K | None:
        """The next peer to send the query to, or None (wait for a reply, or done)."""
        if self.done(now) or self._pending or not self._order:
            return None
        peer = self._order.pop()
        self._pending[peer] = now
        self.messages += 1
        return peer

    def done(self, now: float) -> bool:
        if self.ended_at is not None:
            return True
        if (
            len(self.found) >= self.want
            or now >= self.deadline
            or self.lingered(now)
            or (not self._order and not self._pending)
        ):
            self.ended_at = now
            return True
        return False

    # --- what happened ----------------------------------------------------------------------
    def on_reply(self, peer: K, hits: Iterable[p.Hit], now: float) -> None:
        sent = self._pending.pop(peer, None)
        if sent is None:
            return  # late or unsolicited: ignored
        self._add_hits(peer, list(hits), len(self.trace) + 1, now, now - sent)

    def on_failure(self, peer: K, now: float, *, timeout: bool) -> None:
        sent = self._pending.pop(peer, None)
        if sent is not None:
            self.trace.append(Hop(peer, now - sent, Verdict.TIMEOUT if timeout else Verdict.ERROR))

    # --- the outcome ------------------------------------------------------------------------
    @property
    def visited(self) -> int:
        return sum(1 for h in self.trace if h.verdict in (Verdict.HIT, Verdict.MISS))

    @property
    def coverage(self) -> float:
        return self.visited / self.known if self.known else 0.0
