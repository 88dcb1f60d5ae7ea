# Membership under faults, on the lab: what the reliability scenarios (tools/fault_membership.py,
# to come) found, each on its own.
from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from labnodes import LabNode, short_tmp, wait_until
from netlab import Lab

from zwalk.core import protocol as p
from zwalk.core.search_options import SEARCH_DEFAULTS as D
from zwalk.net import control
from zwalk.store import state

MakeLab = Callable[[int], Lab]


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
