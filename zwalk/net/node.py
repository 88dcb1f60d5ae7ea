# A zwalk node: the composition root of the asyncio shell. It binds the sockets, wires the
# parts together and owns every task; the parts do the work:
#
#   Router       everything peers send us (net/router.py, answers from core/responder.py)
#   PeerTable    who is out there and alive, one link per peer (net/peers.py, core/membership.py)
#   Discovery    mDNS announce and browse (net/discovery.py)
#   Shares       the share index over time (net/shares.py, store/index.py)
#   WalkService  walks we relay and walks we start (net/walks.py, core/walk.py)
#   ControlServer  `zwalk peers` and `find` asking this node (net/control.py)
#
# One ROUTER bound per node takes everything that comes in; one DEALER per peer carries what goes
# out (ZeroMQ's Harmony pattern). Every peer connection is CurveZMQ, the ROUTER a server with our
# long-term key and ZAP (net/gate.py) deciding who may connect. Sends never block: a peer whose
# queue is full is treated as gone. Disk work and hashing go to worker threads.
from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq
import zmq.asyncio

from zwalk.core import protocol as p
from zwalk.core.query import Query
from zwalk.core.search_options import SearchOptions
from zwalk.net import control
from zwalk.net.binding import bind_control, bind_router
from zwalk.net.diagnosis import problems
from zwalk.net.finder import FindResult, run_find
from zwalk.net.gate import Gate
from zwalk.net.keyservice import serve_keys
from zwalk.net.local import LOOPBACK, Local
from zwalk.net.netif import default_addresses, resolve
from zwalk.net.peers import BYE_LINGER_MS, PeerTable
from zwalk.net.router import Router
from zwalk.net.shares import Shares
from zwalk.net.walks import WalkService
from zwalk.store import state
from zwalk.store.config import Config
from zwalk.store.identity import Identity

if TYPE_CHECKING:
    from zwalk.net.discovery import Discovery

log = logging.getLogger(__name__)


