# The random-walk search across lab hosts: found from everywhere, "not found" with full coverage
# long before the timeout, and no stall when hosts die in the middle of walks.
from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from labnodes import LabNode, cli_json, short_tmp, wait_until
from netlab import Lab

MakeLab = Callable[[int], Lab]


@pytest.fixture
def base() -> Iterator[Path]:
    yield from short_tmp()


def swarm(net: Lab, base: Path, n: int, holder: int, payload: bytes) -> list[LabNode]:
    nodes = [LabNode(net, i, base, files={f"h{i}.txt": b"x"}) for i in range(n)]
    nodes[holder].files["needle.bin"] = payload
    for node in nodes:
        node.start(wait=False)
    for node in nodes:
        node.wait_ready()
    for node in nodes:
        wait_until(lambda node=node: len(node.alive_peers()) == n - 1, timeout=15)
    return nodes


def test_a_file_on_one_host_of_eight_is_found_from_every_other(lab: MakeLab, base: Path) -> None:
    payload = os.urandom(200_000)
    nodes = swarm(lab(8), base, 8, holder=5, payload=payload)
    for node in nodes:
        if node.host == 5:
            continue
        doc = cli_json(node.zwalk("find", "needle.bin", "--json", "--timeout", "5"))
        assert doc["status"] == "downloaded", doc["errors"]
        assert doc["peers_via"] == "local-node" and doc["walk"]["strategy"] == "kwalk"
        assert doc["hits"][0]["holders"][0]["node"] == nodes[5].node
        assert Path(doc["download"]["path"]).read_bytes() == payload
        assert doc["walk"]["messages"] >= doc["walk"]["hops_to_first_hit"] >= 1


def test_missing_file_ends_with_full_coverage_well_before_the_timeout(
    lab: MakeLab, base: Path
) -> None:
    nodes = swarm(lab(8), base, 8, holder=0, payload=b"x")
    start = time.monotonic()
    r = nodes[3].zwalk("find", "no-such-file.bin", "--json", "--timeout", "20")
    took = time.monotonic() - start
    doc = cli_json(r)
    assert r.returncode == 1 and doc["status"] == "not-found"
    walk = doc["walk"]
    assert walk["peers_known"] == 7 and walk["peers_visited"] == 7 and walk["coverage"] == 1.0
    assert walk["elapsed_ms"] < 2000 and took < 10  # the timeout was 20 s


def test_hosts_killed_mid_walk_do_not_stall_the_search(lab: MakeLab, base: Path) -> None:
    payload = os.urandom(50_000)
    nodes = swarm(lab(8), base, 8, holder=7, payload=payload)
    # Kill three hosts; for a few seconds the others still list them alive, so walks are
    # handed to dead hosts and must go around them.
    for victim in (2, 4, 6):
        nodes[victim].stop(signal.SIGKILL)
    for searcher in (0, 1):
        doc = cli_json(
            nodes[searcher].zwalk(
                "find", "needle.bin", "--json", "--timeout", "15", "--walkers", "4"
            )
        )
        assert doc["status"] == "downloaded", doc["errors"]
        assert doc["walk"]["elapsed_ms"] < 8000, (doc["walk"]["trace"], doc["walk"]["hops"])
    # A missing file still ends (every walker ends or is replaced) instead of hanging.
    doc = cli_json(nodes[3].zwalk("find", "absent.bin", "--json", "--timeout", "15"))
    assert doc["status"] == "not-found" and doc["walk"]["elapsed_ms"] < 14000


def test_flood_and_probe_find_it_too_and_a_missing_flood_ends_early(
    lab: MakeLab, base: Path
) -> None:
    payload = os.urandom(10_000)
    nodes = swarm(lab(5), base, 5, holder=4, payload=payload)
    for strategy in ("flood", "probe"):
        doc = cli_json(
            nodes[0].zwalk(
                "find",
                "needle.bin",
                "--json",
                "--strategy",
                strategy,
                "--ttl",
                "1",
                "--no-download",
            )
        )
        assert doc["status"] == "found" and doc["walk"]["strategy"] == strategy
        assert doc["hits"][0]["holders"][0]["node"] == nodes[4].node
    doc = cli_json(
        nodes[1].zwalk("find", "absent.bin", "--json", "--strategy", "flood", "--timeout", "20")
    )
    assert doc["status"] == "not-found" and doc["walk"]["elapsed_ms"] < 5000
