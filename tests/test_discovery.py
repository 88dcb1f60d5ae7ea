# Discovery seen from outside: an independent DNS client reads the records a node announces,
# and two nodes on one host find each other over 127.0.0.1.
from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from labnodes import LabNode, short_tmp, wait_until
from netlab import Lab
from procs import ServeProcess, run_zwalk


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
    assert pairs["id"] == node.node and pairs["v"] == "1" and pairs["name"] == "h0"
    assert len(pairs["pk"]) == 40  # a Z85-encoded Curve25519 public key


def test_two_nodes_on_one_host_see_each_other_over_loopback(
    serve: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    a = serve("a", {"a.txt": b"a"})
    b = serve("b", {"b.txt": b"b"})  # no --peer anywhere: mDNS on 127.0.0.1 only

    def view(me: ServeProcess) -> dict:  # type: ignore[type-arg]
        r = run_zwalk("peers", "--json", "--data-dir", str(me.data_dir), cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def sees(me: ServeProcess, other: ServeProcess) -> bool:
        return [p["node"] for p in view(me)["peers"] if p["state"] == "alive"] == [other.node]

    wait_until(lambda: sees(a, b) and sees(b, a), timeout=10, step=0.2)
    row = view(a)["peers"][0]
    assert row["addresses"] == ["127.0.0.1"] and row["port"] == int(b.endpoint.rsplit(":")[1])
    assert {x["how"] for x in row["learned"]} & {"mdns", "inbound"}
