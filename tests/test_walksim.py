# The search simulator (tools/walksim.py) on small graphs: its graphs, its object placement, the
# sameness of the work across strategies, and the message counts it reports.
from __future__ import annotations

import json
import math
import random
import sys
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import walksim  # noqa: E402
from walksim import StrategySpec, WorkloadSpec  # noqa: E402

from zwalk.core import protocol as p  # noqa: E402
from zwalk.core.fields import Strategy  # noqa: E402
from zwalk.core.walk import Walk  # noqa: E402


def assert_simple(adj: walksim.Graph) -> None:
    for v, nb in enumerate(adj):
        assert v not in nb, f"self-loop at {v}"
        assert len(set(nb)) == len(nb), f"repeated edge at {v}"
        assert all(v in adj[u] for u in nb), f"edge {v}-? not in both lists"


def eccentricities(adj: walksim.Graph) -> list[int]:
    return [max(walksim.bfs_distances(adj, v)) for v in range(len(adj))]


@pytest.mark.parametrize(("n", "d"), [(300, 4), (200, 3), (20, 8)])
def test_random_regular_graph_is_simple_and_every_degree_is_d(n: int, d: int) -> None:
    # 20 nodes of degree 8: the pairing makes many self-loops and repeats, all to be repaired.
    adj = walksim.random_regular(n, d, random.Random(7))
    assert len(adj) == n
    assert {len(nb) for nb in adj} == {d}
    assert_simple(adj)


def test_random_regular_refuses_impossible_degrees() -> None:
    with pytest.raises(ValueError):
        walksim.random_regular(7, 3, random.Random(1))  # odd number of stubs


def test_powerlaw_giant_component_is_connected_with_the_target_mean_degree() -> None:
    for seed in (1, 2):
        adj = walksim.make_graph("powerlaw", 500, 4.5, random.Random(seed))
        assert_simple(adj)
        assert abs(len(adj) - 500) <= 25
        assert min(walksim.bfs_distances(adj, 0)) == 0 and -1 not in walksim.bfs_distances(adj, 0)
        degrees = sorted(len(nb) for nb in adj)
        assert abs(sum(degrees) / len(adj) - 4.5) <= 0.45
        assert degrees[-1] >= 5 * 4.5  # hubs: a heavy tail, not a regular-like graph
        assert degrees.count(1) >= len(adj) // 5  # and many leaves


def test_chung_lu_degrees_follow_the_weights() -> None:
    w = walksim.powerlaw_weights(2000, 6.0, 2.1)
    assert w == sorted(w, reverse=True) and abs(sum(w) / len(w) - 6.0) < 1e-6
    assert w[0] <= math.sqrt(sum(w)) * 1.001  # no edge probability above one
    adj = walksim.chung_lu(w, random.Random(3))
    assert_simple(adj)
    assert abs(sum(map(len, adj)) / len(adj) - 6.0) < 0.5
    hubs = sum(len(adj[i]) for i in range(20)) / sum(w[:20])
    assert 0.8 < hubs < 1.2


def test_uniform_replication_puts_every_object_on_ratio_n_nodes() -> None:
    assert walksim.replica_counts(500, 10, 0.02, "uniform", [1.0] * 10) == [10] * 10
    # 0.013 x 500 = 6.5 copies each: half get 7, half 6, 65 in all
    counts = walksim.replica_counts(500, 10, 0.013, "uniform", [1.0] * 10)
    assert sum(counts) == 65 and set(counts) == {6, 7}


@pytest.mark.parametrize("rule", ["proportional", "sqrt"])
def test_proportional_and_sqrt_replication_keep_the_total(rule: str) -> None:
    qw = walksim.query_weights(50, "zipf:1.2")
    counts = walksim.replica_counts(5000, 50, 0.01, rule, qw)
    assert sum(counts) == 2500 and min(counts) >= 1
    assert counts == sorted(counts, reverse=True) and counts[0] > 3 * counts[-1]
    power = 1.0 if rule == "proportional" else 0.5
    for i in (1, 5, 20):
        want = (qw[0] / qw[i]) ** power
        assert counts[0] / counts[i] == pytest.approx(want, rel=0.1)


def test_replication_caps_at_every_node_and_shares_the_rest() -> None:
    counts = walksim.apportion(250, [100.0, 1.0, 1.0, 1.0], 1, 100)
    assert counts == [100, 50, 50, 50]


def test_placement_matches_the_counts() -> None:
    spec = WorkloadSpec(nodes=400, topology="random", objects=20, ratio=0.05, queries=10)
    w = walksim.build_workload(spec)
    assert [len(h) for h in w.holders] == [20] * 20
    assert all(0 <= v < w.n for h in w.holders for v in h)
    sq = walksim.build_workload(replace(spec, replication="sqrt"))
    counts = walksim.replica_counts(
        400, 20, 0.05, "sqrt", walksim.query_weights(20, spec.query_dist)
    )
    assert [len(h) for h in sq.holders] == counts


def test_the_workload_depends_on_the_seed_only() -> None:
    spec = WorkloadSpec(nodes=300, topology="powerlaw", objects=10, ratio=0.03, queries=40)
    a, b = walksim.build_workload(spec), walksim.build_workload(spec)
    assert a.adj == b.adj and a.holders == b.holders and a.queries == b.queries
    other = walksim.build_workload(replace(spec, seed=2))
    assert other.digest() != a.digest()
    # The query stream is drawn from its own random stream: the replication rule moves the
    # copies, not the queries.
    sq = walksim.build_workload(replace(spec, replication="sqrt"))
    assert sq.queries == a.queries and sq.adj == a.adj and sq.holders != a.holders


