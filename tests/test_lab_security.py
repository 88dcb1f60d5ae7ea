"""Every link encrypted and authenticated, seen from the LAN. A packet capture on the lab
link of a find and a download shows neither the file's name nor its content; in allowlist
mode a node whose key is not listed gets no hit and no chunk, and is no one's peer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from labnodes import LabNode, cli_json, short_tmp, wait_until
from netlab import Lab

MakeLab = Callable[[int], Lab]
MARKER = b"zwalk-secret-7f3a9c"


@pytest.fixture
def base() -> Iterator[Path]:
    yield from short_tmp()


def _start(nodes: list[LabNode], *extra: str) -> None:
    for node in nodes:
        node.start(extra=extra)


def test_a_capture_of_a_find_and_a_download_shows_no_name_and_no_content(
    lab: MakeLab, base: Path
) -> None:
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        pytest.fail("tcpdump is not installed (Debian/Ubuntu: apt-get install tcpdump)")
    net = lab(2)
    name = f"{MARKER.decode()}-report.txt"
    payload = MARKER * 2000 + os.urandom(1 << 20) + MARKER * 2000
    nodes = [
        LabNode(net, 0, base, files={"h0.txt": b"x"}),
        LabNode(net, 1, base, files={name: payload}),
    ]
    _start(nodes)
    for node in nodes:
        wait_until(lambda node=node: len(node.alive_peers()) == 1, timeout=15)
    pcap = base / "bridge.pcap"
    cap = subprocess.Popen(
        # On the holder's port of the lab bridge: the bridge device itself sees a forwarded
        # frame only while the bridge has not learned where its destination is. Immediate
        # mode: otherwise the kernel holds packets in a ring block for up to a second, and
        # what is still there when tcpdump is stopped is counted but never written.
        [tcpdump, "-i", net.hosts[1].veth, "--immediate-mode", "-s", "0", "-B", "32768"]
        + ["-U", "-w", str(pcap)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    first = ""
    try:
        assert cap.stderr is not None
        first = cap.stderr.readline().decode()  # once the capture is attached, or why not
        assert "listening on" in first, first
        nodes[0].stop()  # and again: its mDNS goodbye and a new start are captured too
        nodes[0].start()
        wait_until(lambda: len(nodes[0].alive_peers()) == 1, timeout=15)
        doc = cli_json(nodes[0].zwalk("find", name, "--json", timeout=60))
        assert doc["status"] == "downloaded", doc["errors"]
        assert Path(doc["download"]["path"]).read_bytes() == payload
        _settled(pcap)  # tcpdump drops what it has not written yet when it is stopped
    finally:
        cap.terminate()
        _, rest = cap.communicate(timeout=10)
    err = first + rest.decode()
    raw = pcap.read_bytes()
    print(f"captured {len(raw)} bytes: {err.strip()}")
    assert len(raw) > 0.9 * len(payload)  # the transfer is in the capture
    assert b"_zwalk" in raw  # mDNS is plain text: the capture sees what is not encrypted
    assert MARKER not in raw
    assert name.encode() not in raw


def _settled(path: Path, quiet: float = 1.5, timeout: float = 10.0) -> None:
    """Wait until a file has stopped growing for `quiet` seconds."""
    size, since, deadline = -1, time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = path.stat().st_size
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.05)


def _id(node: LabNode) -> dict:  # type: ignore[type-arg]
    r = node.zwalk("id", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def test_in_allowlist_mode_an_unlisted_node_gets_nothing(lab: MakeLab, base: Path) -> None:
    net = lab(3)
    alice = LabNode(net, 0, base, files={"alice.txt": b"from alice"})
    bob = LabNode(net, 1, base, files={"bob.bin": os.urandom(300_000)})
    mallory = LabNode(net, 2, base, files={"mallory.txt": b"m"})
    ids = {n.host: _id(n) for n in (alice, bob, mallory)}
    for me, other in ((alice, bob), (bob, alice)):
        r = me.zwalk("trust", "add", ids[other.host]["peers"][0], "--label", f"h{other.host}")
        assert r.returncode == 0, r.stderr
    _start([alice, bob], "--trust", "allowlist")
    mallory.start()  # open mode: it would meet anyone
    wait_until(lambda: alice.alive_peers() == [bob.node], timeout=15)
    wait_until(lambda: bob.alive_peers() == [alice.node], timeout=15)
    # Mallory sees both on mDNS and says hello, directly and by name: every handshake fails.
    bob_at = f"{bob.address}:{bob.port}"
    found = cli_json(mallory.zwalk("find", "bob.bin", "--json", "--peer", bob_at, timeout=60))
    assert found["hits"] == [] and found["status"] != "downloaded", found
    assert mallory.alive_peers() == []
    for node in (alice, bob):  # not a peer, not even one being contacted, nor gossiped
        assert ids[2]["node"] not in [m.node.hex() for m in node.members() if m.node]
    # The listed nodes find and fetch as ever.
    got = cli_json(alice.zwalk("find", "bob.bin", "--json", timeout=60))
    assert got["status"] == "downloaded", got["errors"]
    assert Path(got["download"]["path"]).read_bytes() == bob.files["bob.bin"]
    assert "not in the allowlist" in bob.log()
