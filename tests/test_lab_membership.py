# Live membership across hosts: network namespaces on one bridge, one `zwalk serve` per host,
# real mDNS between them. Timing bounds here are generous correctness limits; the speed targets
# live in tools/discovery_bench.py.
from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import blake3
import pytest
from labnodes import LabNode, cli_json, short_tmp, wait_until
from netlab import Lab

MakeLab = Callable[[int], Lab]


@pytest.fixture
def base() -> Iterator[Path]:
    yield from short_tmp()


def start_all(lab: Lab, base: Path, hosts: range) -> list[LabNode]:
    nodes = [LabNode(lab, i, base, files={f"only-on-h{i}.txt": f"h{i}".encode()}) for i in hosts]
    for n in nodes:
        n.start(wait=False)
    for n in nodes:
        n.wait_ready()
    return nodes


def sees_exactly(node: LabNode, others: list[LabNode]) -> Callable[[], bool]:
    return lambda: node.alive_peers() == sorted(o.node for o in others)


def test_every_node_sees_every_other_and_a_late_node_appears(lab: MakeLab, base: Path) -> None:
    net = lab(5)
    nodes = start_all(net, base, range(4))
    for n in nodes:
        wait_until(sees_exactly(n, [o for o in nodes if o is not n]), timeout=10)

    # The inspection tool says the same, through each host's running node. (A peer's file count
    # comes with hello-ok and pongs: a node met before its index was built shows 0 files until
    # its next pong, at the latest after the membership's 10 s refresh.)
    for n in nodes:
        wait_until(lambda n=n: all(m.files == 1 for m in n.members()), timeout=15, step=0.2)
        doc = cli_json(n.zwalk("peers", "--json"))
        assert doc["via"] == "local-node" and doc["self"]["node"] == n.node
        rows = [r for r in doc["peers"] if r["state"] == "alive"]
        assert sorted(r["node"] for r in rows) == sorted(o.node for o in nodes if o is not n)
        for r in rows:
            other = next(o for o in nodes if o.node == r["node"])
            assert r["addresses"] == [other.address] and r["version"] == 2
            assert r["name"] == f"h{other.host}" and r["files"] == 1
            assert any(x["how"] == "mdns" and n.address in x["detail"] for x in r["learned"])
            assert r["rtt_ms"] is not None and r["rtt_ms"] < 1000

    late = LabNode(net, 4, base, files={"late.txt": b"late"}).start()
    everyone = [*nodes, late]
    for n in everyone:
        wait_until(sees_exactly(n, [o for o in everyone if o is not n]), timeout=5)


def test_leaving_crashing_and_restarting_nodes(lab: MakeLab, base: Path) -> None:
    net = lab(4)
    nodes = start_all(net, base, range(4))
    for n in nodes:
        wait_until(sees_exactly(n, [o for o in nodes if o is not n]), timeout=10)
    a, b, c, d = nodes

    # SIGTERM: a clean leave (bye to peers, mDNS goodbye) is noticed at once.
    gone = a.node
    a.stop(signal.SIGTERM)
    took = wait_until(lambda: all(gone not in n.alive_peers() for n in (b, c, d)), timeout=1.0)
    assert took <= 1.0

    # SIGKILL: nobody is told; pings stop being answered and the peers drop it.
    dead = b.node
    b.stop(signal.SIGKILL)
    wait_until(lambda: all(dead not in n.alive_peers() for n in (c, d)), timeout=10)

    # A restart (same data dir, so the same node id; a new port) appears once, not twice.
    c_old_port = {m.port for m in d.members() if m.node and m.node.hex() == c.node}
    c.stop(signal.SIGKILL)
    c.start()

    def once_at_new_port() -> bool:
        st = d.status()
        rows = [m for m in st.members if m.node and m.node.hex() == c.node] if st else []
        return len(rows) == 1 and rows[0].state == "alive" and rows[0].port not in c_old_port

    wait_until(once_at_new_port, timeout=10)
    wait_until(sees_exactly(c, [d]), timeout=10)
    for _ in range(10):  # and it stays that way
        st = d.status()
        assert st is not None
        assert sum(1 for m in st.members if m.node and m.node.hex() == c.node) == 1


def test_find_fetches_from_another_host_without_peer_flags(lab: MakeLab, base: Path) -> None:
    net = lab(4)
    payload = os.urandom(3 * 1024 * 1024 + 7)
    nodes = [LabNode(net, i, base, files={f"f{i}.bin": os.urandom(1000)}) for i in range(3)]
    nodes[2].files["wanted.iso"] = payload
    for n in nodes:
        n.start()
    for n in nodes:
        wait_until(sees_exactly(n, [o for o in nodes if o is not n]), timeout=10)

    # Through the running local node on h0.
    doc = cli_json(nodes[0].zwalk("find", "wanted.iso", "--json"))
    assert doc["status"] == "downloaded" and doc["peers_via"] == "local-node"
    got = Path(doc["download"]["path"])
    assert blake3.blake3(got.read_bytes()).digest() == blake3.blake3(payload).digest()
    assert doc["hits"][0]["holders"][0]["node"] == nodes[2].node

    # From a host that runs no node at all: the temporary node browses mDNS itself.
    client = LabNode(net, 3, base)
    doc = cli_json(client.zwalk("find", "wanted.iso", "--json"))
    assert doc["status"] == "downloaded" and doc["peers_via"] == "discovery"
    assert doc["walk"]["peers_known"] == 3
    assert Path(doc["download"]["path"]).read_bytes() == payload

    # And `zwalk peers` there browses too, and pings what it finds.
    peers = cli_json(client.zwalk("peers", "--json"))
    assert peers["via"] == "discovery"
    assert sorted(r["node"] for r in peers["peers"] if r["state"] == "alive") == sorted(
        n.node for n in nodes
    )
