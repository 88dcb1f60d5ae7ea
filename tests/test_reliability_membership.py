# Membership under faults, on the lab: what the reliability scenarios (tools/fault_membership.py,
# to come) found, each on its own.
from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from labnodes import LabNode, short_tmp, wait_until
from netlab import Lab

MakeLab = Callable[[int], Lab]


# --- what the scenarios found, each on its own -------------------------------------------------
@pytest.fixture
def base() -> Iterator[Path]:
    yield from short_tmp()


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
