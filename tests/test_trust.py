"""Where a peer's key comes from when a user names the peer: KEY@HOST:PORT checks it, a plain
HOST:PORT learns it on first use and pins it (like SSH's known_hosts), and a later different
key at that endpoint is refused with the way to accept it. Nodes run on lab hosts."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from labnodes import LabNode, short_tmp
from netlab import Lab
from procs import LOOPBACK, public_key, run_zwalk
from zmq.utils import z85

from zwalk.core.addresses import Endpoint
from zwalk.store import trust

MakeLab = Callable[[int], Lab]


@pytest.fixture
def base() -> Iterator[Path]:
    yield from short_tmp()


def _find(node: LabNode, name: str, peer: str) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    """`zwalk find` on the node's host that knows only the peer it is given: its own mDNS and
    ROUTER stay on loopback (so mDNS tells it no key), and it asks peers directly (probe)."""
    cmd = [
        sys.executable, "-m", "zwalk", "--interface", LOOPBACK, "find", name, "--peer", peer,
        "--strategy", "probe", "--no-download", "--json",
    ]  # fmt: skip
    node.home.mkdir(parents=True, exist_ok=True)
    r = node.lab.run(node.host, cmd, timeout=60, cwd=node.home)
    return r.returncode, json.loads(r.stdout) if r.stdout else {}, r.stderr


def _pins() -> dict[Endpoint, bytes]:
    return trust.read_pins(Path(os.environ["XDG_DATA_HOME"]) / "zwalk" / trust.PINS_FILE)


def test_a_plain_peer_is_pinned_on_first_use_and_a_new_key_is_refused(
    lab: MakeLab, base: Path
) -> None:
    net = lab(2)
    me = LabNode(net, 0, base)
    first = LabNode(net, 1, base, files={"x.txt": b"x"})
    first.start(extra=("--port", "47000"))
    endpoint = f"{first.address}:47000"
    code, doc, err = _find(me, "x.txt", endpoint)
    assert code == 0 and [h["name"] for h in doc["hits"]] == ["x.txt"], err
    assert _pins() == {Endpoint(first.address, 47000): z85.decode(public_key(first.data))}
    first.stop()
    # Another node (another key) on the same endpoint: refused, and told how to accept it.
    second = LabNode(net, 1, base / "second", files={"x.txt": b"x"})
    second.start(extra=("--port", "47000"))
    code, doc, err = _find(me, "x.txt", endpoint)
    assert code == 1 and doc["hits"] == [], err
    assert f"zwalk trust forget {endpoint}" in err, err
    r = net.run(0, [sys.executable, "-m", "zwalk", "trust", "forget", endpoint], cwd=me.home)
    assert r.returncode == 0, r.stderr
    code, doc, err = _find(me, "x.txt", endpoint)
    assert code == 0 and [h["name"] for h in doc["hits"]] == ["x.txt"], err
    assert _pins() == {Endpoint(first.address, 47000): z85.decode(public_key(second.data))}


def test_a_peer_given_with_its_key_must_prove_that_key(lab: MakeLab, base: Path) -> None:
    net = lab(2)
    me = LabNode(net, 0, base)
    a = LabNode(net, 1, base, files={"a.txt": b"a"})
    a.start()
    key = json.loads(a.zwalk("id", "--json").stdout)["key"]
    code, doc, err = _find(me, "a.txt", f"{key}@{a.address}:{a.port}")
    assert code == 0 and [h["name"] for h in doc["hits"]] == ["a.txt"], err
    code, doc, err = _find(me, "a.txt", f"{'00' * 32}@{a.address}:{a.port}")
    assert code == 1 and doc["hits"] == [], err
    assert any("no answer to hello" in e for e in doc["errors"]), doc  # the handshake failed
    assert _pins() == {}  # a key the user gave is not pinned


def test_trust_add_list_remove(tmp_path: Path) -> None:
    data = ("--data-dir", str(tmp_path / "data"))
    key = json.loads(run_zwalk("id", "--json", *data, cwd=tmp_path).stdout)["key"]
    other = "ab" * 32
    for k, label in ((key, "me"), (other, "bob")):
        r = run_zwalk("trust", "add", k, "--label", label, *data, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    doc = json.loads(run_zwalk("trust", "list", "--json", *data, cwd=tmp_path).stdout)
    assert [(t["key"], t["label"]) for t in doc["trusted"]] == [(key, "me"), (other, "bob")]
    r = run_zwalk("trust", "remove", "bob", *data, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(run_zwalk("trust", "list", "--json", *data, cwd=tmp_path).stdout)
    assert [t["label"] for t in doc["trusted"]] == ["me"]
    bad = run_zwalk("trust", "add", "not-a-key", *data, cwd=tmp_path)
    assert bad.returncode == 2 and "64 hex digits" in bad.stderr
    missing = run_zwalk("trust", "remove", "nobody", *data, cwd=tmp_path)
    assert missing.returncode == 1 and "no key" in missing.stderr


def test_keys_pinned_at_once_are_all_kept(tmp_path: Path) -> None:
    """Peers met together pin their keys from several threads at once: none may be lost, and
    no two may share a temporary file (which failed before with a spurious warning)."""
    import threading

    from zwalk.core.addresses import Endpoint
    from zwalk.store import trust as trust_mod

    path = tmp_path / "known_peers"
    eps = [Endpoint("10.0.0.1", 1000 + i) for i in range(20)]
    threads = [
        threading.Thread(target=trust_mod.pin, args=(path, ep, bytes([i]) * 32))
        for i, ep in enumerate(eps)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert trust_mod.read_pins(path) == {ep: bytes([i]) * 32 for i, ep in enumerate(eps)}
    assert [x.name for x in tmp_path.iterdir()] == ["known_peers"]
