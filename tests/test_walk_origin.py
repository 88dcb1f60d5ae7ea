"""A walk's `origin` names where reports go (issue 13's second hole). One unsolicited 221-byte
walk (glob `*`, a target sharing many files) made a node send hello, every hit and walk-end to
whatever endpoint the origin named, though it never answered hello: 920x the request. Now a
relay reports and checks back only to a searcher that has answered its hello, does not try an
endpoint that failed it for `retry_after`, and meets at most MAX_UNVERIFIED_PER_HOST endpoints
of one host that have not answered yet."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import zmq
import zmq.asyncio
from procs import LOOPBACK, ServeProcess, curve_dealer, public_key, start_serve
from zmq.utils import z85

from zwalk.core import protocol as p
from zwalk.core.keys import node_id_for
from zwalk.net.peers import MAX_UNVERIFIED_PER_HOST


class Victim:
    """ROUTER sockets that complete the CurveZMQ handshake and never answer: what a walk's
    origin names when it names a third party whose key it knows (the worst case: a zwalk node
    that never asked, or any CurveZMQ service)."""

    def __init__(self, ports: int) -> None:
        self.ctx = zmq.asyncio.Context()
        self.public, secret = zmq.curve_keypair()
        self.key = z85.decode(self.public)
        self.socks = []
        for _ in range(ports):
            s = self.ctx.socket(zmq.ROUTER)
            s.setsockopt(zmq.LINGER, 0)
            s.curve_server, s.curve_secretkey = True, secret
            s.bind_to_random_port(f"tcp://{LOOPBACK}")
            self.socks.append(s)
        self.received: list[tuple[int, str, int]] = []  # (socket, type, header bytes)

    def port(self, i: int) -> int:
        return int(self.socks[i].getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])

    async def listen(self, seconds: float) -> None:
        poller = zmq.asyncio.Poller()
        for s in self.socks:
            poller.register(s, zmq.POLLIN)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            for s, _ in await poller.poll(timeout=int(left * 1000) + 1):
                frames = await s.recv_multipart()
                t = p.decode(frames[1:]).TYPE
                self.received.append((self.socks.index(s), t, sum(len(f) for f in frames[1:])))

    def close(self) -> None:
        for s in self.socks:
            s.close(linger=0)
        self.ctx.term()


def _walk(target: str, victim: Victim, port: int, qid: bytes) -> p.Walk:
    origin = p.PeerRef(
        node=node_id_for(victim.key), name="victim", host=LOOPBACK, port=port, key=victim.key
    )
    return p.Walk(
        req=1, qid=qid, walker=0, hops=1, path=(origin.node, bytes.fromhex(target)),
        strategy=p.Strategy.KWALK, ttl=10, check_every=0, origin=origin,
        kind=p.QueryKind.GLOB, pattern="*", icase=False, stop_on_hit=False, backtrack=False,
    )  # fmt: skip


async def _send(node: ServeProcess, msgs: list[p.Walk]) -> list[p.Message]:
    ctx = zmq.asyncio.Context.instance()
    sock = curve_dealer(ctx, node.endpoint, public_key(node.data_dir))
    try:
        for m in msgs:
            await sock.send_multipart(p.encode(m))
        replies = []
        for _ in msgs:
            async with asyncio.timeout(5):
                replies.append(p.decode(await sock.recv_multipart()))
        return replies
    finally:
        sock.close(linger=0)


async def test_a_walk_naming_a_third_party_sends_it_a_hello_and_nothing_more(
    tmp_path: Path,
) -> None:
    files = {f"file-{i:03}.txt": b"x" * 10 for i in range(300)}
    node = start_serve(tmp_path, "a", files)
    victim = Victim(1)
    try:
        target = node.node
        walk = _walk(target, victim, victim.port(0), os.urandom(16))
        request = len(p.encode(walk)[0])
        assert await _send(node, [walk]) == [p.WalkOk(req=1)]
        await victim.listen(6.0)  # the hello times out (2 s), its failure is recorded
        types = [t for _, t, _ in victim.received]
        sent = sum(n for _, _, n in victim.received)
        print(f"walk of {request} bytes: the origin got {types}, {sent} bytes")
        assert types == ["hello"], types  # no walk-hits (300 hits), no walk-end
        assert sent < 2 * request
        # Named again within retry_after of its failure: not even a hello.
        victim.received.clear()
        again = _walk(target, victim, victim.port(0), os.urandom(16))
        assert await _send(node, [again]) == [p.WalkOk(req=1)]
        await victim.listen(1.5)
        assert victim.received == []
    finally:
        victim.close()
        node.stop()
    assert "Traceback" not in node.log.read_text()


async def test_a_walk_naming_a_third_party_with_a_made_up_key_sends_it_nothing(
    tmp_path: Path,
) -> None:
    """The usual reflection attempt: an origin with the victim's address and a key the victim
    does not hold. The relay's CurveZMQ handshake fails there, so not even a hello arrives."""
    node = start_serve(tmp_path, "a", {f"file-{i:03}.txt": b"x" for i in range(50)})
    victim = Victim(1)
    try:
        victim.key = os.urandom(32)  # the origin names a key the victim does not have
        walk = _walk(node.node, victim, victim.port(0), os.urandom(16))
        assert await _send(node, [walk]) == [p.WalkOk(req=1)]
        await victim.listen(5.0)
        assert victim.received == []
    finally:
        victim.close()
        node.stop()
    assert "Traceback" not in node.log.read_text()


async def test_walks_naming_many_ports_of_one_host_open_few_connections(tmp_path: Path) -> None:
    node = start_serve(tmp_path, "a", {"f.txt": b"f"})
    victim = Victim(10)
    try:
        target = node.node
        walks = [_walk(target, victim, victim.port(i), os.urandom(16)) for i in range(10)]
        assert await _send(node, walks) == [p.WalkOk(req=1)] * 10
        await victim.listen(1.5)
        greeted = {i for i, t, _ in victim.received if t == "hello"}
        assert len(greeted) <= MAX_UNVERIFIED_PER_HOST, greeted
        assert {t for _, t, _ in victim.received} <= {"hello"}
    finally:
        victim.close()
        node.stop()


async def test_a_searcher_met_through_its_walk_still_gets_its_hits(tmp_path: Path) -> None:
    """The real case the rule must keep: a relay that has never met the searcher says hello,
    gets the answer, then reports (the find test of the lab covers walks over many hops)."""
    from procs import run_zwalk

    a = start_serve(tmp_path, "a", {"only-on-a.txt": b"here"})
    try:
        r = run_zwalk(
            "--interface", LOOPBACK, "find", "only-on-a.txt", "--peer", a.endpoint,
            "--no-download", "--json", cwd=tmp_path,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert [h["name"] for h in json.loads(r.stdout)["hits"]] == ["only-on-a.txt"]
    finally:
        a.stop()
