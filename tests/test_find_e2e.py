# End to end over real sockets on 127.0.0.1: `zwalk serve` processes and `zwalk find`.
from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import blake3
from procs import LOOPBACK, ServeProcess, curve_dealer, find_async, public_key, run_zwalk

from zwalk.cli.app import running
from zwalk.core import protocol as p
from zwalk.core.addresses import Endpoint
from zwalk.net.node import Node
from zwalk.net.router import Router
from zwalk.store import identity
from zwalk.store.config import Config
from zwalk.store.downloads import part_path

Serve = Callable[..., ServeProcess]
MiB = 1024 * 1024


def test_three_nodes_find_fetches_the_right_file_byte_identical(
    serve: Serve, tmp_path: Path
) -> None:
    wanted = os.urandom(5 * MiB + 12345)  # several chunks and a short last one
    a = serve("a", {"music/song.flac": os.urandom(300_000), "notes.txt": b"a"})
    b = serve("b", {"isos/debian.iso": wanted, "other.iso": os.urandom(70_000)})
    c = serve("c", {"photo.jpg": os.urandom(200_000), "debian.iso.txt": b"not it"})
    peers = [arg for n in (a, b, c) for arg in ("--peer", n.endpoint)]

    r = run_zwalk("find", "debian.iso", *peers, "--out", "dl", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)  # stdout holds the JSON document and nothing else
    got = tmp_path / "dl" / "debian.iso"
    assert got.read_bytes() == wanted
    cid = "b3:" + blake3.blake3(wanted).hexdigest()
    assert doc["status"] == "downloaded"
    assert [h["cid"] for h in doc["hits"]] == [cid]
    assert doc["hits"][0]["holders"][0]["node"] == b.node
    assert doc["hits"][0]["holders"][0]["path"] == "share/isos/debian.iso"
    d = doc["download"]
    assert d["cid"] == cid and d["bytes"] == len(wanted) and Path(d["path"]).resolve() == got
    assert len(d["sources"]) == 1 and d["seconds"] > 0
    walk = doc["walk"]
    assert walk["strategy"] == "kwalk" and walk["peers_known"] == 3
    assert walk["messages"] >= 1 and walk["hops_to_first_hit"] >= 1
    assert walk["trace"][-1]["verdict"] == "hit" and walk["trace"][-1]["node"] == b.node
    assert not list((tmp_path / "dl").glob("*.part"))


