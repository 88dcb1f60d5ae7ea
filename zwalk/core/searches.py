# The searcher's side of a walk or a flood: launch the copies, collect hits, answer
# check-backs, know when to stop. Sans-IO; the same objects run in the node and in walksim.
from __future__ import annotations

import random
from collections.abc import Hashable, Iterable
from dataclasses import replace
from typing import TypeVar

from zwalk.core import protocol as p
from zwalk.core.fields import EndReason, Strategy
from zwalk.core.outcome import Found, Hop, WalkOutcome
from zwalk.core.walk import Forward, Walk, busy_rest

K = TypeVar("K", bound=Hashable)  # how the shell names a peer


class KWalkSearch(WalkOutcome[K]):
    """The searcher's side of a k-walker random walk (Lv et al. 2002), with walkers added
    while nothing is found (as Gnutella's dynamic querying widens a search): it starts with
    `initial` walkers and doubles them, up to `walkers`, at a check-back or a walker's end once
    the walkers have made `widen_hops` hops each on average with no hit. On a small LAN one
    walker visiting peers one after another is the cheapest search; on a large network the
    walkers multiply quickly enough to keep the latency down.

    New walkers start with the nodes already visited in their path, and a walker that checks
    back is told them too (`avoid_for`), so walkers do not cover the same ground twice."""

    def __init__(
        self,
        me: K,
        neighbours: Iterable[K],
        *,
        qid: bytes,
        rng: random.Random,
        now: float,
        deadline: float,
        want: int = 1,
        walkers: int = 16,
        initial: int | None = None,
        ttl: int = 64,
        check_every: int = 4,
        known: int | None = None,
        widen_hops: int = 0,
        stop_on_hit: bool = False,
        avoid_limit: int = 200,
    ) -> None:
        self.me = me
        self.widen_hops = widen_hops
        self.stop_on_hit = stop_on_hit
        self.avoid_limit = avoid_limit
        self.qid = qid
        self.rng = rng
        self.started = now
        self.deadline = deadline
        self.want = want
        self.max_walkers = walkers
        self.initial = min(walkers, initial if initial is not None else walkers)
        self.ttl = ttl
        self.check_every = check_every
        self._first_hops = list(dict.fromkeys(n for n in neighbours if n != me))
        rng.shuffle(self._first_hops)
        self.known = known if known is not None else len(self._first_hops)
        self._known_given = known is not None  # else: the neighbours are all there is
        self._neighbour_set = set(self._first_hops)
        self.found: dict[bytes, Found[K]] = {}
        self.visited: set[K] = set()
        self.active: set[int] = set()  # walkers not known to have ended
        self.hops: dict[int, int] = {}  # walker -> most hops it is known to have made
        self.launched = 0
        self.lost = 0  # walkers whose first hand-over failed (they do not count)
        self.stuck = 0  # walkers ended at a dead end (their place is free again)
        self.checks = 0
        self.first_hit_hops: int | None = None
        self.first_hit_at: float | None = None
        self.ended: dict[EndReason, int] = {r: 0 for r in EndReason}
        self.ended_at: float | None = None
        self.trace: list[Hop[K]] = []
        self.refused: dict[K, int] = {}  # first hop -> busy answers it gave this search
        self._resting: dict[K, float] = {}  # first hop -> when it may be asked again
        self._waiting: list[Walk[K]] = []  # walkers refused as busy, not yet sent again

    # --- launching ----------------------------------------------------------------------------
    def start(self, now: float) -> list[Forward[K]]:
        return self._launch(self.initial)

    def _launch(self, count: int) -> list[Forward[K]]:
        out: list[Forward[K]] = []
        while count > 0 and self._can_launch:
            # Distinct first hops, not yet visited, while there are enough; then from the top.
            fresh = [n for n in self._first_hops if n not in self.visited] or self._first_hops
            n = fresh[self.launched % len(fresh)]
            seen = tuple(self.visited)[: self.avoid_limit]
            walk: Walk[K] = Walk(
                self.qid,
                Strategy.KWALK,
                self.launched,
                self.ttl,
                0,
                (self.me, *seen),
                self.check_every,
                self.stop_on_hit,
            )
            self.active.add(self.launched)
            self.hops[self.launched] = 1
            self.launched += 1
            out.append(Forward(n, walk.to(n)))
            count -= 1
        return out

    @property
    def _can_launch(self) -> bool:
        return (
            self.launched - self.lost - self.stuck < self.max_walkers
            and self.launched < 2 * self.max_walkers  # replacements, but not forever
            and bool(self._first_hops)
        )

    @property
    def covered(self) -> bool:
        """Every node the searcher knows of has been visited: more walkers would find nothing."""
        if self._known_given:
            return bool(self.known) and len(self.visited) >= self.known
        return bool(self._neighbour_set) and self._neighbour_set <= self.visited

    def _widen(self) -> list[Forward[K]]:
        walkers = self.launched - self.lost - self.stuck
        if self.found or self.covered or walkers >= self.max_walkers:
            return []
        if sum(self.hops.values()) < self.widen_hops * walkers:
            return []  # the walkers out there have not had their chance yet
        return self._launch(walkers)  # double

    def avoid_for(self, walk: Walk[K]) -> tuple[K, ...]:
        """Nodes visited by the search that this walker does not know of (for a check-back)."""
        mine = set(walk.path)
        return tuple(n for n in self.visited if n not in mine)[: self.avoid_limit]

    # --- what walkers report --------------------------------------------------------------------
    def _progress(self, walk: Walk[K], at: K) -> None:
        # Other nodes only: a walk can come back through the searcher, which is no peer.
        self.visited.update(n for n in (*walk.path, at) if n != self.me)
        if walk.walker in self.hops:
            self.hops[walk.walker] = max(self.hops[walk.walker], walk.hops)

    @property
    def messages(self) -> int:
        """Query copies sent node to node as far as the walkers reported them, check-backs
        included: each hop of a walker is one message."""
        return sum(self.hops.values()) + self.checks

    def on_hits(
        self, walk: Walk[K], at: K, hits: Iterable[p.Hit], now: float, latency: float = 0.0
    ) -> None:
        self._progress(walk, at)
        self._add_hits(at, list(hits), walk.hops, now, latency)

    def on_check(self, walk: Walk[K], at: K, now: float) -> tuple[bool, list[Forward[K]]]:
        """A walker asks whether to go on; the answer, and any walkers to add."""
        self.checks += 1
        self._progress(walk, at)
        go = not self.satisfied and now < self.deadline
        return go, (self._widen() if go else [])

    def on_end(self, walk: Walk[K], at: K, reason: EndReason, now: float) -> list[Forward[K]]:
        self._progress(walk, at)
        if walk.walker in self.active:
            self.active.discard(walk.walker)
            self.ended[reason] += 1
            if reason is EndReason.DEAD_END:
                self.stuck += 1
        if reason in (EndReason.STOPPED, EndReason.FOUND):
            return []
        # A walker that could not go on frees its place: replace it, widening if due.
        return self._widen() or (self._launch(1) if not self.found and not self.covered else [])

    def on_lost(self, walker: int, to: K, now: float) -> list[Forward[K]]:
        """The searcher could not hand a walker to its first hop: try another neighbour."""
        if walker not in self.active:
            return []
        self.active.discard(walker)
        self.hops[walker] -= 1  # the hand-over did not happen
        self.lost += 1
        if to in self._first_hops:
            self._first_hops.remove(to)
        return self._launch(1)

    def on_busy(self, walk: Walk[K], to: K, now: float) -> list[Forward[K]]:
        """The first hop answered busy (it relays all it may). Busy passes: the node stays a
        first hop, left alone for a rest that doubles with each refusal (`busy_rest`: 0.25 s
        to 2 s), and the walker (still active, same number) goes to a first hop not resting,
        or waits for one (`due`). Only the deadline, or what ends the search, ends it: a storm
        of walks at the one node that holds a file must not make a search give up at once (it
        used to drop the node)."""
        if walk.walker not in self.active:
            return []
        n = self.refused[to] = self.refused.get(to, 0) + 1
        self._resting[to] = now + busy_rest(n)  # as a download pauses a busy source
        self._waiting.append(walk)
        return self.due(now)

    def due(self, now: float) -> list[Forward[K]]:
        """Walkers refused as busy that may go now, each to a first hop that is not resting
        (one not yet visited if there is one). The shell calls it at `next_due`."""
        if not self._first_hops:  # every first hop failed for good: the waiting are lost
            for walk in self._waiting:
                self.active.discard(walk.walker)
                self.hops[walk.walker] -= 1
                self.lost += 1
            self._waiting.clear()
        if self.satisfied or now >= self.deadline:
            return []
        out: list[Forward[K]] = []
        while self._waiting:
            ready = [n for n in self._first_hops if self._resting.get(n, 0.0) <= now]
            if not ready:
                break
            walk = self._waiting.pop(0)
            fresh = [n for n in ready if n not in self.visited] or ready
            to = fresh[walk.walker % len(fresh)]
            out.append(Forward(to, replace(walk, path=(*walk.path[:-1], to))))
        return out

    def next_due(self) -> float | None:
        """When a walker refused as busy may go again, or None if none waits."""
        if not self._waiting:
            return None
        return min((self._resting.get(n, 0.0) for n in self._first_hops), default=None)

    # --- state ------------------------------------------------------------------------------------
    def done(self, now: float) -> bool:
        if self.ended_at is None and (
            self.satisfied
            or now >= self.deadline
            or self.lingered(now)
            or (not self.active and (not self._can_launch or self.covered))
        ):
            self.ended_at = now
        return self.ended_at is not None


