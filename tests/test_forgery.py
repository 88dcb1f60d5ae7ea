"""Claims in another node's name change nothing. A node's id is the hash of its public key and
every connection proves its key (CurveZMQ), so an mDNS record or a hello naming another node's
id with a key of its own is ignored, and a bye removes only the node that sent it, whoever the
routing id says it is. Nodes run on 127.0.0.1 with mDNS there, and the forger is this test."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq
import zmq.asyncio
from procs import LOOPBACK, ServeProcess, curve_dealer, public_key, run_zwalk
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from zwalk.core import protocol as p
from zwalk.net import control
from zwalk.store import state

Serve = Callable[..., ServeProcess]


async def _members(node: ServeProcess) -> list[p.MemberInfo]:
    local = state.read_state(node.data_dir)
    assert local is not None
    st = await control.status(local)
    assert st is not None
    return list(st.members)


async def _wait(check: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[misc]
        assert time.monotonic() < deadline, "not true in time"
        await asyncio.sleep(0.1)


async def test_forged_mdns_hello_and_bye_change_nothing(serve: Serve) -> None:
    a = serve("a", {"a.txt": b"a"})
    b = serve("b", {"b.txt": b"b"})  # met through mDNS on 127.0.0.1

    async def a_sees_b() -> bool:
        return [(m.node.hex(), m.state) for m in await _members(a) if m.node] == [(b.node, "alive")]

    await _wait(a_sees_b, 15)
    ctx = zmq.asyncio.Context()
    # The forger listens (a CurveZMQ server with its own key) and counts what reaches it.
    public, secret = zmq.curve_keypair()
    trap = ctx.socket(zmq.ROUTER)
    trap.setsockopt(zmq.LINGER, 0)
    trap.curve_server, trap.curve_secretkey = True, secret
    trap_port = trap.bind_to_random_port(f"tcp://{LOOPBACK}")
    zc = AsyncZeroconf(interfaces=[LOOPBACK], ip_version=IPVersion.V4Only)
    forged_record = AsyncServiceInfo(
        "_zwalk._tcp.local.",
        f"zwalk-forged-{os.getpid()}._zwalk._tcp.local.",
        addresses=[socket.inet_aton(LOOPBACK)],
        port=trap_port,
        properties={"id": b.node, "v": str(p.PROTOCOL_VERSION), "name": "b", "pk": public.decode()},
        server="zwalk-forged.local.",
    )
    sock = curve_dealer(ctx, a.endpoint, public_key(a.data_dir), ROUTING_ID=bytes.fromhex(b.node))
    try:
        await zc.async_register_service(forged_record, cooperating_responders=True)
        # A hello in b's name from a connection that proved another key, and a bye.
        hello = p.Hello(req=1, node=bytes.fromhex(b.node), name="b", port=trap_port, inc=b"i" * 8)
        await sock.send_multipart(p.encode(hello))
        async with asyncio.timeout(5):
            answer = p.decode(await sock.recv_multipart())
        assert isinstance(answer, p.Error) and "key" in answer.reason
        await sock.send_multipart(p.encode(p.Bye(req=0)))
        await asyncio.sleep(3.0)  # the record is seen at once; allow for a retry or two
        rows = [(m.node.hex() if m.node else None, m.port, m.state) for m in await _members(a)]
        assert rows == [(b.node, int(b.endpoint.rsplit(":")[1]), "alive")], rows
        assert await trap.poll(0) == 0  # a never tried the forged endpoint
    finally:
        await zc.async_unregister_service(forged_record)
        await zc.async_close()
        sock.close(linger=0)
        trap.close(linger=0)
        ctx.term()
    log = a.log.read_text()
    assert "its id is not its key's" in log, log
    assert "Traceback" not in log


@pytest.mark.skipif(
    sys.platform == "win32", reason="SIGTERM is TerminateProcess there: no bye is sent"
)
async def test_a_bye_removes_its_sender_and_no_one_else(serve: Serve) -> None:
    """The real bye still works: b leaving is seen at once, through its own connection."""
    a = serve("a", {"a.txt": b"a"})
    b = serve("b", {"b.txt": b"b"})

    async def a_sees_b() -> bool:
        return any(
            m.node and m.node.hex() == b.node and m.state == "alive" for m in await _members(a)
        )

    await _wait(a_sees_b, 15)
    b.stop()  # SIGTERM: bye to every peer

    async def a_lost_b() -> bool:
        return not await a_sees_b()

    await _wait(a_lost_b, 2)


async def test_a_version_1_node_on_mdns_is_named_with_the_reason(
    serve: Serve, tmp_path: Path
) -> None:
    """A node of the unencrypted version 1 is never met; `zwalk peers` says why it is missing."""
    a = serve("a", {"a.txt": b"a"})
    zc = AsyncZeroconf(interfaces=[LOOPBACK], ip_version=IPVersion.V4Only)
    old = os.urandom(16).hex()
    record = AsyncServiceInfo(
        "_zwalk._tcp.local.",
        f"zwalk-{old}._zwalk._tcp.local.",
        addresses=[socket.inet_aton(LOOPBACK)],
        port=1,
        properties={"id": old, "v": "1", "name": "old", "pk": "0" * 40},
        server="zwalk-old.local.",
    )
    try:
        await zc.async_register_service(record, cooperating_responders=True)

        async def named() -> list[dict]:  # type: ignore[type-arg]
            r = run_zwalk("peers", "--json", "--data-dir", str(a.data_dir), cwd=tmp_path)
            rows = json.loads(r.stdout)["unreachable"] if r.stdout else []
            return [u for u in rows if u["node"] == old]

        await _wait(named, 10)
        [row] = await named()
        assert "protocol version 1" in row["reason"] and "upgrade zwalk" in row["reason"], row
    finally:
        await zc.async_unregister_service(record)
        await zc.async_close()