def test_find_by_content_id_and_glob_and_second_download_is_not_clobbered(
    serve: Serve, tmp_path: Path
) -> None:
    data = os.urandom(100_000)
    a = serve("a", {"report-2024.pdf": data})
    cid = "b3:" + blake3.blake3(data).hexdigest()
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / "report-2024.pdf").write_bytes(b"a different file already here")

    r = run_zwalk("find", cid, "--peer", a.endpoint, "--out", "dl", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "dl" / "report-2024.pdf").read_bytes() == b"a different file already here"
    assert (tmp_path / "dl" / "report-2024 (1).pdf").read_bytes() == data
    assert "report-2024.pdf" in r.stdout and cid in r.stdout  # the hit table

    r = run_zwalk("find", "report-202?.pdf", "--peer", a.endpoint, "--out", "dl", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "already here:" in r.stderr and "nothing fetched" in r.stderr
    assert len(list((tmp_path / "dl").iterdir())) == 2


def test_missing_file_exits_1_with_a_clear_message(serve: Serve, tmp_path: Path) -> None:
    a = serve("a", {"x.txt": b"x"})
    b = serve("b", {"y.txt": b"y"})
    r = run_zwalk("find", "nothere.iso", "--peer", a.endpoint, "--peer", b.endpoint, cwd=tmp_path)
    assert r.returncode == 1
    assert "not found" in r.stderr and "'nothere.iso'" in r.stderr
    assert "asked 2 of 2 peers" in r.stderr
    assert not (tmp_path / "downloaded").exists()

    r = run_zwalk("find", "nothere.iso", "--peer", a.endpoint, "--json", cwd=tmp_path)
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert doc["status"] == "not-found" and doc["hits"] == [] and doc["walk"]["coverage"] == 1.0


def test_no_download_lists_only(serve: Serve, tmp_path: Path) -> None:
    a = serve("a", {"one.iso": b"1" * 10, "two.iso": b"2" * 20})
    r = run_zwalk(
        "find", "*.iso", "--all", "--no-download", "--peer", a.endpoint, "--json", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert sorted(h["name"] for h in doc["hits"]) == ["one.iso", "two.iso"]
    assert doc["status"] == "found" and doc["download"] is None
    assert not (tmp_path / "downloaded").exists()


def test_usage_and_config_errors_exit_2_and_a_lonely_find_exits_1(tmp_path: Path) -> None:
    r = run_zwalk("find", "x", cwd=tmp_path, timeout=30)
    assert r.returncode == 1 and "no peers found" in r.stderr
    r = run_zwalk("find", "x", "--peer", "a:b:c", cwd=tmp_path, timeout=30)
    assert r.returncode == 2 and "--peer: not a HOST or HOST:PORT peer address" in r.stderr
    r = run_zwalk("find", "a/b", "--peer", "127.0.0.1:9", cwd=tmp_path, timeout=30)
    assert r.returncode == 2 and "not paths" in r.stderr
    bad = tmp_path / "bad.ini"
    bad.write_text("[node]\nport = -1\n")
    r = run_zwalk(
        "--config", str(bad), "find", "x", "--peer", "127.0.0.1:9", cwd=tmp_path, timeout=30
    )
    assert r.returncode == 2 and "port" in r.stderr
    r = run_zwalk("find", "x", "--config", str(tmp_path / "absent.ini"), cwd=tmp_path, timeout=30)
    assert r.returncode == 2 and "not found" in r.stderr


def test_serve_port_in_use_is_a_clear_error(serve: Serve, tmp_path: Path) -> None:
    a = serve("a", {"x": b"x"})
    port = a.endpoint.rsplit(":", 1)[1]
    r = run_zwalk(
        "serve",
        str(a.share),
        "--port",
        port,
        "--interface",
        LOOPBACK,
        "--data-dir",
        str(tmp_path / "other"),
        cwd=tmp_path,
        timeout=30,
    )
    assert r.returncode == 1 and "--port 0" in r.stderr and "Traceback" not in r.stderr


# --- hostile peers, in this process, on real sockets -----------------------------------------


class CorruptingRouter(Router):
    """Serves honestly, except that chunk data for the listed chunks is flipped."""

    corrupt: frozenset[int] = frozenset({1})

    async def respond(self, msg: p.Message, sender: bytes) -> p.Message:
        reply = await super().respond(msg, sender)
        if isinstance(reply, p.Chunks):
            entry = self.shares.index.by_cid(reply.cid)
            assert entry is not None
            cs = entry.chunk_size
            data = bytearray(reply.payload)
            for k in range(reply.count):  # a frame holds several chunks
                if reply.index + k in self.corrupt:
                    data[k * cs + min(cs, len(data) - k * cs) // 2] ^= 0xFF
            reply = replace(reply, payload=bytes(data))
        return reply


class CorruptingNode(Node):
    Router = CorruptingRouter


class CorruptAllRouter(CorruptingRouter):
    corrupt = frozenset(range(p.MAX_CHUNKS))


class CorruptAllNode(Node):
    Router = CorruptAllRouter


def _node_cfg(tmp: Path, name: str) -> Config:
    return Config(
        name=name,
        port=0,
        interfaces=(LOOPBACK,),
        data_dir=tmp / name / "data",
        downloads=tmp / name / "downloaded",
        chunk_size=p.MIN_CHUNK_SIZE,
    )


async def test_corrupted_chunk_is_rejected_and_never_written(tmp_path: Path) -> None:
    share = tmp_path / "evil-share"
    share.mkdir()
    data = os.urandom(4 * p.MIN_CHUNK_SIZE)
    (share / "file.bin").write_bytes(data)
    evil = CorruptingNode(_node_cfg(tmp_path, "evil"), identity.ephemeral(), shares=[share])
    async with running(evil):
        code, out, err = await find_async(
            tmp_path, "file.bin", "--peer", str(evil.local.endpoints[0]), "--out", "dl", "--json"
        )
    assert code == 3, err
    doc = json.loads(out)
    assert doc["status"] == "download-failed"
    assert "hash mismatch" in " ".join(doc["errors"])
    assert not (tmp_path / "dl" / "file.bin").exists()  # never under the final name
    part = part_path(tmp_path / "dl", "file.bin", blake3.blake3(data).digest())
    if part.exists():  # only verified chunks may be in it; the corrupt one never is
        kept = part.read_bytes()
        bad = slice(p.MIN_CHUNK_SIZE, 2 * p.MIN_CHUNK_SIZE)
        assert kept[bad] == bytes(p.MIN_CHUNK_SIZE)
        for i in (0, 2, 3):
            span = slice(i * p.MIN_CHUNK_SIZE, (i + 1) * p.MIN_CHUNK_SIZE)
            assert kept[span] in (data[span], bytes(p.MIN_CHUNK_SIZE))


def _small_frames(tmp: Path) -> list[str]:
    """A config with frames of 4 chunks of 16 KiB, so that a small file makes several frames
    and every source gets some."""
    ini = tmp / "small-frames.ini"
    ini.write_text("[transfer]\nframe_size = 65536\nwindow = 131072\nmax_window = 262144\n")
    return ["--config", str(ini)]


async def test_corrupting_source_is_excluded_and_the_honest_one_completes(tmp_path: Path) -> None:
    data = os.urandom(24 * p.MIN_CHUNK_SIZE + 99)
    nodes = []
    for name, cls in (("evil", CorruptAllNode), ("honest", Node)):
        share = tmp_path / f"{name}-share"
        share.mkdir()
        (share / "file.bin").write_bytes(data)
        nodes.append(cls(_node_cfg(tmp_path, name), identity.ephemeral(), shares=[share]))
    async with running(nodes[0]), running(nodes[1]):
        peers = [a for n in nodes for a in ("--peer", str(n.local.endpoints[0]))]
        code, out, err = await find_async(
            tmp_path, "file.bin", "--all", *peers, *_small_frames(tmp_path), "--out", "dl", "--json"
        )
    assert code == 0, err
    assert (tmp_path / "dl" / "file.bin").read_bytes() == data
    d = json.loads(out)["download"]
    assert any("evil" in k and "hash mismatch" in v for k, v in d["excluded"].items())
    assert all("honest" in s for s in d["sources"])


async def test_node_keeps_serving_after_garbage(serve: Serve, tmp_path: Path) -> None:
    import zmq
    import zmq.asyncio

    a = serve("a", {"keep.txt": b"still here"})
    ctx = zmq.asyncio.Context()
    sock = curve_dealer(ctx, a.endpoint, public_key(a.data_dir))
    plain = ctx.socket(zmq.DEALER)  # a version-1 node: no CurveZMQ
    plain.setsockopt(zmq.LINGER, 0)
    plain.connect(f"tcp://{a.endpoint}")
    try:
        await plain.send_multipart(p.encode(p.Ping(req=1)))
        assert await plain.poll(1000) == 0  # the handshake fails: not a byte comes back
        await sock.send_multipart([b"\xff\x00garbage"])
        await sock.send_multipart([p.encode(p.GetInfo(req=7, cid=b"\1" * 32))[0], b"extra"])
        hello = p.Hello(req=9, node=b"\0" * 16, name="x", port=0, inc=b"i" * 8)
        bad_version = bytearray(p.encode(hello)[0])
        bad_version[bad_version.index(b"av\x02") + 2] = 0x03
        await sock.send_multipart([bytes(bad_version)])
        replies = []
        for _ in range(2):
            async with asyncio.timeout(5):
                replies.append(p.decode(await sock.recv_multipart()))
    finally:
        sock.close()
        plain.close()
        ctx.term()
    assert {(r.req, r.code) for r in replies if isinstance(r, p.Error)} == {
        (7, p.ErrorCode.BAD_REQUEST),
        (9, p.ErrorCode.UNSUPPORTED_VERSION),
    }
    r = run_zwalk("find", "keep.txt", "--peer", a.endpoint, "--out", "dl", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "dl" / "keep.txt").read_bytes() == b"still here"
    assert a.proc.poll() is None


def test_demo_ends_with_a_verified_download(tmp_path: Path) -> None:
    r = run_zwalk("demo", "--size", "4", cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "byte-identical to the source: yes" in r.stderr
    assert list(tmp_path.iterdir()) == []  # the demo leaves nothing behind


def test_tests_and_the_commands_they_start_run_this_checkout(tmp_path: Path) -> None:
    """In-process imports and every `python -m zwalk` a test starts load the package under
    test, wherever they run: never an installed copy that may be older."""
    import zwalk

    checkout = Path(__file__).resolve().parent.parent / "zwalk"
    assert Path(zwalk.__file__).resolve().parent == checkout
    r = run_zwalk("--version", cwd=tmp_path, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("zwalk ") and f"({checkout})" in r.stdout, r.stdout
    assert "pyzmq" in r.stdout and "libzmq" in r.stdout and "zeroconf" in r.stdout


async def test_forged_hello_and_wrong_control_token_are_refused(
    serve: Serve, tmp_path: Path
) -> None:
    import zmq
    import zmq.asyncio

    from zwalk.net import control
    from zwalk.store import state

    a = serve("a", {"x.txt": b"x"})
    ctx = zmq.asyncio.Context()
    try:
        # the routing id names one node, the hello another, and the key proves a third
        sock = curve_dealer(ctx, a.endpoint, public_key(a.data_dir), ROUTING_ID=b"\1" * 20)
        forged = p.Hello(req=3, node=b"\2" * 16, name="mallory", port=1, inc=b"i" * 8)
        await sock.send_multipart(p.encode(forged))
        await sock.send_multipart(p.encode(p.Status(req=4, token=b"\0" * 16)))
        replies = {}
        for _ in range(2):
            async with asyncio.timeout(5):
                r = p.decode(await sock.recv_multipart())
            replies[r.req] = r
        assert isinstance(replies[3], p.Error) and "key" in replies[3].reason
        assert isinstance(replies[4], p.Error) and "control endpoint" in replies[4].reason

        local = state.read_state(a.data_dir)
        assert local is not None
        ctl = ctx.socket(zmq.DEALER)
        ctl.setsockopt(zmq.LINGER, 0)
        ctl.connect(local.control)
        await ctl.send_multipart(p.encode(p.Status(req=5, token=b"\0" * 16)))
        async with asyncio.timeout(5):
            r = p.decode(await ctl.recv_multipart())
        assert isinstance(r, p.Error) and r.code is p.ErrorCode.BAD_REQUEST
        ok = await control.status(local)
        assert ok is not None and ok.files == 1
        sock.close()
        ctl.close()
    finally:
        ctx.term()
    if sys.platform != "win32":  # POSIX permission bits; Windows keeps it by the folder's ACL
        assert (a.data_dir / "node.json").stat().st_mode & 0o077 == 0  # the token is owner-only


def test_a_static_peer_named_by_host_name_does_not_break_hellos(
    serve: Serve, tmp_path: Path
) -> None:
    b = serve("b", {"b.txt": b"from b"})
    port = b.endpoint.rsplit(":", 1)[1]
    a = serve("a", {"a.txt": b"from a"}, "--peer", f"localhost:{port}")
    r = run_zwalk("find", "a.txt", "--peer", a.endpoint, "--out", "dl", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "dl" / "a.txt").read_bytes() == b"from a"
    assert "Traceback" not in a.log.read_text()


class LyingRouter(Router):
    """Shares the real file (so searches find its content id), but its chunk hash list and its
    chunks describe other bytes of the same size: every chunk checks out against the list."""

    async def respond(self, msg: p.Message, sender: bytes) -> p.Message:
        reply = await super().respond(msg, sender)
        if isinstance(reply, p.FileInfo):
            fake, cs = _fake(reply.size), reply.chunk_size
            n = p.chunk_count(reply.size, cs)
            hashes = b"".join(blake3.blake3(fake[i * cs : (i + 1) * cs]).digest() for i in range(n))
            return replace(reply, hashes=hashes)
        if isinstance(reply, p.Chunks):
            entry = self.shares.index.by_cid(reply.cid)
            assert entry is not None
            offset = reply.index * entry.chunk_size
            return replace(reply, payload=_fake(entry.size)[offset : offset + len(reply.payload)])
        return reply


class LyingNode(Node):
    Router = LyingRouter


def _fake(size: int) -> bytes:
    return blake3.blake3(b"not the real thing").digest(length=size)


async def _lab_of(tmp: Path, data: bytes, kinds: list[tuple[str, type[Node]]]) -> list[Node]:
    nodes = []
    for name, cls in kinds:
        share = tmp / f"{name}-share"
        share.mkdir()
        (share / "file.bin").write_bytes(data)
        nodes.append(cls(_node_cfg(tmp, name), identity.ephemeral(), shares=[share]))
    return nodes


async def test_a_lying_hash_list_never_gets_its_data_placed(tmp_path: Path) -> None:
    data = os.urandom(10 * p.MIN_CHUNK_SIZE + 5)
    [liar] = await _lab_of(tmp_path, data, [("liar", LyingNode)])
    async with running(liar):
        code, out, err = await find_async(
            tmp_path, "file.bin", "--peer", str(liar.local.endpoints[0]), "--out", "dl", "--json"
        )
    assert code == 3, err
    doc = json.loads(out)
    assert "do not add up to the content id" in " ".join(doc["errors"])
    assert list((tmp_path / "dl").iterdir()) == []  # no file, no .part, no progress record


async def test_the_largest_group_lies_and_the_honest_holder_still_delivers(tmp_path: Path) -> None:
    data = os.urandom(10 * p.MIN_CHUNK_SIZE + 5)
    kinds = [("liar1", LyingNode), ("liar2", LyingNode), ("honest", Node)]
    nodes = await _lab_of(tmp_path, data, kinds)
    async with running(nodes[0]), running(nodes[1]), running(nodes[2]):
        peers = [a for n in nodes for a in ("--peer", str(n.local.endpoints[0]))]
        code, out, err = await find_async(
            tmp_path, "file.bin", "--all", *peers, "--out", "dl", "--json"
        )
    assert code == 0, err
    assert (tmp_path / "dl" / "file.bin").read_bytes() == data
    d = json.loads(out)["download"]
    # the two liars agree with each other, so their list was tried first, then dropped
    assert sum("do not add up" in v for k, v in d["excluded"].items() if "liar" in k) == 2
    assert all("honest" in s for s in d["sources"])
    assert sorted(x.name for x in (tmp_path / "dl").iterdir()) == ["file.bin"]


async def test_wait_until_wakes_at_the_hello_and_gives_up_at_its_timeout(tmp_path: Path) -> None:
    # `zwalk find` waits like this for the holders' hellos before it downloads
    a = Node(_node_cfg(tmp_path, "a"), identity.ephemeral())
    async with running(a):
        ep = Endpoint(LOOPBACK, a.port)
        cfg = replace(_node_cfg(tmp_path, "b"), peers=(ep,))
        b = Node(cfg, identity.ephemeral(), listen=False)
        async with running(b):
            assert await b.peers.wait_until(lambda: b.peers.alive(ep), 10)
            assert b.peers.link_for(a.identity.node_id) is not None
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert not await b.peers.wait_until(lambda: False, 0.2)
            assert loop.time() - started >= 0.2


async def test_a_peer_dropped_at_its_hello_is_not_waited_for(tmp_path: Path) -> None:
    a = Node(_node_cfg(tmp_path, "a"), identity.ephemeral())
    async with running(a):
        with socket.socket() as s:  # a free port for b, so b can name itself as a peer
            s.bind((LOOPBACK, 0))
            port = s.getsockname()[1]
        ep_a, ep_self = Endpoint(LOOPBACK, a.port), Endpoint(LOOPBACK, port)
        cfg = replace(_node_cfg(tmp_path, "b"), port=port, peers=(ep_a, ep_self))
        b = Node(cfg, identity.ephemeral())
        async with running(b):
            # b's hello to itself gets it dropped ("our own node"); a answers
            assert await b.peers.wait_until(lambda: b.peers.answered([ep_a, ep_self]), 5)
            assert b.peers.alive(ep_a) and not b.peers.alive(ep_self)
            assert ep_self not in b.peers.membership.by_endpoint


class VanishingRouter(Router):
    """Finds and describes its file, then fails every chunk request, as a holder that went
    away between the search and the download does."""

    async def respond(self, msg: p.Message, sender: bytes) -> p.Message:
        if isinstance(msg, p.GetChunks):
            return p.Error(req=msg.req, code=p.ErrorCode.INTERNAL, reason="disk gone")
        return await super().respond(msg, sender)


class VanishingNode(Node):
    Router = VanishingRouter


async def test_when_the_hits_holders_fail_a_holder_found_by_content_id_delivers(
    tmp_path: Path,
) -> None:
    """A name search finds the one node that has `x.bin` under that name; it fails. Another node
    has the same bytes under another name: the download goes on from it (found by content id),
    where before it ended with 'every source failed'."""
    data = os.urandom(3 * p.MIN_CHUNK_SIZE)
    shares = {}
    for who, name in (("gone", "x.bin"), ("other", "y.bin")):
        shares[who] = tmp_path / f"{who}-share"
        shares[who].mkdir()
        (shares[who] / name).write_bytes(data)
    gone = VanishingNode(_node_cfg(tmp_path, "gone"), identity.ephemeral(), shares=[shares["gone"]])
    other = Node(_node_cfg(tmp_path, "other"), identity.ephemeral(), shares=[shares["other"]])
    async with running(gone), running(other):
        peers = ["--peer", str(gone.local.endpoints[0]), "--peer", str(other.local.endpoints[0])]
        code, out, err = await find_async(tmp_path, "x.bin", *peers, "--out", "dl", "--json")
    doc = json.loads(out)
    assert code == 0, (doc["errors"], err)
    assert [h["holders"][0]["name"] for h in doc["hits"]] == ["gone"]  # the name search's only
    assert (tmp_path / "dl" / "x.bin").read_bytes() == data
    [source] = doc["download"]["sources"]
    assert source.startswith(f"other ({other.identity.node_id.hex()[:12]})")
