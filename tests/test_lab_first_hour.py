# First-hour defects that need several hosts: a peer only --peer names, a peer seen on mDNS that
# cannot be reached, a download that fails and says so last, a file that changes on its holder
# in the middle of a download.
from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from labnodes import LabNode, cli_json, short_tmp, wait_until
from netlab import Lab

from zwalk.store import resume

MakeLab = Callable[[int], Lab]
MIB = 1 << 20


@pytest.fixture
def base() -> Iterator[Path]:
    yield from short_tmp()


def claimed(downloads: Path) -> int:
    for record in downloads.glob("*.part.progress"):
        try:
            return len(resume.peek(record.read_bytes())[1])
        except (OSError, resume.BadRecord):
            return 0
    return 0


def test_find_through_a_local_node_also_asks_the_peer_named_with_peer(
    lab: MakeLab, base: Path
) -> None:
    """h0 and h1 are on two segments as far as mDNS goes (a router between them drops it);
    `--peer` names h1, without a port (the default one). Before, a find through the local node
    ignored --peer: 'not found'."""
    net = lab(2)
    for me, other in ((0, 1), (1, 0)):
        r = net.run(me, ["iptables", "-I", "INPUT", "-p", "udp", "--dport", "5353", "-s",
                         net.hosts[other].address, "-j", "DROP"])  # fmt: skip
        assert r.returncode == 0, r.stderr
    here = LabNode(net, 0, base, files={"mine.txt": b"m"}).start()
    there = LabNode(net, 1, base, files={"needle.bin": b"far away"})
    there.start(extra=("--port", "47474"))
    assert here.alive_peers() == []
    r = here.zwalk("find", "needle.bin", "--json")
    assert r.returncode == 1  # without --peer, h0 does not know h1
    doc = cli_json(here.zwalk("find", "needle.bin", "--json", "--peer", there.address))
    assert doc["peers_via"] == "local-node" and doc["status"] == "downloaded", doc["errors"]
    assert Path(doc["download"]["path"]).read_bytes() == b"far away"
    peers = cli_json(here.zwalk("peers", "--json", "--peer", f"{there.address}:47474"))
    assert [r["node"] for r in peers["peers"] if r["state"] == "alive"] == [there.node]


def test_a_node_seen_on_mdns_that_cannot_be_reached_is_named_with_the_reason(
    lab: MakeLab, base: Path
) -> None:
    net = lab(2)
    there = LabNode(net, 1, base, files={"x.txt": b"x"}).start()
    # a firewall on h1 drops what comes to its zwalk port; mDNS still gets through
    r = net.run(1, ["iptables", "-I", "INPUT", "-p", "tcp", "--dport", str(there.port), "-j",
                    "DROP"])  # fmt: skip
    assert r.returncode == 0, r.stderr
    here = LabNode(net, 0, base)
    r = here.zwalk("peers")
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{there.address}:{there.port}: no answer from {there.address}" in r.stdout
    assert f"a firewall drops TCP port {there.port}" in r.stdout
    doc = cli_json(here.zwalk("find", "x.txt", "--json"))
    assert doc["status"] == "not-found"
    assert any("seen on mDNS" in e and "no answer" in e for e in doc["errors"]), doc["errors"]
    # A firewalled endpoint named only with --peer, asked through a running node, is reported
    # with its reason too (the node waits for the diagnosis before it answers).
    net.run(1, ["iptables", "-I", "INPUT", "-p", "tcp", "--dport", "47999", "-j", "DROP"])
    here.start()
    doc = cli_json(here.zwalk("peers", "--json", "--peer", f"{there.address}:47999"))
    why = {u["endpoint"]: u["reason"] for u in doc["unreachable"]}
    assert why[f"{there.address}:47999"].startswith(f"no answer from {there.address}"), why
    here.stop()
    r = here.zwalk("doctor", "--json")
    checks = {c["name"]: c for c in cli_json(r)["checks"]}
    assert r.returncode == 1 and checks["reachability"]["level"] == "problem"
    assert "1 node seen but not reachable" in checks["reachability"]["detail"]
    assert "allow incoming TCP" in checks["reachability"]["advice"]


def test_a_failed_download_ends_with_one_error_line_that_says_what_is_kept(
    lab: MakeLab, base: Path
) -> None:
    payload = os.urandom(8 * MIB)
    net = lab(2)
    nodes = [LabNode(net, 0, base, files={"a": b"a"}).start(),
             LabNode(net, 1, base, files={"payload.bin": payload}).start()]  # fmt: skip
    wait_until(lambda: len(nodes[0].alive_peers()) == 1, 15)
    net.shape(1, rate="8mbit")  # 1 MB/s: 8 s in all
    downloads = nodes[0].home / "downloaded"
    proc = nodes[0].zwalk_bg("find", "payload.bin")
    wait_until(lambda: claimed(downloads) >= 2, timeout=30)
    nodes[1].stop(signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    lines = [x for x in err.splitlines() if x.strip()]
    last = lines[-1]
    assert last.startswith("error: payload.bin was not downloaded: every source failed: h1 (")
    assert last.count("h1 (") == 1  # the source named once
    assert "MiB of 8.0 MiB verified and kept in " in last and ".part (8.0 MiB on disk)" in last
    assert last.endswith("run the same find again to resume.")
    assert not any(x.startswith("error:") for x in lines[:-1])  # nothing looks like success
    assert "payload.bin" in out  # the hit table still went to stdout


def test_a_file_that_changes_on_its_holder_mid_download_is_fetched_as_it_is_now(
    lab: MakeLab, base: Path
) -> None:
    first, second = os.urandom(6 * MIB), os.urandom(6 * MIB)
    net = lab(2)
    nodes = [LabNode(net, 0, base, files={"a": b"a"}).start(),
             LabNode(net, 1, base, files={"doc.bin": first}).start()]  # fmt: skip
    wait_until(lambda: len(nodes[0].alive_peers()) == 1, 15)
    net.shape(1, rate="8mbit")
    downloads = nodes[0].home / "downloaded"
    proc = nodes[0].zwalk_bg("find", "doc.bin", "--json")
    wait_until(lambda: claimed(downloads) >= 1, timeout=30)
    tmp = nodes[1].share / ".doc.bin.new"  # hidden: not shared while it is written
    tmp.write_bytes(second)
    tmp.replace(nodes[1].share / "doc.bin")  # saved over, as an editor does
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    d = json.loads(out)["download"]
    assert Path(d["path"]).read_bytes() == second
    assert "had changed" in d["note"]
    assert sorted(x.name for x in downloads.iterdir()) == ["doc.bin"]  # no stale .part left
