# The local control endpoint: how `zwalk peers` and `find` use a running `serve` node.
#
# The node writes node.json (owner-only) in its data dir with its pid, endpoints, the control
# endpoint and a random token. The control endpoint is a ZeroMQ ipc socket inside the data dir
# where ipc exists and the path is short enough, otherwise a loopback TCP port; either way a
# request must carry the token, which only a process that can read node.json (the same user) has.
from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import zmq
import zmq.asyncio

from zwalk.core import protocol as p
from zwalk.core.addresses import Endpoint
from zwalk.core.query import Query
from zwalk.core.search_options import SearchOptions
from zwalk.net.diagnosis import failures, hello_wait, member_info, problems
from zwalk.net.finder import run_find
from zwalk.net.router import reply
from zwalk.net.walks import WalkService
from zwalk.store.state import MAX_IPC_PATH, LocalNode, socket_path

log = logging.getLogger(__name__)


def control_endpoint(data_dir: Path) -> str | None:
    """The ipc endpoint to bind, or None when ipc is not usable here (then: loopback TCP).

    Creates the socket's folder owner-only: only the same user can reach the socket."""
    path = socket_path(data_dir)
    # pyzmq's Windows wheels build libzmq without ipc (it was unreliable there).
    if sys.platform == "win32" or not zmq.has("ipc") or len(str(path).encode()) > MAX_IPC_PATH:
        return None
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)  # our own folder: also if an older run left it wider
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a crashed run's leftover
    return f"ipc://{path}"


async def status(
    local: LocalNode, timeout: float = 2.0, peers: tuple[p.Address, ...] = (), keep: bool = False
) -> p.StatusOk | None:
    """Ask the running node for its state (once it has said hello to `peers`, which it keeps
    as static peers with `keep`); None if it does not answer in time."""
    msg = p.Status(req=1, token=local.token, peers=peers, keep=keep)
    reply = await request(local, msg, timeout)
    return reply if isinstance(reply, p.StatusOk) else None


async def request(local: LocalNode, msg: p.Message, timeout: float) -> p.Message | None:
    """One request to the running node's control endpoint; None if it does not answer."""
    ctx = zmq.asyncio.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, p.MAX_CONTROL_HEADER)
    try:
        sock.connect(local.control)
        await sock.send_multipart(p.encode(msg))
        if not await sock.poll(int(timeout * 1000)):
            return None
        return p.decode(await sock.recv_multipart(), control=True)
    except (zmq.ZMQError, p.ProtocolError):
        return None
    finally:
        sock.close(linger=0)


