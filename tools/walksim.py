#!/usr/bin/env python3
"""Search simulator: the node's own walk policy (zwalk/core/) over synthetic graphs, no sockets.

Every node runs a `Relay`, and each copy that reaches a node a `RelayStep` (the same object the
live node drives, zwalk/core/walk.py); the searcher runs a `KWalkSearch`, `FloodSearch` or
`ProbeSearch`. This script only plays the network, as zwalk/net/walks.py does over sockets: it
delivers each query copy one hop after it was sent (a simulated clock, one unit per hop), answers
a check-back from the searcher once the tick's other copies have arrived (so a hit found at the
same hop counts; the answer names the nodes other walkers visited, `avoid_for`), tells the
searcher about hits and ended walkers at once, keeps a walk's path to MAX_PATH node ids as the
wire does, and counts messages the same way for every strategy:

  one message   each query copy sent from one node to another (flood duplicates included,
                although they are dropped on arrival), each check-back, each probe question
  not counted   hit reports and end notices (they go to the searcher, not through the search)

The work (graph, object placement, query sequence) depends only on the seed and the workload
options, each drawn from its own random stream, so every strategy run with one seed faces the
same graph, the same copies and the same queries; the strategy's choices have a stream of their
own. `workload_digest` in the output proves it.

  random     random d-regular graph (pairing model, self-loops and multi-edges repaired)
  powerlaw   Chung-Lu expected-degree graph, exponent 2.1 (Miller-Hagberg, O(n+m)), tuned so its
             giant component has about --nodes nodes of mean degree about --degree
  replicas   --ratio is the mean fraction of nodes holding an object, so objects x ratio x nodes
             copies in all; uniform: ratio x nodes each; proportional / sqrt: in proportion to
             the query probability / its square root (Lv et al. 2002); at least one each

Only the giant component is kept, so no search fails for want of a path. A searcher starts at a
uniformly random node and does not look in its own index; a query succeeds if the searcher hears
of at least one holder.

    python tools/walksim.py --topology powerlaw --nodes 10000 --objects 100 --ratio 0.01 \\
        --queries 1000 --query-dist zipf:1.2 --strategy kwalk --walkers 16 --check-every 4 --json
    python tools/walksim.py ... --flood-min-ttl-for 0.99    # smallest flood TTL reaching 99 %
    python tools/walksim.py ... --flood-min-ttl-for kwalk   # kwalk, then flood at its success
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from blake3 import blake3

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zwalk.core import protocol as p  # noqa: E402
from zwalk.core.fields import Strategy
from zwalk.core.outcome import ProbeSearch
from zwalk.core.searches import FloodSearch, KWalkSearch
from zwalk.core.walk import CheckBack, Ended, Forward, Relay, RelayAction, RelayStep, Walk

Graph = list[list[int]]  # adjacency lists, nodes numbered 0..n-1

POWERLAW_EXPONENT = 2.1
DEFAULT_DEGREE = {"random": 4.0, "powerlaw": 4.5}
DEFAULT_TTL = {Strategy.KWALK: 1024, Strategy.FLOOD: 4}  # probe: no limit unless --ttl
CALIBRATION_ROUNDS = 6  # power-law graph regenerations to hit the giant component's targets


# --- graphs -------------------------------------------------------------------------------------


def random_regular(n: int, d: int, rng: random.Random) -> Graph:
    """A random d-regular simple graph: pair up n*d stubs at random (configuration model), then
    remove each self-loop or repeated edge by swapping endpoints with a random good edge, which
    keeps every degree at d."""
    if not 0 < d < n or n * d % 2:
        raise ValueError(f"no {d}-regular graph on {n} nodes")
    stubs = [v for v in range(n) for _ in range(d)]
    rng.shuffle(stubs)
    edges = [(stubs[i], stubs[i + 1]) for i in range(0, len(stubs), 2)]
    present: set[tuple[int, int]] = set()
    bad: list[int] = []
    for i, (u, v) in enumerate(edges):
        e = (min(u, v), max(u, v))
        if u == v or e in present:
            bad.append(i)
        else:
            present.add(e)
    bad_set = set(bad)
    for i in bad:
        u, v = edges[i]
        for _ in range(1000 * len(edges)):
            j = rng.randrange(len(edges))
            if j in bad_set:
                continue
            x, y = edges[j]
            if rng.random() < 0.5:
                x, y = y, x
            a, b = (min(u, x), max(u, x)), (min(v, y), max(v, y))
            if u == x or v == y or a == b or a in present or b in present:
                continue
            present.discard((min(x, y), max(x, y)))
            present.update((a, b))
            edges[i], edges[j] = (u, x), (v, y)
            bad_set.discard(i)
            break
        else:
            raise RuntimeError("could not repair the pairing")  # only for near-complete graphs
    adj: Graph = [[] for _ in range(n)]
    for u, v in edges:
        adj[u].append(v)
        adj[v].append(u)
    return adj


def _power_sum(n: int, i0: float, a: float) -> float:
    """sum((i + i0)^-a for i in range(n)): the first terms exactly, the smooth rest as an
    integral (midpoint rule), so calibrating a 100,000-node graph takes milliseconds."""
    head = min(n, 256)
    s = sum((i + i0) ** -a for i in range(head))
    if n > head:
        lo, hi = head - 0.5 + i0, n - 0.5 + i0
        s += math.log(hi / lo) if a == 1 else (hi ** (1 - a) - lo ** (1 - a)) / (1 - a)
    return s


def powerlaw_weights(n: int, mean: float, exponent: float) -> list[float]:
    """Expected degrees w_i = c (i + i0)^(-1/(exponent-1)), decreasing, with mean `mean`; i0 caps
    the largest at sqrt(n * mean), the structural cut-off below which w_u w_v / sum(w) <= 1."""
    a = 1.0 / (exponent - 1.0)
    want = math.sqrt(n / mean)  # largest weight over mean weight
    lo, hi = 1e-6, float(n)
    for _ in range(60):  # the ratio falls as i0 grows
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if mid**-a * n / _power_sum(n, mid, a) > want else (lo, mid)
    shape = [(i + hi) ** -a for i in range(n)]
    c = mean * n / sum(shape)
    return [c * s for s in shape]


def chung_lu(w: Sequence[float], rng: random.Random) -> Graph:
    """Edge u-v with probability min(1, w_u w_v / sum(w)), weights in decreasing order, in
    O(n + m) by skipping geometrically over the candidates (Miller and Hagberg 2011)."""
    n, total = len(w), sum(w)
    adj: Graph = [[] for _ in range(n)]
    for u in range(n - 1):
        v = u + 1
        prob = min(w[u] * w[v] / total, 1.0)
        while v < n and prob > 0:
            if prob != 1.0:
                r = rng.random()
                v += int(math.log(1.0 - r) / math.log(1.0 - prob))
            if v < n:
                q = min(w[u] * w[v] / total, 1.0)
                if rng.random() < q / prob:
                    adj[u].append(v)
                    adj[v].append(u)
                prob = q
                v += 1
    return adj


def giant_component(adj: Graph) -> Graph:
    """The largest connected component, renumbered 0..k-1 in the old order."""
    comp = [-1] * len(adj)
    best: list[int] = []
    for s in range(len(adj)):
        if comp[s] >= 0:
            continue
        comp[s] = s
        members = [s]
        for x in members:  # BFS: the list grows while we walk it
            for y in adj[x]:
                if comp[y] < 0:
                    comp[y] = s
                    members.append(y)
        if len(members) > len(best):
            best = members
    best.sort()
    new = {old: i for i, old in enumerate(best)}
    return [[new[y] for y in adj[x]] for x in best]


def powerlaw(n: int, mean: float, rng: random.Random, exponent: float = POWERLAW_EXPONENT) -> Graph:
    """A Chung-Lu graph's giant component with about n nodes of mean degree about `mean`. The
    low-weight nodes that fall outside the giant component leave it denser than the whole graph,
    so generate more nodes at a lower mean: each try fits the giant component's mean degree and
    share of nodes as powers of the generating mean (secant in log-log) for the next one."""
    gen_n, gen_mean = n, mean
    tries: list[tuple[float, Graph]] = []
    seen: list[tuple[float, float, float]] = []  # log gen_mean, log giant mean, log giant share
    for _ in range(CALIBRATION_ROUNDS):
        g = giant_component(chung_lu(powerlaw_weights(gen_n, gen_mean, exponent), rng))
        got_mean, share = sum(map(len, g)) / len(g), len(g) / gen_n
        miss = max(abs(len(g) - n) / n, abs(got_mean - mean) / mean / 3)
        tries.append((miss, g))
        if miss <= 0.01:
            break
        seen.append((math.log(gen_mean), math.log(got_mean), math.log(share)))
        b_mean, b_share = 0.5, 0.5  # typical slopes for exponent 2.1, until measured
        if len(seen) >= 2 and abs(seen[-1][0] - seen[-2][0]) > 1e-3:
            dx = seen[-1][0] - seen[-2][0]
            b_mean = min(1.5, max(0.2, (seen[-1][1] - seen[-2][1]) / dx))
            b_share = min(1.5, max(0.0, (seen[-1][2] - seen[-2][2]) / dx))
        step = (mean / got_mean) ** (1 / b_mean)
        gen_mean *= step
        gen_n = max(n, round(n / (share * step**b_share)))
    return min(tries, key=lambda t: t[0])[1]


def make_graph(topology: str, n: int, degree: float, rng: random.Random) -> Graph:
    if topology == "random":
        if degree != int(degree):
            raise ValueError("--degree must be a whole number for a regular graph")
        return giant_component(random_regular(n, int(degree), rng))
    if topology == "powerlaw":
        return powerlaw(n, degree, rng)
    raise ValueError(f"unknown topology {topology!r}")


def bfs_distances(adj: Graph, src: int) -> list[int]:
    dist = [-1] * len(adj)
    dist[src] = 0
    frontier = [src]
    while frontier:
        nxt = []
        for x in frontier:
            for y in adj[x]:
                if dist[y] < 0:
                    dist[y] = dist[x] + 1
                    nxt.append(y)
        frontier = nxt
    return dist


# --- objects and queries ------------------------------------------------------------------------


def query_weights(objects: int, dist: str) -> list[float]:
    """Relative query probability of each object: 'uniform', or 'zipf:A' (rank^-A, rank 1 first)."""
    if dist == "uniform":
        return [1.0] * objects
    if dist.startswith("zipf:"):
        a = float(dist.removeprefix("zipf:"))
        return [(i + 1) ** -a for i in range(objects)]
    raise ValueError(f"--query-dist must be uniform or zipf:A, not {dist!r}")


def apportion(total: int, weights: Sequence[float], lo: int, hi: int) -> list[int]:
    """Split `total` into whole counts in [lo, hi] in proportion to `weights`: clamp what falls
    outside and share the rest again, then round by largest remainder (ties: lower index)."""
    k = len(weights)
    if not k * lo <= total <= k * hi:
        raise ValueError(f"cannot place {total} copies of {k} objects on [{lo}, {hi}] nodes each")
    counts = [0] * k
    free = set(range(k))
    left = total
    exact: dict[int, float] = {}
    while free:
        s = sum(weights[i] for i in free)
        exact = {i: left * weights[i] / s for i in free}
        out = {i for i in free if not lo <= exact[i] <= hi}
        if not out:
            break
        for i in out:
            counts[i] = lo if exact[i] < lo else hi
            left -= counts[i]
        free -= out
    for i in free:
        counts[i] = math.floor(exact[i])
    rest = left - sum(counts[i] for i in free)
    for i in sorted(free, key=lambda i: (-(exact[i] - counts[i]), i))[:rest]:
        counts[i] += 1
    return counts


def replica_counts(n: int, objects: int, ratio: float, rule: str, qw: Sequence[float]) -> list[int]:
    """Copies of each object: objects x ratio x n in all, shared by `rule` (Lv et al. 2002)."""
    total = round(ratio * n * objects)
    if rule == "uniform":
        w = [1.0] * objects
    elif rule == "proportional":
        w = list(qw)
    elif rule == "sqrt":
        w = [math.sqrt(q) for q in qw]
    else:
        raise ValueError(f"unknown replication {rule!r}")
    return apportion(max(total, objects), w, 1, n)


def object_hit(i: int) -> p.Hit:
    name = f"object-{i:05d}.bin"
    cid = blake3(f"walksim object {i}".encode()).digest()
    return p.Hit(name=name, path=f"objects/{name}", size=1 << 20, cid=cid)


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    nodes: int = 10_000
    topology: str = "powerlaw"
    degree: float | None = None  # None: 4 for random, 4.5 for powerlaw
    objects: int = 100
    ratio: float = 0.01
    replication: str = "uniform"
    queries: int = 1000
    query_dist: str = "zipf:1.2"
    seed: int = 1


@dataclass(slots=True)
class Workload:
    spec: WorkloadSpec
    adj: Graph
    holders: list[frozenset[int]]  # per object
    queries: list[tuple[int, int]]  # (object, searcher)
    hits: list[p.Hit]  # per object, what a holder reports

    @property
    def n(self) -> int:
        return len(self.adj)

    def digest(self) -> str:
        """Fingerprint of the graph, the placement and the queries."""
        h = hashlib.sha256()
        for nb in self.adj:
            h.update(repr(nb).encode())
        for hs in self.holders:
            h.update(repr(sorted(hs)).encode())
        h.update(repr(self.queries).encode())
        return h.hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        degrees = [len(nb) for nb in self.adj]
        return {
            **asdict(self.spec),
            "degree": self.spec.degree or DEFAULT_DEGREE[self.spec.topology],
            "giant_component": self.n,
            "edges": sum(degrees) // 2,
            "mean_degree": round(sum(degrees) / self.n, 3),
            "max_degree": max(degrees),
            "degree_1_fraction": round(degrees.count(1) / self.n, 3),
            "replicas_total": sum(map(len, self.holders)),
            "replicas_min_max": [min(map(len, self.holders)), max(map(len, self.holders))],
            "workload_digest": self.digest(),
        }


def stream(seed: int, name: str) -> random.Random:
    """An independent random stream per concern (str seeds are hashed with SHA-512: stable)."""
    return random.Random(f"walksim/{seed}/{name}")


def build_workload(spec: WorkloadSpec) -> Workload:
    degree = spec.degree if spec.degree is not None else DEFAULT_DEGREE[spec.topology]
    adj = make_graph(spec.topology, spec.nodes, degree, stream(spec.seed, "graph"))
    n = len(adj)
    qw = query_weights(spec.objects, spec.query_dist)
    counts = replica_counts(n, spec.objects, spec.ratio, spec.replication, qw)
    place = stream(spec.seed, "placement")
    holders = [frozenset(place.sample(range(n), c)) for c in counts]
    ask = stream(spec.seed, "queries")
    cum = [0.0]
    for q in qw:
        cum.append(cum[-1] + q)
    queries = [
        (ask.choices(range(spec.objects), cum_weights=cum[1:])[0], ask.randrange(n))
        for _ in range(spec.queries)
    ]
    return Workload(spec, adj, holders, queries, [object_hit(i) for i in range(spec.objects)])


# --- searching ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StrategySpec:
    strategy: Strategy = Strategy.KWALK
    walkers: int = 16
    initial: int | None = None  # kwalk: walkers launched at first (None: all of them)
    check_every: int = 4
    widen_hops: int = 0  # kwalk: mean hops per walker before walkers are added
    stop_on_hit: bool = False  # kwalk: a walker ends where it finds a hit
    ttl: int | None = None  # None: DEFAULT_TTL; probe: at most this many questions

    @property
    def hop_limit(self) -> int | None:
        return self.ttl if self.ttl is not None else DEFAULT_TTL.get(self.strategy)


@dataclass(slots=True)
class QueryResult:
    found: bool
    messages: int  # query copies and check-backs (and probe questions)
    visited: int  # distinct nodes, the searcher not included, that handled the query
    first_hit_hops: int | None
    visited_to_first_hit: int | None = None  # distinct nodes when the first hit came in
    ended: dict[str, int] = field(default_factory=dict)  # kwalk: walkers by end reason
    launched: int = 0  # kwalk: walkers the searcher started
    checks: int = 0  # kwalk: check-backs among the messages


def on_the_wire(walk: Walk[int]) -> Walk[int]:
    """A walk message holds at most MAX_PATH node ids: the origin and the latest of the rest,
    as the node's shell sends them (zwalk/net/walks.py), so a walker forgets its oldest visits."""
    if len(walk.path) <= p.MAX_PATH:
        return walk
    return replace(walk, path=walk.path[:1] + walk.path[-(p.MAX_PATH - 1) :])


