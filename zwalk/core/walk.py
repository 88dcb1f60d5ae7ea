# Search policy, sans-IO: which peer to ask next, what the answers add up to, when to stop.
#
# The shell sends what `next_ask` returns, reports replies and failures back, and passes the
# clock in; nothing here sleeps or touches a socket, so the policy is tested with a fake clock
# and fake peers. This is the `probe` strategy (ask random peers one at a time, as the original
# teaching script did); the k-walker random walk joins it behind the same interface.
from __future__ import annotations

import enum
import random
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field, replace
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

    def elapsed(self, now: float) -> float:
        return (self.ended_at if self.ended_at is not None else now) - self.started

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


# --- random walks and flooding ------------------------------------------------------------------
#
# A query copy travels from node to node as a Walk. Every node runs a Relay: it checks its own
# index the first time a query reaches it (hits go straight to the searcher) and decides where
# the copy goes next. The searcher runs a KWalkSearch or FloodSearch: it launches the copies,
# collects hits, answers check-backs and knows when to stop. The same objects run in the node
# and in tools/walksim.py.


class Strategy(enum.StrEnum):
    KWALK = "kwalk"
    FLOOD = "flood"
    PROBE = "probe"


class EndReason(enum.StrEnum):
    TTL = "ttl"  # the walker used up its hops
    DEAD_END = "dead-end"  # no neighbour left that this walker has not visited
    STOPPED = "stopped"  # the searcher said it has what it wanted
    FOUND = "found"  # it found a hit itself, and the searcher wants just one


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