class ControlServer:
    """The running node's side: answers `status` and `find` from local commands that hold the
    token. A find runs as the node's own search, side by side with others."""

    def __init__(self, sock: zmq.asyncio.Socket, token: bytes, walks: WalkService) -> None:
        self.sock = sock
        self.token = token
        self.walks = walks
        self.peers = walks.peers

    async def serve(self) -> None:
        while True:
            frames = await self.sock.recv_multipart(copy=False)
            if len(frames) < 2:
                continue
            rid = frames[0].bytes
            try:
                msg = p.decode([f.buffer for f in frames[1:]], control=True)
            except (p.ProtocolError, p.DecoderBug) as e:
                if isinstance(e, p.DecoderBug):
                    log.exception("cannot decode a control request")
                if e.req is not None:
                    code = e.code if isinstance(e, p.ProtocolError) else p.ErrorCode.INTERNAL
                    await reply(self.sock, rid, p.Error(req=e.req, code=code, reason=str(e)))
                continue
            if not isinstance(msg, p.CONTROL_REQUESTS) or not secrets.compare_digest(
                msg.token, self.token
            ):
                bad = p.Error(
                    req=msg.req, code=p.ErrorCode.BAD_REQUEST, reason="not a valid control request"
                )
                await reply(self.sock, rid, bad)
                continue
            if isinstance(msg, p.Find):
                self.walks.spawn(self._find(rid, msg))  # searches run side by side
            elif msg.peers:
                self.walks.spawn(self._status(rid, msg))  # after a hello to each
            else:
                await self._status(rid, msg)

    async def _status(self, rid: bytes, msg: p.Status) -> None:
        eps, keys = _named(msg.peers)
        await self.peers.meet(eps, keys, timeout=hello_wait(self.peers.cfg))
        # `zwalk connect`: a peer that answered is kept from now on as if configured (tried again
        # if it goes); one that did not is not kept, so a typo does not linger until a restart.
        kept = [ep for ep in eps if self.peers.alive(ep)] if msg.keep else []
        if kept:
            self.peers.apply(self.peers.membership.add_static(kept, self.peers.now()))
            log.info("connect: keeping %s as static peers", ", ".join(map(str, kept)))
        try:
            answer: p.Message = node_status(self.walks, msg.req)
        except Exception as e:  # a table we cannot describe must not stop the node
            log.exception("cannot build status")
            answer = p.Error(req=msg.req, code=p.ErrorCode.INTERNAL, reason=type(e).__name__)
        await reply(self.sock, rid, answer)

    async def _find(self, rid: bytes, msg: p.Find) -> None:
        opts = find_options(msg)
        query = Query(kind=msg.kind, pattern=msg.pattern, icase=msg.icase)
        try:
            await self.peers.meet(*_named(msg.peers), timeout=hello_wait(self.peers.cfg))
            result = await run_find(self.walks, query, opts)
            result.errors = problems(self.peers.membership, self.peers.now())
            answer: p.Message = result.to_wire(msg.req)
        except Exception as e:  # a failed search must not stop the node
            log.exception("search failed")
            answer = p.Error(req=msg.req, code=p.ErrorCode.INTERNAL, reason=type(e).__name__)
        await reply(self.sock, rid, answer)


def find_options(msg: p.Find) -> SearchOptions:
    """How to run a local client's find. Walker numbers stop at MAX_WALKERS - 1 and a search
    numbers up to twice `walkers`, so more than half of that is run with half."""
    walkers = min(msg.walkers, p.MAX_WALKERS // 2)
    return SearchOptions(
        strategy=msg.strategy,
        timeout=msg.timeout_ms / 1000,
        want=msg.want,
        walkers=walkers,
        initial=min(msg.initial, walkers),
        ttl=msg.ttl,
        check_every=msg.check_every,
        linger=msg.linger_ms / 1000 if msg.linger_ms else None,
    )


def node_status(walks: WalkService, req: int = 0) -> p.StatusOk:
    """The node as `zwalk peers` shows it: who we are, what we share, the membership table."""
    local, peers, index = walks.local, walks.peers, walks.shares.index
    mono, wall = peers.now(), time.time()

    def ms(t: float) -> int:
        return max(0, int((wall - (mono - t)) * 1000))

    members = peers.membership.by_endpoint.values()
    return p.StatusOk(
        req=req,
        node=local.node_id,
        name=local.name,
        endpoints=tuple(
            p.PeerRef(node=local.node_id, name=local.name, host=e.host, port=e.port, key=local.key)
            for e in local.reachable_at()
        )[:16],
        files=len(index),
        bytes=index.total_bytes,
        members=tuple(member_info(m, ms) for m in members)[: p.MAX_MEMBERS],
        sent=walks.sent,
        failed=tuple(failures(peers.membership, mono)),
        hashed=walks.shares.hashed,
        shares=tuple(str(r.path) for r in walks.shares.scanner.roots)[: p.MAX_SHARES],
    )


def _named(peers: Iterable[p.Address]) -> tuple[list[Endpoint], dict[Endpoint, bytes]]:
    """The endpoints a local command named, and the keys it gave for some."""
    eps = [Endpoint(a.host, a.port) for a in peers]
    return eps, {Endpoint(a.host, a.port): a.key for a in peers if a.key}
