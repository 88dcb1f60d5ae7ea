# Discovery seen from outside: an independent DNS client reads the records a node announces,
# and two nodes on one host find each other over 127.0.0.1.
from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import blake3
import pytest
from labnodes import LabNode, short_tmp, wait_until
from netlab import Lab
from procs import ServeProcess, run_zwalk
from zmq.utils import z85


@pytest.fixture
def base() -> Iterator[Path]:
    yield from short_tmp()


def _dig() -> str:
    exe = shutil.which("dig")
    if exe is None:
        pytest.fail("dig is not installed (Debian/Ubuntu: apt-get install dnsutils)")
    return exe


def test_dig_sees_a_well_formed_announcement(lab: Callable[[int], Lab], base: Path) -> None:
    net = lab(2)
    node = LabNode(net, 0, base, files={"x.txt": b"x"}).start()
    port = json.loads((node.data / "node.json").read_text())["endpoints"][0].rsplit(":", 1)[1]
    # From the other host, a plain DNS query to the node's mDNS port (RFC 6762 legacy unicast).
    r = net.run(
        1,
        [
            _dig(),
            "-p",
            "5353",
            f"@{node.address}",
            "_zwalk._tcp.local",
            "PTR",
            "+noall",
            "+answer",
            "+additional",
            "+time=2",
            "+tries=3",
        ],
    )
    assert r.returncode == 0, r.stderr
    records: dict[str, list[list[str]]] = {}
    for line in r.stdout.splitlines():
        if line.strip() and not line.startswith(";"):
            name, _ttl, cls, rtype, *data = line.split(None, 4)
            assert cls == "IN"
            records.setdefault(rtype, []).append([name, *data])

    instance = f"zwalk-{node.node}._zwalk._tcp.local."
    assert records["PTR"] == [["_zwalk._tcp.local.", instance]]
    [srv] = records["SRV"]
    assert srv[0] == instance
    priority, weight, srv_port, target = srv[1].split()
    assert (priority, weight, srv_port) == ("0", "0", port)
    [a] = records["A"]
    assert a == [target, node.address]
    [txt] = records["TXT"]
    assert txt[0] == instance
    pairs = dict(s.strip('"').split("=", 1) for s in txt[1].split('" "'))
    assert pairs["id"] == node.node and pairs["v"] == "2" and pairs["name"] == "h0"
    assert len(pairs["pk"]) == 40  # a Z85-encoded Curve25519 public key, whose hash is the id
    key = z85.decode(pairs["pk"].encode())
    assert blake3.blake3(key).digest()[:16].hex() == node.node


def test_two_nodes_on_one_host_see_each_other_over_loopback(
    serve: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    a = serve("a", {"a.txt": b"a"})
    b = serve("b", {"b.txt": b"b"})  # no --peer anywhere: mDNS on 127.0.0.1 only

    def view(me: ServeProcess) -> dict:  # type: ignore[type-arg]
        r = run_zwalk("peers", "--json", "--data-dir", str(me.data_dir), cwd=tmp_path)
        assert r.returncode in (0, 1), r.stderr  # 1: no live peer yet
        return json.loads(r.stdout)

    def sees(me: ServeProcess, other: ServeProcess) -> bool:
        return [p["node"] for p in view(me)["peers"] if p["state"] == "alive"] == [other.node]

    wait_until(lambda: sees(a, b) and sees(b, a), timeout=10, step=0.2)
    row = view(a)["peers"][0]
    assert row["addresses"] == ["127.0.0.1"] and row["port"] == int(b.endpoint.rsplit(":")[1])
    assert {x["how"] for x in row["learned"]} & {"mdns", "inbound"}


ASK_LAN = """
import socket, sys, time
from zeroconf import DNSIncoming, DNSOutgoing, DNSQuestion, const
out = DNSOutgoing(const._FLAGS_QR_QUERY)
out.add_question(DNSQuestion("_zwalk._tcp.local.", const._TYPE_PTR, const._CLASS_IN))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(sys.argv[1]))
s.settimeout(0.2)
names = set()
for _ in range(3):  # a few asks, past mDNS answer rate limits
    s.sendto(out.packets()[0], ("224.0.0.251", 5353))
    end = time.monotonic() + 1.2
    while time.monotonic() < end:
        try:
            data, addr = s.recvfrom(9000)
        except TimeoutError:
            continue
        names.update(r.name for r in DNSIncoming(data).answers())
print("\\n".join(sorted(names)))
"""


def test_a_node_kept_to_loopback_does_not_answer_the_lan(
    lab: Callable[[int], Lab], base: Path
) -> None:
    # Host 0 runs one node on its LAN address and one kept to 127.0.0.1. The first joins the
    # mDNS group on eth0, so without care the second's socket (0.0.0.0:5353) would get the LAN's
    # queries too, and answer them on the LAN. An mDNS query from host 1 must hear only the first.
    net = lab(2)
    on_lan = LabNode(net, 0, base, files={"a": b"a"}).start()
    kept = LabNode(net, 0, base / "kept", files={"b": b"b"}).start_with(
        ["--interface", "127.0.0.1"]
    )
    r = net.run(1, [sys.executable, "-c", ASK_LAN, net.hosts[1].address], timeout=30)
    assert r.returncode == 0, r.stderr
    heard = r.stdout
    assert f"zwalk-{on_lan.node}" in heard  # the query works
    assert kept.node not in heard
    assert kept.alive_peers() == []