def run_query(w: Workload, q: int, s: StrategySpec, rng: random.Random) -> QueryResult:
    obj, origin = w.queries[q]
    if s.strategy is Strategy.PROBE:
        return _probe(w, obj, origin, s, rng)
    adj, holders, hit = w.adj, w.holders[obj], [w.hits[obj]]
    qid = q.to_bytes(p.ID_BYTES, "big")
    inf = math.inf
    searcher: KWalkSearch[int] | FloodSearch[int]
    if s.strategy is Strategy.KWALK:
        searcher = KWalkSearch(
            origin,
            adj[origin],
            qid=qid,
            rng=rng,
            now=0.0,
            deadline=inf,
            walkers=s.walkers,
            initial=s.initial,
            ttl=s.hop_limit or 0,
            check_every=s.check_every,
            widen_hops=s.widen_hops,
            stop_on_hit=s.stop_on_hit,
            known=w.n - 1,
        )
    else:
        searcher = FloodSearch(
            origin, adj[origin], qid=qid, now=0.0, deadline=inf, ttl=s.hop_limit or 0, known=w.n - 1
        )
    # Relays are made on first contact and dropped after the query: a Relay's state is keyed by
    # query id, so this is what a node that kept its Relay forever would do, without the memory.
    relays: dict[int, Relay[int]] = {}
    # (time, sender, receiver, copy), in time order since every hop takes one unit
    wire: deque[tuple[int, int, int, Walk[int]]] = deque()
    messages = checks = 0
    visited: set[int] = set()
    visited_to_first_hit = None

    def launch(forwards: list[Forward[int]], now: int) -> None:
        nonlocal messages
        for f in forwards:
            wire.append((now + 1, origin, f.to, on_the_wire(f.walk)))
        messages += len(forwards)

    start = searcher.start(0.0)
    # The searcher's node has seen its own query, so copies flooded back to it are duplicates.
    if start:
        relays[origin] = Relay(origin)
        relays[origin].arrive(start[0].walk)
    launch(start, 0)
    # Check-backs are answered once every copy due at their tick has arrived: a hit report and a
    # check-back sent at the same hop reach the searcher together, and which one the searcher
    # reads first must not hang on the order of this queue.
    asking: deque[tuple[int, int, CheckBack[int], RelayStep[int]]] = deque()

    def act(todo: list[RelayAction[int]], now: int, at: int, step: RelayStep[int]) -> None:
        nonlocal messages
        for a in todo:
            if isinstance(a, Forward):
                wire.append((now + 1, at, a.to, on_the_wire(a.walk)))
                messages += 1
            elif isinstance(a, CheckBack):
                asking.append((now, at, a, step))
            elif isinstance(a, Ended):
                assert isinstance(searcher, KWalkSearch)  # noqa: S101 - floods end silently
                launch(searcher.on_end(a.walk, at, a.reason, float(now)), now)

    while wire or asking:
        if asking and (not wire or wire[0][0] > asking[0][0]):
            now, at, check, step = asking.popleft()
            assert isinstance(searcher, KWalkSearch)  # noqa: S101 - only walkers check back
            messages += 1
            checks += 1
            go, more = searcher.on_check(check.walk, at, float(now))
            launch(more, now)
            # the answer names nodes other walkers visited, as the node's shell does
            avoid = searcher.avoid_for(check.walk)[: p.MAX_PATH] if go else ()
            act(step.on_check(go, avoid), now, at, step)
            continue
        now, sender, at, walk = wire.popleft()
        relay = relays.get(at)
        if relay is None:
            relay = relays[at] = Relay(at)
        step = RelayStep(relay, walk, rng, sender=sender)
        found_here = step.first and at != origin and at in holders
        if at != origin:
            visited.add(at)
        if found_here:
            if not searcher.found:
                visited_to_first_hit = len(visited)
            searcher.on_hits(walk, at, hit, float(now))
        act(step.start(adj[at], found_here=found_here), now, at, step)
    ended = (
        {str(r): c for r, c in searcher.ended.items()} if isinstance(searcher, KWalkSearch) else {}
    )
    return QueryResult(
        bool(searcher.found),
        messages,
        len(visited),
        searcher.first_hit_hops,
        visited_to_first_hit,
        ended,
        searcher.launched if isinstance(searcher, KWalkSearch) else 0,
        checks,
    )


