# Load and a soak, on the lab (tools/fault_load.py): one node under 1,000 concurrent walks and
# 4 downloads at once, and one node under mixed traffic while its RSS and descriptors are
# sampled. The quick scale runs in the default suite; the full scale (the published figures,
# docs/RELIABILITY.md) with `pytest -m slow`.
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fault_load import SCENARIOS
from faultcases import Check, cases, run
from faultlab import Scenario
from netlab import Lab

from zwalk.net.walks import MAX_RELAYS

MakeLab = Callable[[int], Lab]


def check_load(f: dict[str, Any]) -> None:
    # Every request answered (a result, walk-ok or busy) and every walk taken ended.
    assert f["unanswered"] == 0 and f["requests_sent"] == f["replies"], f["storms"]
    assert f["walks_without_end"] == 0, f["storms"]
    # The node takes MAX_RELAYS walks of a burst before it says busy (it took 64-138 when the
    # busy limit counted handlers that had not started yet).
    assert f["burst_accepted_first_try"] >= MAX_RELAYS, f["storms"]
    # Downloads intact, and searches started while it refused walks found what they sought
    # (a search whose first hop, or whose relays' next hops, answered busy gave up at once).
    n = len(f["storms"])
    assert f["downloads_intact"].startswith(f"{4 * n}/{4 * n} "), f["storms"]
    assert f["searches_found_during_storm"] == f"{6 * n}/{6 * n}", f["storms"]
    assert f["rss_peak_mib"] <= f["rss_bound_mib"], f
    assert f["errors"] == f["tracebacks"] == 0, f
    assert f["ok"], f


def check_soak(f: dict[str, Any]) -> None:
    assert f["failed"] == [] and f["unanswered"] == 0, f
    assert sum(f["actions"].values()) >= 20 and f["actions"]["peer"] >= 2, f["actions"]
    assert f["rss_growth"] <= 0.10 and f["fds_growth"] <= 0.10, f
    assert f["errors"] == f["tracebacks"] == 0, f
    assert f["ok"], f


@pytest.mark.parametrize(
    ("scenario", "scale", "check"),
    cases(SCENARIOS, ("load", check_load, 300, 1200), ("soak", check_soak, 240, 1500)),
)
def test_scenario(lab: MakeLab, scenario: Scenario, scale: str, check: Check) -> None:
    check(run(scenario, scale))
