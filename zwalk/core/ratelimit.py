# Per-peer rate limits, sans-IO (time passed in): token buckets for the requests that make a node
# work for someone else -- relaying walks and floods, answering searches, reading chunks. What a
# peer sends beyond its bucket is answered `busy` (docs/PROTOCOL.md section 9). Buckets are kept
# for the MAX_LIMITED peers heard from last: the table is bounded whoever sends.
from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

MAX_LIMITED = 1024  # peers whose buckets are kept


class Work(enum.StrEnum):
    WALK = "walk"
    FLOOD = "flood"
    SEARCH = "search"
    CHUNKS = "chunks"


@dataclass(frozen=True, slots=True)
class Rate:
    per_second: float
    burst: float


# Far above what a well-behaved peer sends: a download asks a source for at most a few hundred
# frames a second (its window follows the link), a search starts a few walkers, a walk passes a
# node once per hop.
RATES = {
    Work.WALK: Rate(200.0, 400.0),
    Work.FLOOD: Rate(100.0, 200.0),
    Work.SEARCH: Rate(100.0, 200.0),
    Work.CHUNKS: Rate(1000.0, 2000.0),
}


@dataclass(slots=True)
class Bucket:
    tokens: float
    at: float

    def take(self, rate: Rate, now: float) -> bool:
        self.tokens = min(rate.burst, self.tokens + (now - self.at) * rate.per_second)
        self.at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class RateLimits:
    def __init__(self, rates: dict[Work, Rate] = RATES, max_peers: int = MAX_LIMITED) -> None:
        self.rates = rates
        self.max_peers = max_peers
        self._buckets: OrderedDict[tuple[Hashable, Work], Bucket] = OrderedDict()

    def allow(self, peer: Hashable, work: Work, now: float) -> bool:
        """Whether the peer may have this piece of work done now (and count it)."""
        key = (peer, work)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = Bucket(self.rates[work].burst, now)
            while len(self._buckets) > self.max_peers * len(self.rates):
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(self.rates[work], now)
