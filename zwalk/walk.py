# Search policy, sans-IO: which peer to ask next, what the answers add up to, when to stop.
#
# The shell sends what `next_ask` returns, reports replies and failures back, and passes the
# clock in; nothing here sleeps or touches a socket, so the policy is tested with a fake clock
# and fake peers. This is the `probe` strategy (ask random peers one at a time, as the original
# teaching script did); the k-walker random walk joins it behind the same interface.
from __future__ import annotations

import enum
import random
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from zwalk import protocol as p

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


class ProbeSearch(Generic[K]):
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
        hits = list(hits)
        for h in hits:
            f = self.found.setdefault(h.cid, Found(cid=h.cid, name=h.name, size=h.size))
            f.holders.setdefault(peer, h.path)
        self.trace.append(Hop(peer, now - sent, Verdict.HIT if hits else Verdict.MISS, len(hits)))
        if hits and self.first_hit_hops is None:
            self.first_hit_hops = len(self.trace)

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

    def elapsed(self, now: float) -> float:
        return (self.ended_at if self.ended_at is not None else now) - self.started

    def ranked(self) -> list[Found[K]]:
        """Best first: most holders (fastest to fetch), then name, then content id."""
        return sorted(self.found.values(), key=lambda f: (-len(f.holders), f.name, f.cid))