class FloodSearch(WalkOutcome[K]):
    """The searcher's side of flooding: every neighbour gets the query with a TTL; each node
    forwards it to all its neighbours but the sender and drops duplicates. For comparison."""

    def __init__(
        self,
        me: K,
        neighbours: Iterable[K],
        *,
        qid: bytes,
        now: float,
        deadline: float,
        want: int = 1,
        ttl: int = 2,
        known: int | None = None,
    ) -> None:
        self.me = me
        self.qid = qid
        self.started = now
        self.deadline = deadline
        self.want = want
        self.ttl = ttl
        self._neighbours = [n for n in dict.fromkeys(neighbours) if n != me]
        self.known = known if known is not None else len(self._neighbours)
        self.found: dict[bytes, Found[K]] = {}
        self.visited: set[K] = set()
        self.first_hit_hops: int | None = None
        self.first_hit_at: float | None = None
        self.ended_at: float | None = None
        self.trace: list[Hop[K]] = []
        self.messages = 0  # the shell or simulator adds what relays report

    def start(self, now: float) -> list[Forward[K]]:
        walk: Walk[K] = Walk(self.qid, Strategy.FLOOD, 0, self.ttl, 0, (self.me,))
        self.messages += len(self._neighbours)
        # Asked, whether or not they report: a flood sends no end notices, and a node with
        # nothing to report stays silent. Relays further on count once they report.
        self.visited.update(self._neighbours)
        return [Forward(n, walk.to(n)) for n in self._neighbours]

    def on_hits(
        self, walk: Walk[K], at: K, hits: Iterable[p.Hit], now: float, latency: float = 0.0
    ) -> None:
        if at != self.me:
            self.visited.add(at)
        self._add_hits(at, list(hits), walk.hops, now, latency)

    def done(self, now: float, *, quiet: bool = False) -> bool:
        """`quiet`: the caller knows no copy is still travelling (the simulator does)."""
        if self.ended_at is None and (
            self.satisfied or now >= self.deadline or quiet or self.lingered(now)
        ):
            self.ended_at = now
        return self.ended_at is not None
