# A query copy on its way, and what each node does with one (sans-IO).
#
# A query copy travels from node to node as a Walk. Every node runs a Relay: it checks its own
# index the first time a query reaches it (hits go straight to the searcher) and decides where
# the copy goes next. The searcher runs a KWalkSearch or FloodSearch: it launches the copies,
# collects hits, answers check-backs and knows when to stop. The same objects run in the node
# and in tools/walksim.py.
from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

from zwalk.core.fields import EndReason, Strategy

K = TypeVar("K", bound=Hashable)  # how the shell names a peer


@dataclass(frozen=True, slots=True)
class Walk(Generic[K]):
    """One copy of a query on its way. `path` holds the nodes this walker visited, the searcher
    first; `ttl` is how many more hops it may make; `hops` how many it made to get here."""

    qid: bytes
    strategy: Strategy
    walker: int
    ttl: int
    hops: int
    path: tuple[K, ...]
    check_every: int = 0
    stop_on_hit: bool = False  # end where a hit is found (the searcher wants just one)
    backtrack: bool = False  # this hop went back to where the walker came from

    def avoiding(self, nodes: Iterable[K]) -> Walk[K]:
        """This walker, told of nodes others visited (from a check-back): it goes elsewhere."""
        known = set(self.path)
        extra = tuple(n for n in nodes if n not in known)
        return replace(self, path=self.path + extra) if extra else self

    @property
    def origin(self) -> K:
        return self.path[0]

    def to(self, node: K) -> Walk[K]:
        path = self.path + (node,) if self.strategy is Strategy.KWALK else self.path
        return replace(self, ttl=self.ttl - 1, hops=self.hops + 1, path=path, backtrack=False)


@dataclass(frozen=True, slots=True)
class Forward(Generic[K]):
    to: K
    walk: Walk[K]


@dataclass(frozen=True, slots=True)
class CheckBack(Generic[K]):
    """Ask the searcher whether to go on before the next hop."""

    walk: Walk[K]


@dataclass(frozen=True, slots=True)
class Ended(Generic[K]):
    """Tell the searcher this walker stopped here, and why."""

    walk: Walk[K]
    reason: EndReason


RelayAction = Forward[K] | CheckBack[K] | Ended[K]


class Relay(Generic[K]):
    """What one node does with query copies that reach it. Remembers recent query ids (and
    which neighbours it already sent each to) so that walkers passing through spread out."""

    def __init__(self, me: K, *, memory: int = 4096) -> None:
        self.me = me
        self.memory = memory
        self._sent: OrderedDict[bytes, set[K]] = OrderedDict()

    def arrive(self, walk: Walk[K]) -> bool:
        """Note a query copy; True the first time this node sees the query (check the index)."""
        first = walk.qid not in self._sent
        if first:
            self._sent[walk.qid] = set()
            if len(self._sent) > self.memory:
                self._sent.popitem(last=False)
        else:
            self._sent.move_to_end(walk.qid)
        return first

    def next_step(
        self,
        walk: Walk[K],
        neighbours: Sequence[K],
        rng: random.Random,
        *,
        sender: K | None = None,
        first: bool = True,
        checked: bool = False,
        found_here: bool = False,
    ) -> list[RelayAction[K]]:
        if walk.strategy is Strategy.FLOOD:
            if not first or walk.ttl <= 0:
                return []  # a duplicate, or the last hop: dropped here
            return [Forward(n, walk.to(n)) for n in neighbours if n != sender and n != self.me]
        if found_here and walk.stop_on_hit:
            return [Ended(walk, EndReason.FOUND)]
        if walk.ttl <= 0:
            return [Ended(walk, EndReason.TTL)]
        if walk.check_every and not checked and walk.hops % walk.check_every == 0:
            return [CheckBack(walk)]
        visited = set(walk.path)
        fresh = [n for n in neighbours if n not in visited and n != self.me]
        if not fresh:
            # A leaf, or a corner walked out: step back once to where the walker came from,
            # which may still have neighbours to try. Stuck there too, the walker ends.
            if walk.backtrack or sender is None or sender not in neighbours:
                return [Ended(walk, EndReason.DEAD_END)]
            back = replace(walk.to(sender), backtrack=True)
            return [Forward(sender, back)]
        sent = self._sent.setdefault(walk.qid, set())
        unsent = [n for n in fresh if n not in sent]
        nxt = rng.choice(unsent or fresh)
        sent.add(nxt)
        return [Forward(nxt, walk.to(nxt))]


HANDOVER_TRIES = 3  # next hops one copy may try after the first before it ends at a dead end
# After a `busy` answer the next try waits this long, doubling with each busy answer, up to
# BUSY_REST_MAX: busy passes, and a copy that tried every neighbour of a saturated node in a
# few milliseconds ended at a dead end while waiting a moment would have let it through.
BUSY_REST = 0.25
BUSY_REST_MAX = 2.0


def busy_rest(refusals: int) -> float:
    """How long to wait after the `refusals`-th busy answer (1, 2, ...)."""
    return min(BUSY_REST_MAX, BUSY_REST * 2.0 ** (refusals - 1))


class RelayStep(Generic[K]):
    """One query copy at one node, from its arrival to its hand-over or its end. The shell
    performs each action it is given and reports how it went: the live node over sockets
    (zwalk/net/walks.py), the simulator in its event queue (tools/walksim.py), so the two
    cannot drift apart. Check the index only when `first` holds."""

    def __init__(
        self, relay: Relay[K], walk: Walk[K], rng: random.Random, *, sender: K | None
    ) -> None:
        self.relay = relay
        self.walk = walk
        self.rng = rng
        self.sender = sender
        self.first = relay.arrive(walk)
        self.found_here = False
        self.checked = False
        self.rest = 0.0  # seconds the shell waits before the next action (after a busy answer)
        self._busy = 0
        self._neighbours: list[K] = []
        self._steps = 0

    def start(self, neighbours: Sequence[K], *, found_here: bool) -> list[RelayAction[K]]:
        """What to do once the index was checked: every Forward for a flood (failed ones are
        not retried), else one Forward, CheckBack or Ended (or nothing: a flood's duplicate)."""
        self.found_here = found_here
        self._neighbours = list(neighbours)
        return self._next()

    def on_check(self, go: bool, avoid: Iterable[K] = ()) -> list[RelayAction[K]]:
        """The searcher's answer to a CheckBack: stop, or go on away from `avoid`."""
        if not go:
            return [Ended(self.walk, EndReason.STOPPED)]
        self.walk = self.walk.avoiding(avoid)
        self.checked = True
        return self._next()

    def on_refused(self, to: K, *, busy: bool = False) -> list[RelayAction[K]]:
        """The hand-over to `to` failed (gone, busy, no answer): try another neighbour, after
        a rest (`rest`) if it answered busy."""
        self._neighbours = [n for n in self._neighbours if n != to]
        self._busy += busy
        self.rest = busy_rest(self._busy) if busy else 0.0
        return self._next()

    def _next(self) -> list[RelayAction[K]]:
        if self._steps > HANDOVER_TRIES:
            return [Ended(self.walk, EndReason.DEAD_END)]
        self._steps += 1
        return self.relay.next_step(
            self.walk,
            self._neighbours,
            self.rng,
            sender=self.sender,
            first=self.first,
            checked=self.checked,
            found_here=self.found_here,
        )