def _probe(w: Workload, obj: int, origin: int, s: StrategySpec, rng: random.Random) -> QueryResult:
    """Ask random nodes of the whole network one at a time (each question one message, one time
    unit to the answer) until one holds the object or --ttl questions have been asked."""
    holders, hit = w.holders[obj], [w.hits[obj]]
    others = [v for v in range(w.n) if v != origin]
    budget = math.inf if s.ttl is None else float(s.ttl)
    search: ProbeSearch[int] = ProbeSearch(others, rng=rng, now=0.0, deadline=budget)
    now = 0.0
    while (peer := search.next_ask(now)) is not None:
        now += 1.0
        search.on_reply(peer, hit if peer in holders else [], now)
    hops = search.first_hit_hops
    return QueryResult(bool(search.found), search.messages, search.visited, hops, hops)


def simulate(
    w: Workload,
    s: StrategySpec,
    *,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run every query of the workload with one strategy and sum up."""
    rng = stream(w.spec.seed, "strategy")
    t0 = time.perf_counter()
    results = []
    for q in range(len(w.queries)):
        results.append(run_query(w, q, s, rng))
        if progress:
            progress(q)
    return summarize(w, s, results, time.perf_counter() - t0)


def _stats(xs: Sequence[float]) -> dict[str, float | None]:
    if not xs:
        return {"mean": None, "median": None, "p90": None}
    ordered = sorted(xs)
    return {
        "mean": round(statistics.fmean(xs), 2),
        "median": statistics.median(xs),
        "p90": ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)],
    }


def summarize(
    w: Workload, s: StrategySpec, results: Sequence[QueryResult], seconds: float
) -> dict[str, Any]:
    ok = [r for r in results if r.found]
    msgs = [r.messages for r in results]
    first = [r.first_hit_hops for r in ok if r.first_hit_hops is not None]
    ended: dict[str, int] = {}
    for r in results:
        for k, c in r.ended.items():
            ended[k] = ended.get(k, 0) + c
    out: dict[str, Any] = {
        "strategy": str(s.strategy),
        "ttl": s.hop_limit,
        **(
            {
                "walkers": s.walkers,
                "initial": s.initial or s.walkers,
                "check_every": s.check_every,
                "widen_hops": s.widen_hops,
                "stop_on_hit": s.stop_on_hit,
            }
            if s.strategy is Strategy.KWALK
            else {}
        ),
        "successes": len(ok),
        "success_rate": round(len(ok) / len(results), 4) if results else None,
        "messages_per_query": round(statistics.fmean(msgs), 2) if msgs else None,
        "messages": _stats(msgs),
        "hops_to_first_hit": statistics.median(first) if first else None,
        "hops_to_first_hit_stats": _stats(first),
        "nodes_visited_per_query": _stats([r.visited for r in results]),
        "nodes_visited_per_success": _stats([r.visited for r in ok]),
        # the part of it until the first hit came in: the rest is walkers still on their way
        "nodes_visited_to_first_hit": _stats(
            [r.visited_to_first_hit for r in ok if r.visited_to_first_hit is not None]
        ),
        # Blind search (distinct random nodes) needs 1/p nodes on average to meet one of the
        # copies, p = the queried object's share of nodes: the mean of 1/p over the queries.
        "blind_search_bound": (
            round(statistics.fmean(w.n / len(w.holders[o]) for o, _ in w.queries), 2)
            if w.queries
            else None
        ),
        "seconds": round(seconds, 2),
        "workload": w.describe(),
    }
    if ended:
        out["walkers_ended"] = ended
        out["walkers_launched_per_query"] = round(statistics.fmean(r.launched for r in results), 2)
    return out


def flood_min_ttl(
    w: Workload, successes: int, *, log: Callable[[str], None] | None = None
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Flood at TTL 1, 2, ... until at least `successes` queries succeed; the first run that
    does (None if even a flood of the whole graph does not), and every run tried."""
    tried: list[dict[str, Any]] = []
    last_reach = -1.0
    for ttl in range(1, w.n + 1):
        r = simulate(w, StrategySpec(Strategy.FLOOD, ttl=ttl))
        tried.append(r)
        if log:
            log(
                f"flood ttl={ttl}: {r['successes']}/{len(w.queries)} found, "
                f"{r['messages_per_query']} messages/query ({r['seconds']} s)"
            )
        if r["successes"] >= successes:
            return r, tried
        reach = r["nodes_visited_per_query"]["mean"]
        if reach == last_reach:  # the flood already reaches the whole graph
            return None, tried
        last_reach = reach
    return None, tried


# --- command line -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = WorkloadSpec()
    ap.add_argument("--nodes", type=int, default=d.nodes)
    ap.add_argument("--topology", choices=["random", "powerlaw"], default=d.topology)
    ap.add_argument(
        "--degree", type=float, default=None, help="random: degree d; powerlaw: mean (4.5)"
    )
    ap.add_argument("--objects", type=int, default=d.objects)
    ap.add_argument(
        "--ratio", type=float, default=d.ratio, help="mean fraction of nodes per object"
    )
    ap.add_argument(
        "--replication", choices=["uniform", "proportional", "sqrt"], default=d.replication
    )
    ap.add_argument("--queries", type=int, default=d.queries)
    ap.add_argument("--query-dist", default=d.query_dist, help="uniform or zipf:A")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--strategy", choices=[str(x) for x in Strategy], default="kwalk")
    ap.add_argument("--walkers", type=int, default=16)
    ap.add_argument("--initial", type=int, default=None, help="kwalk: walkers at first (all)")
    ap.add_argument("--check-every", type=int, default=4, help="kwalk: hops between check-backs")
    ap.add_argument(
        "--widen-hops", type=int, default=0, help="kwalk: mean hops per walker before widening"
    )
    ap.add_argument(
        "--stop-on-hit", action="store_true", help="kwalk: a walker ends where it finds a hit"
    )
    ap.add_argument(
        "--ttl",
        type=int,
        default=None,
        help="hops per walker (kwalk 1024) or per flood copy (flood 4); probe: most questions",
    )
    ap.add_argument(
        "--flood-min-ttl-for",
        metavar="SUCCESS",
        default=None,
        help="flood at TTL 1, 2, ... until the success rate reaches SUCCESS (0..1), or 'kwalk':"
        " run kwalk first and match its success rate",
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return ap.parse_args(argv)


def _row(r: dict[str, Any]) -> str:
    label = r["strategy"] + (f" k={r['walkers']}" if "walkers" in r else "")
    return (
        f"{label:<12} ttl={r['ttl']!s:<5} success {r['success_rate']:.3f}  "
        f"messages/query {r['messages_per_query']:>9}  hops to 1st hit "
        f"{r['hops_to_first_hit']!s:>5}  visited mean {r['nodes_visited_per_query']['mean']!s:>8}"
        f" (per success {r['nodes_visited_per_success']['mean']})  {r['seconds']} s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)

    def log(msg: str) -> None:
        if not a.quiet:
            print(msg, file=sys.stderr)

    spec = WorkloadSpec(
        nodes=a.nodes,
        topology=a.topology,
        degree=a.degree,
        objects=a.objects,
        ratio=a.ratio,
        replication=a.replication,
        queries=a.queries,
        query_dist=a.query_dist,
        seed=a.seed,
    )
    t0 = time.perf_counter()
    w = build_workload(spec)
    desc = w.describe()
    log(
        f"{spec.topology} graph: {desc['giant_component']} nodes, mean degree "
        f"{desc['mean_degree']}, max {desc['max_degree']}; {desc['replicas_total']} copies; "
        f"built in {time.perf_counter() - t0:.1f} s"
    )
    walk_opts: dict[str, Any] = {
        "walkers": a.walkers,
        "initial": a.initial,
        "check_every": a.check_every,
        "widen_hops": a.widen_hops,
        "stop_on_hit": a.stop_on_hit,
        "ttl": a.ttl,
    }
    strat = StrategySpec(Strategy(a.strategy), **walk_opts)
    out: dict[str, Any]
    if a.flood_min_ttl_for is None:
        out = simulate(w, strat)
        rows = [out]
    else:
        base = None
        if a.flood_min_ttl_for == "kwalk":
            base = simulate(w, StrategySpec(Strategy.KWALK, **walk_opts))
            log(_row(base))
            need = base["successes"]
        else:
            need = math.ceil(float(a.flood_min_ttl_for) * len(w.queries) - 1e-9)
        flood, tried = flood_min_ttl(w, need, log=log)
        for r in tried:
            del r["workload"]
        out = {
            "target_successes": need,
            "flood": flood,
            "flood_tried": [
                {k: r[k] for k in ("ttl", "success_rate", "messages_per_query")} for r in tried
            ],
            "workload": desc,
        }
        rows = [flood] if flood else []
        if base is not None:
            out["kwalk"] = base
            rows.insert(0, base)
            if flood:
                out["message_ratio_flood_over_kwalk"] = round(
                    flood["messages_per_query"] / base["messages_per_query"], 2
                )
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        for r in rows:
            print(_row(r))
        if "message_ratio_flood_over_kwalk" in out:
            print(f"flood/kwalk messages: {out['message_ratio_flood_over_kwalk']}")
        if a.flood_min_ttl_for is not None and out["flood"] is None:
            print(f"no flood TTL reaches {need} successes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
