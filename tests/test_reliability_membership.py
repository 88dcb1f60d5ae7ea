# Membership under faults, on the lab (tools/fault_membership.py): nodes restarting while finds
# run, a frozen node, a cut link, a start storm. The quick scale runs in the default suite; the
# full scale (the published figures, docs/RELIABILITY.md) with `pytest -m slow`.
from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_membership import BOUND, SCENARIOS, SLACK
from faultcases import Check, cases, run
from faultlab import Scenario
from labnodes import LabNode, short_tmp, wait_until
from netlab import Lab

from zwalk.core import protocol as p
from zwalk.core.search_options import SEARCH_DEFAULTS as D
from zwalk.net import control
from zwalk.store import state

MakeLab = Callable[[int], Lab]


def assert_back(f: dict[str, Any], within: float) -> None:
    """Dropped by every peer within the liveness bound, back in every table within `within`
    seconds (the node itself too: it heard from every peer since), never listed twice."""
    assert f["met_all_s"] is not None, f
    assert None not in f["dropped_s"].values(), f["dropped_s"]
    assert f["dropped_worst_s"] <= BOUND + SLACK, f["dropped_s"]
    assert None not in f["back_s"].values(), f["back_s"]
    assert f["back_worst_s"] <= within, f["back_s"]
    assert f["duplicates"] == [], f["duplicates"]


def check_churn(f: dict[str, Any]) -> None:
    assert f["bytes_differ"] == 0, f["failed"]
    assert f["success_pct"] >= 99.0, (f["failures"], f["failed"])
    assert sum(f["restarts"].values()) >= f["churning_hosts"], f["restarts"]  # it did churn
    assert f["from_churning_hosts"] > 0
    assert f["ok"], f


def check_frozen(f: dict[str, Any]) -> None:
    """Before parking (core/parking.py), a thawed node's peers never took it back: it still held
    them alive and sent no hello, and its mDNS record had not changed."""
    assert_back(f, 2.0)
    assert f["ok"], f


def check_cut(f: dict[str, Any]) -> None:
    """Before parking, neither side tried the other again after the mend; they met again only
    if TCP happened to deliver a message queued before the cut."""
    assert_back(f, f["back_target_s"])
    for find in f["finds_during_cut"]:
        assert find["seconds"] is not None and find["seconds"] <= f["find_limit_s"], find
        assert find["exit"] == 1 and find["status"] == "not-found", find
    assert f["ok"], f


def check_storm(f: dict[str, Any]) -> None:
    held = f.get("held")  # full scale: the same storm with the interpreters loaded beforehand
    for g in (held, f) if held else (f,):
        assert g["duplicates"] == [], g["duplicates"]
        assert g["all_see_all_at_end"], g["missing_at_60_s"]
        assert g["all_see_all_after_last_start_s"] is not None, g
    if held:
        assert held["all_see_all_after_last_start_s"] <= f["target_s"], held
    assert f["all_see_all_after_last_start_s"] <= f["target_s"], f
    assert f["ok"], f


def test_every_scenario_has_its_tests() -> None:
    assert {"churn", "frozen", "cut", "storm"} == SCENARIOS.keys()


# `lab`: each test is skipped, with the reason, where no lab can be made.
@pytest.mark.parametrize(
    ("scenario", "scale", "check"),
    cases(
        SCENARIOS,
        ("churn", check_churn, 150, 1800),
        ("frozen", check_frozen, 90, 300),
        ("cut", check_cut, 90, 300),
        ("storm", check_storm, 90, 300),
    ),
)
def test_scenario(lab: MakeLab, scenario: Scenario, scale: str, check: Check) -> None:
    check(run(scenario, scale))


# --- what the scenarios found, each on its own -------------------------------------------------
@pytest.fixture
def base() -> Iterator[Path]:
    yield from short_tmp()


@pytest.mark.timeout(90)
def test_a_find_through_a_node_started_a_moment_ago_finds_what_its_peers_share(
    lab: MakeLab, base: Path
) -> None:
    """Seen in churn: a find that reached a node just restarted walked from its still empty
    table and answered "not found" at once (0 peers known). A young node now lets discovery
    settle first (PeerTable.ready)."""
    net = lab(3)
    holders = [LabNode(net, i, base, files={"wanted.txt": b"w"}).start() for i in (1, 2)]
    for h in holders:
        wait_until(lambda h=h: len(h.alive_peers()) == 1, timeout=15)
    node = LabNode(net, 0, base)
    node.start(wait=False)
    assert node.proc is not None

    def listening() -> state.LocalNode | None:
        local = state.read_state(node.data)
        return local if local is not None and local.pid == node.proc.pid else None  # type: ignore[union-attr]

    wait_until(listening, timeout=20, step=0.002)  # node.json: bound, discovery just begun
    local = listening()
    assert local is not None
    find = p.Find(
        req=1, token=local.token, kind=p.QueryKind.NAME, pattern="wanted.txt", icase=False,
        strategy=D.strategy, walkers=D.walkers, initial=D.initial, ttl=D.ttl,
        check_every=D.check_every, timeout_ms=5000, want=p.MAX_HITS, linger_ms=1000,
    )  # fmt: skip
    reply = asyncio.run(control.request(local, find, 15))
    assert isinstance(reply, p.FindOk), reply
    assert reply.known == 2, reply
    assert [f.name for f in reply.found] == ["wanted.txt"], reply
    assert len(reply.found[0].holders) == 2, reply


@pytest.mark.timeout(90)
def test_a_killed_node_is_dropped_at_once_not_after_missed_pings(lab: MakeLab, base: Path) -> None:
    """Seen in churn: a SIGKILLed holder stayed alive in its peers' tables for the liveness
    bound (4 s), and walks and downloads were handed to it meanwhile. Its sockets closed when
    it died: the link notices, nothing listens there any more, and it is dropped at once."""
    net = lab(4)
    nodes = [LabNode(net, i, base, files={f"h{i}.txt": b"x"}) for i in range(4)]
    for n in nodes:
        n.start(wait=False)
    for n in nodes:
        n.wait_ready()
    for n in nodes:
        wait_until(lambda n=n: len(n.alive_peers()) == 3, timeout=15)
    dead, rest = nodes[0], nodes[1:]
    gone = dead.node
    dead.stop(signal.SIGKILL)
    took = wait_until(lambda: all(gone not in n.alive_peers() for n in rest), timeout=10)
    assert took < 2.0, took  # about 0.1 s; the missed pings took 4 s
    for n in rest:
        st = n.status()
        assert st is not None
        why = [f.reason for f in st.failed if f.node and f.node.hex() == gone]
        assert "its connection closed and nothing listens there now" in why, why