class Node:
    """A zwalk node. `run` owns every task and socket and returns only when cancelled."""

    Router = Router  # what answers peers (a test may serve something else)

    def __init__(
        self,
        cfg: Config,
        identity: Identity,
        *,
        shares: Iterable[Path] = (),
        listen: bool = True,
        discover: bool = False,
        announce: bool = True,
        state_dir: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.identity = identity
        self.discover = discover
        self.announce = announce
        self.state_dir = state_dir  # where node.json and the control endpoint live while serving
        self.ctx = zmq.asyncio.Context()
        self.local = Local(identity, cfg.name, listen)
        self.gate = Gate(cfg.trust, cfg.allowlist, identity.key)
        self.peers = PeerTable(self.ctx, cfg, self.local, self.spawn, self.gate)
        self.shares = Shares(cfg, [Path(s) for s in shares], self.spawn, self._index_changed)
        self.walks = WalkService(self.local, self.peers, self.shares, self.spawn, cfg.reply_timeout)
        self.discovery: Discovery | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._closing = False
        self._lock: state.DataDirLock | None = None
        self._sockets: list[zmq.asyncio.Socket] = []
        self._transports: list[asyncio.DatagramTransport] = []
        self._control_endpoint = ""
        self._token = secrets.token_bytes(p.TOKEN_BYTES)

    @property
    def port(self) -> int:
        return self.local.port

    # --- lifecycle --------------------------------------------------------------------------
    async def run(self, ready: asyncio.Future[Node]) -> None:
        """Bind, announce, index, then serve until cancelled. Start-up errors reach `ready`."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                try:
                    await self._start(tg)
                except BaseException as e:
                    if not ready.done():
                        ready.set_exception(e)
                    raise
                ready.set_result(self)
                try:
                    await asyncio.Future()  # until cancelled
                finally:
                    self.shares.stop()  # its worker and watcher threads end while tasks do
        finally:
            self._closing = True
            self._tg = None
            await self._leave()

    async def _start(self, tg: asyncio.TaskGroup) -> None:
        if self.local.listen:
            if self.state_dir is not None:
                self._lock = state.DataDirLock(self.state_dir)  # before touching its files
            self.gate.start(self.ctx)  # before the ROUTER binds: no handshake goes unchecked
            router = self.Router(
                self._bind(), self.local, self.peers, self.shares, self.walks, self.spawn
            )
            tg.create_task(router.serve())
            self._transports = await serve_keys(self.local.endpoints, self.identity.key)
            if self.state_dir is not None:
                server = control.ControlServer(self._bind_control(), self._token, self.walks)
                tg.create_task(server.serve())
        if self.discover:
            await self._start_discovery()
        self.peers.apply(self.peers.membership.add_static(self.cfg.peers, self.peers.now()))
        tg.create_task(self.peers.keep_alive())
        self._write_state()
        if self.shares.folders:
            await self.shares.start()
            tg.create_task(self.shares.keep_fresh())

    async def _start_discovery(self) -> None:
        # Announce before the share index is built: peers see us at once.
        addrs = resolve(self.cfg.interfaces) if self.cfg.interfaces else default_addresses()
        if not addrs:
            log.warning("no non-loopback IPv4 interface: discovery runs on %s", LOOPBACK)
            addrs = [LOOPBACK]
        self.local.mdns_addresses = addrs
        # zeroconf takes a good part of a second-long find's start-up: only when needed
        from zwalk.net.discovery import Discovery

        announce = self.local.listen and self.announce
        self.discovery = Discovery(
            addresses=addrs,
            spawn=self.spawn,
            on_found=self.peers.on_found,
            on_gone=self.peers.on_gone,
            browse_only=not announce,
        )
        await self.discovery.start()
        if announce:
            await self.discovery.announce(
                node=self.identity.node_id,
                name=self.local.name,
                port=self.port,
                public_key=self.identity.public,
            )

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
        """Run a task owned by this node (dropped if the node is shutting down). Most tasks
        start because of something the network did: one that fails is logged, and the node
        goes on (an exception would otherwise end the whole task group)."""
        if self._tg is None or self._closing:
            coro.close()
            return None
        try:
            return self._tg.create_task(_guarded(coro))
        except RuntimeError:  # the group is shutting down
            coro.close()
            return None

    async def _leave(self) -> None:
        """Tell peers and mDNS that we go, then release every socket."""
        self.shares.stop()
        await self.shares.close()
        self.peers.close()
        if self.discovery is not None:
            try:
                async with asyncio.timeout(2):
                    await self.discovery.close()
            except (TimeoutError, OSError) as e:
                log.warning("mDNS goodbye failed: %s", e)
        if self.state_dir is not None:
            state.remove_state(self.state_dir)
        if self._lock is not None:
            self._lock.release()
        for transport in self._transports:
            transport.close()
        for sock in self._sockets:
            sock.close(linger=0)
        self.gate.stop()
        # Waits up to BYE_LINGER_MS for the byes to go out, and never longer.
        await asyncio.to_thread(self.ctx.destroy, BYE_LINGER_MS)

    def _bind(self) -> zmq.asyncio.Socket:
        sock, endpoints = bind_router(self.ctx, self.cfg, self.identity.secret)
        self._sockets.append(sock)
        self.local.endpoints += endpoints
        return sock

    def _bind_control(self) -> zmq.asyncio.Socket:
        assert self.state_dir is not None  # noqa: S101 -- checked by the caller
        sock, self._control_endpoint = bind_control(self.ctx, self.state_dir)
        self._sockets.append(sock)
        return sock

    def _index_changed(self) -> None:
        self.local.files = len(self.shares.index)
        self._write_state()
        self.peers.tell_files()

    def _write_state(self) -> None:
        if self.state_dir is None or not self.local.listen:
            return
        state.write_state(
            self.state_dir,
            {
                "pid": os.getpid(),
                "node": self.identity.node_id.hex(),
                "name": self.local.name,
                "endpoints": [str(e) for e in self.local.endpoints],
                "control": self._control_endpoint,
                "token": self._token.hex(),
                "files": len(self.shares.index),
                "hashed": self.shares.hashed,
                "downloads": str(self.cfg.downloads.resolve()),
                "shares": [str(s.resolve()) for s in self.shares.folders],
            },
        )

    # --- what commands ask of a running node ------------------------------------------------
    async def find(self, query: Query, opts: SearchOptions) -> FindResult:
        return await run_find(self.walks, query, opts)

    def status(self, req: int = 0) -> p.StatusOk:
        return control.node_status(self.walks, req)

    def problems(self, within: float = 60.0) -> list[str]:
        """Peers lost or unreachable in the last `within` seconds, as lines for a user."""
        return problems(self.peers.membership, self.peers.now(), within)


async def _guarded(coro: Coroutine[Any, Any, None]) -> None:
    try:
        await coro
    except Exception:
        log.exception("a node task failed")