def test_only_the_strategy_changes_between_runs_with_one_seed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = ["--nodes", "300", "--topology", "powerlaw", "--objects", "10", "--ratio", "0.03"]
    base += ["--queries", "30", "--seed", "5", "--json", "--quiet"]
    outs = []
    for strategy in ("kwalk", "flood", "probe"):
        assert walksim.main([*base, "--strategy", strategy]) == 0
        outs.append(json.loads(capsys.readouterr().out))
    assert len({o["workload"]["workload_digest"] for o in outs}) == 1
    assert [o["strategy"] for o in outs] == ["kwalk", "flood", "probe"]
    for o in outs:
        for key in ("success_rate", "messages_per_query", "hops_to_first_hit"):
            assert key in o
        assert set(o["nodes_visited_per_query"]) >= {"mean", "median"}
    # and the same run twice gives the same figures
    assert walksim.main([*base, "--strategy", "kwalk"]) == 0
    again = json.loads(capsys.readouterr().out)
    again["seconds"] = outs[0]["seconds"]
    assert again == outs[0]


@pytest.mark.parametrize("topology", ["random", "powerlaw"])
def test_flood_with_ttl_at_least_the_diameter_finds_every_object(topology: str) -> None:
    spec = WorkloadSpec(nodes=250, topology=topology, objects=10, ratio=0.02, queries=40)
    w = walksim.build_workload(spec)
    ecc = eccentricities(w.adj)
    r = walksim.simulate(w, StrategySpec(Strategy.FLOOD, ttl=max(ecc)))
    assert r["success_rate"] == 1.0
    short = walksim.simulate(w, StrategySpec(Strategy.FLOOD, ttl=1))
    assert short["success_rate"] < 1.0  # the workload is not trivially easy


def test_flood_counts_every_copy_including_duplicates() -> None:
    # With a TTL past the origin's eccentricity every node forwards its first copy to all its
    # neighbours but the sender: deg(origin) + sum(deg(v) - 1) = 2m - (n - 1) copies.
    spec = WorkloadSpec(nodes=200, topology="random", degree=3, objects=1, ratio=0.01, queries=3)
    w = walksim.build_workload(spec)
    r = walksim.simulate(w, StrategySpec(Strategy.FLOOD, ttl=max(eccentricities(w.adj)) + 1))
    assert r["messages"]["mean"] == 3 * 200 - 199
    assert r["nodes_visited_per_query"]["mean"] == 199


def test_kwalk_counts_hops_and_check_backs() -> None:
    spec = WorkloadSpec(nodes=300, topology="random", objects=5, ratio=0.02, queries=20)
    w = walksim.build_workload(spec)
    rng = walksim.stream(1, "strategy")
    for q in range(len(w.queries)):
        one = walksim.run_query(w, q, StrategySpec(Strategy.KWALK, walkers=1, check_every=4), rng)
        # A lone walker checks back on arriving at hops 4, 8, ...: h hops and h // 4 checks,
        # whether it was stopped (after a hit, so at a check) or got stuck; it may step back
        # to a node it visited, never to a new one without a message.
        hops = one.messages - one.checks
        assert one.checks == hops // 4 and one.launched == 1
        assert 0 < one.visited <= hops
        if one.found:
            assert hops % 4 == 0 and one.ended["stopped"] == 1
        else:
            assert one.ended["dead-end"] == 1
        assert sum(one.ended.values()) == 1


def test_a_walk_on_the_wire_keeps_the_origin_and_its_latest_visits() -> None:
    walk = Walk(b"q" * 16, Strategy.KWALK, 0, 10, 300, tuple(range(301)))
    sent = walksim.on_the_wire(walk)
    assert len(sent.path) == p.MAX_PATH and sent.path[0] == 0 and sent.path[-1] == 300
    assert sent.path[1] == 301 - (p.MAX_PATH - 1)
    short = replace(walk, path=(0, 1, 2))
    assert walksim.on_the_wire(short) is short


def test_probe_asks_one_node_per_message_within_its_budget() -> None:
    spec = WorkloadSpec(nodes=300, topology="random", objects=10, ratio=0.01, queries=50)
    w = walksim.build_workload(spec)
    r = walksim.simulate(w, StrategySpec(Strategy.PROBE, ttl=20))
    assert r["messages"]["p90"] <= 20
    assert r["nodes_visited_per_query"] == r["messages"]
    full = walksim.simulate(w, StrategySpec(Strategy.PROBE))
    assert full["success_rate"] == 1.0 and full["messages_per_query"] > r["messages_per_query"]


def test_kwalk_needs_fewer_messages_than_flood_for_the_same_success_on_a_powerlaw_graph() -> None:
    spec = WorkloadSpec(nodes=500, topology="powerlaw", objects=20, ratio=0.02, queries=60)
    w = walksim.build_workload(spec)
    kwalk = walksim.simulate(w, StrategySpec(Strategy.KWALK, walkers=16, check_every=4))
    assert kwalk["success_rate"] >= 0.9
    flood, tried = walksim.flood_min_ttl(w, kwalk["successes"])
    assert flood is not None and flood["successes"] >= kwalk["successes"]
    assert all(t["successes"] < kwalk["successes"] for t in tried[:-1])  # the smallest TTL
    assert flood["messages_per_query"] > 3 * kwalk["messages_per_query"]
