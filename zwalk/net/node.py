# The asyncio shell of a node: it owns every ZeroMQ socket and the zeroconf instance, and runs
# the sans-IO cores (membership, and through search/download, the walk and the scheduler).
#
# One ROUTER bound per node takes everything that comes in; one DEALER per peer carries what goes
# out, with our node id leading its routing id (ZeroMQ's Harmony pattern). Requests carry an id
# and replies name it. Sends never block: a peer whose queue is full is treated as gone. Disk
# work and hashing go to worker threads so the loop stays responsive.
from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import itertools
import logging
import os
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq
import zmq.asyncio

from zwalk.core import protocol as p
from zwalk.core.membership import (
    Connect,
    Disconnect,
    Lost,
    Member,
    Membership,
    Ping,
    Source,
    State,
)
from zwalk.core.query import Query
from zwalk.net import control
from zwalk.net.buffers import BufferPool
from zwalk.net.links import PeerError, PeerGone, PeerInfo, PeerLink, configure
from zwalk.net.netif import default_addresses, ipv4_networks, resolve
from zwalk.net.walks import WalkService
from zwalk.store.config import Config, Endpoint
from zwalk.store.identity import Identity
from zwalk.store.index import Index, scan

if TYPE_CHECKING:
    from zwalk.net.discovery import Discovery

__all__ = ["Node", "PeerError", "PeerGone", "PeerInfo", "PeerLink"]

log = logging.getLogger(__name__)

MAX_CONCURRENT_REQUESTS = 64  # per node, beyond this a request is answered "busy"
MAX_CONCURRENT_READS = 8
BYE_LINGER_MS = 200  # how long a closing link may take to deliver our bye
DIAGNOSE_TIMEOUT = 1.0  # seconds a test connection to a peer that did not answer may take


def hello_wait(cfg: Config) -> float:
    """How long until a peer has answered hello or failed with its reason: the hello's own
    timeout, the diagnosis, and a margin for both to be recorded."""
    return cfg.reply_timeout + DIAGNOSE_TIMEOUT + 0.5


LOOPBACK = "127.0.0.1"


class Node:
    """A zwalk node. `run` owns every task and socket and returns only when cancelled."""

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
        self.name = cfg.name
        self.shares = [Path(s) for s in shares]
        self.listen = listen
        self.discover = discover
        self.announce = announce
        self.state_dir = state_dir  # where node.json and the control endpoint live while serving
        self.incarnation = os.urandom(p.INC_BYTES)
        self.ctx = zmq.asyncio.Context()
        self.index = Index()
        self.endpoints: list[Endpoint] = []
        self.links: dict[Endpoint, PeerLink] = {}
        self.membership = Membership(
            identity.node_id,
            ping_after=cfg.ping_interval,
            ping_timeout=cfg.ping_timeout,
            max_missed=cfg.max_missed_pings,
            # the shell gives up on a hello first, and finds out why (diagnose)
            hello_timeout=hello_wait(cfg),
        )
        self.discovery: Discovery | None = None
        self.mdns_addresses: list[str] = []
        self._req_ids = itertools.count(1)
        self._tg: asyncio.TaskGroup | None = None
        self._closing = False
        self._lock: control.DataDirLock | None = None
        self._allowed_nets: list[ipaddress.IPv4Network] | None = None
        self._rescan_pending = False
        self._scan_stop = threading.Event()  # tells a scan thread that the node is leaving
        self._router: zmq.asyncio.Socket | None = None
        self._control: zmq.asyncio.Socket | None = None
        self._control_endpoint = ""
        self._token = secrets.token_bytes(p.TOKEN_BYTES)
        self._link_tasks: dict[Endpoint, asyncio.Task[None]] = {}
        self._request_slots = asyncio.Semaphore(MAX_CONCURRENT_REQUESTS)
        self._read_slots = asyncio.Semaphore(MAX_CONCURRENT_READS)
        self._buffers = BufferPool(keep=2 * MAX_CONCURRENT_READS)
        self._scan_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        # Set at the next change of the membership table, then replaced by a fresh one: every
        # waiter wakes, and none can clear the signal under another.
        self._changed = asyncio.Event()
        self.walks = WalkService(self)

    @property
    def port(self) -> int:
        return self.endpoints[0].port if self.endpoints else 0

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
                await asyncio.Future()  # until cancelled
        finally:
            self._closing = True
            self._tg = None
            await self._leave()

    async def _start(self, tg: asyncio.TaskGroup) -> None:
        if self.listen and self.state_dir is not None:
            self._lock = control.DataDirLock(self.state_dir)  # before touching any of its files
        if self.listen:
            self._bind()
            tg.create_task(self._serve_router())
            if self.state_dir is not None:
                self._bind_control()
                tg.create_task(self._serve_control())
        if self.discover:
            # Announce before the share index is built: peers see us at once.
            addrs = resolve(self.cfg.interfaces) if self.cfg.interfaces else default_addresses()
            if not addrs:
                log.warning("no non-loopback IPv4 interface: discovery runs on %s", LOOPBACK)
                addrs = [LOOPBACK]
            self.mdns_addresses = addrs
            # zeroconf takes a good part of a second-long find's start-up: only when needed
            from zwalk.net.discovery import Discovery

            self.discovery = Discovery(
                addresses=addrs,
                spawn=self.spawn,
                on_found=self._on_found,
                on_gone=self._on_gone,
                browse_only=not (self.listen and self.announce),
            )
            await self.discovery.start()
            if self.listen and self.announce:
                await self.discovery.announce(
                    node=self.identity.node_id,
                    name=self.name,
                    port=self.port,
                    public_key=self.identity.public,
                )
        self._apply(self.membership.add_static(self.cfg.peers, self._now()))
        tg.create_task(self._membership_loop())
        self._write_state()
        if self.shares:
            await self.rescan()
            self._write_state()
            tg.create_task(self._rescan_loop())

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
        self._scan_stop.set()
        for link in self.links.values():
            if self.listen and link.info is not None and not link.closed:
                with contextlib.suppress(PeerError):
                    link.send(p.Bye(req=0))
            link.close(linger_ms=BYE_LINGER_MS)
        self.links.clear()
        if self.discovery is not None:
            try:
                async with asyncio.timeout(2):
                    await self.discovery.close()
            except (TimeoutError, OSError) as e:
                log.warning("mDNS goodbye failed: %s", e)
        if self.state_dir is not None:
            control.remove_state(self.state_dir)
        if self._lock is not None:
            self._lock.release()
        for sock in (self._router, self._control):
            if sock is not None:
                sock.close(linger=0)
        # Waits up to BYE_LINGER_MS for the byes to go out, and never longer.
        await asyncio.to_thread(self.ctx.destroy, BYE_LINGER_MS)

    def _bind(self) -> None:
        router = self.ctx.socket(zmq.ROUTER)
        configure(router)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._router = router
        addrs = resolve(self.cfg.interfaces) if self.cfg.interfaces else ["0.0.0.0"]  # noqa: S104
        port = self.cfg.port
        for addr in addrs:
            try:
                if port == 0:
                    port = router.bind_to_random_port(f"tcp://{addr}")
                else:
                    router.bind(f"tcp://{addr}:{port}")
            except zmq.ZMQError as e:
                raise OSError(e.errno, _bind_failure(addr, port, e)) from None
            self.endpoints.append(Endpoint(addr, port))

    def _bind_control(self) -> None:
        assert self.state_dir is not None  # noqa: S101 -- checked by the caller
        sock = self.ctx.socket(zmq.ROUTER)
        configure(sock)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ipc = control.control_endpoint(self.state_dir)
        if ipc is not None:
            sock.bind(ipc)
            self._control_endpoint = ipc
        else:
            port = sock.bind_to_random_port(f"tcp://{LOOPBACK}")
            self._control_endpoint = f"tcp://{LOOPBACK}:{port}"
        self._control = sock

    def _write_state(self) -> None:
        if self.state_dir is None or not self.listen:
            return
        control.write_state(
            self.state_dir,
            {
                "pid": os.getpid(),
                "node": self.identity.node_id.hex(),
                "name": self.name,
                "endpoints": [str(e) for e in self.endpoints],
                "control": self._control_endpoint,
                "token": self._token.hex(),
                "files": len(self.index),
                "downloads": str(self.cfg.downloads.resolve()),
                "shares": [str(s.resolve()) for s in self.shares],
            },
        )

    # --- share index ------------------------------------------------------------------------
    async def rescan(self) -> Index:
        async with self._scan_lock:
            exclude = [self.cfg.downloads.resolve(), self.cfg.data_dir.resolve()]
            index = await asyncio.to_thread(
                scan,
                self.shares,
                chunk_size=self.cfg.chunk_size,
                cache_path=self.cfg.index_cache,
                exclude=exclude,
                stop=self._scan_stop,
            )
            for path, why in index.skipped:
                log.warning("not sharing %s: %s", path, why)
            if len(index) != len(self.index) or index.total_bytes != self.index.total_bytes:
                log.info("sharing %d files, %d bytes", len(index), index.total_bytes)
            self.index = index
            return index

    async def _rescan_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.rescan_interval)
            try:
                await self.rescan()
                self._write_state()
            except OSError as e:
                log.warning("rescan failed: %s", e)

    # --- membership -------------------------------------------------------------------------
    @staticmethod
    def _now() -> float:
        return time.monotonic()

    def _on_found(self, node: bytes, ep: Endpoint, detail: str, version: int) -> None:
        if node == self.identity.node_id and not self._is_own(ep):
            log.info("ignoring an announcement of our own node id at %s", ep)
            return
        if version != p.PROTOCOL_VERSION and node != self.identity.node_id:
            log.info("ignoring %s at %s: protocol version %d", node.hex()[:12], ep, version)
            return
        self._apply(self.membership.on_discovered(node, ep, Source.MDNS, detail, self._now()))

    def _is_own(self, ep: Endpoint) -> bool:
        hosts = {e.host for e in self.endpoints} | set(self.mdns_addresses)
        return ep.port == self.port and (ep.host in hosts or "0.0.0.0" in hosts)  # noqa: S104

    def reachable(self, ep: Endpoint) -> bool:
        """Whether we may connect to an endpoint a peer told us about. With interfaces chosen,
        only addresses on their subnets: a node kept to a test network stays there."""
        if not self.cfg.interfaces:
            return True
        if self._allowed_nets is None:
            addrs = resolve(self.cfg.interfaces)
            self._allowed_nets = [i.network for _, i in ipv4_networks() if str(i.ip) in addrs] or [
                ipaddress.IPv4Network(f"{a}/32") for a in addrs
            ]
        try:
            ip = ipaddress.IPv4Address(ep.host)
        except ValueError:
            return False
        return any(ip in net for net in self._allowed_nets)

    def _on_gone(self, node: bytes) -> None:
        self._apply(self.membership.on_mdns_removed(node, self._now()))

    def _apply(self, actions: list[Connect | Ping | Disconnect]) -> None:
        for action in actions:
            match action:
                case Connect(endpoint=ep):
                    try:
                        link = self._link(ep)
                    except zmq.ZMQError as e:  # out of sockets, or an address zmq refuses
                        log.warning("cannot open a link to %s: %s", ep, e)
                        self._apply(self.membership.on_unreachable(ep, str(e), self._now()))
                        continue
                    self.spawn(self._greet(link))
                case Ping(endpoint=ep):
                    if ep in self.links:
                        self.spawn(self._ping(self.links[ep]))
                case Disconnect(endpoint=ep, reason=why):
                    log.info("peer %s gone: %s", ep, why)
                    link = self.links.pop(ep, None)
                    if link is not None:
                        link.close()
                    task = self._link_tasks.pop(ep, None)
                    if task is not None:
                        task.cancel()
        if actions:
            self._membership_changed()
            self._wake.set()

    def _link(self, ep: Endpoint) -> PeerLink:
        link = self.links.get(ep)
        if link is None or link.closed:
            link = PeerLink(
                self.ctx,
                ep,
                node_id=self.identity.node_id,
                req_ids=lambda: next(self._req_ids),
                on_reply=lambda e: self.membership.on_reply(e, self._now()),
            )
            self.links[ep] = link
            task = self.spawn(link.receive_loop())
            if task is not None:
                self._link_tasks[ep] = task
        return link

    def hello_msg(self) -> p.Hello:
        return p.Hello(
            req=0,
            node=self.identity.node_id,
            name=self.name,
            port=self.port,
            inc=self.incarnation,
        )

    async def _greet(self, link: PeerLink) -> None:
        ep = link.endpoint
        try:
            reply = await link.hello(self.hello_msg(), self.cfg.reply_timeout)
        except (TimeoutError, PeerError) as e:
            if self.links.get(ep) is not link:
                return  # this link was replaced meanwhile: its fate is not the new member's
            why = str(e)
            if isinstance(e, TimeoutError):
                why = await diagnose(ep) or (
                    f"no answer to hello within {self.cfg.reply_timeout:g} s, though it "
                    "accepts connections (not a zwalk node, or an incompatible one?)"
                )
            if self.links.get(ep) is link:
                self._apply(self.membership.on_unreachable(ep, why, self._now()))
            return
        if self.links.get(ep) is not link:
            return
        now = self._now()
        actions = self.membership.on_hello(
            ep,
            node=reply.node,
            name=reply.name,
            incarnation=reply.inc,
            files=reply.files,
            version=p.PROTOCOL_VERSION,
            now=now,
        )
        for ref in reply.peers:
            gossiped = Endpoint(ref.host, ref.port)
            # A loopback address names a host only from that host itself.
            if ref.host.startswith("127.") != ep.host.startswith("127."):
                continue
            if not self.reachable(gossiped):
                continue
            actions += self.membership.on_discovered(
                ref.node, gossiped, Source.GOSSIP, f"via {reply.name}", now
            )
        self._apply(actions)
        self._membership_changed()

    async def _ping(self, link: PeerLink) -> None:
        try:
            reply = await link.request(p.Ping(req=0), self.cfg.ping_timeout)
        except (TimeoutError, PeerError):
            return  # the membership clock counts the miss
        if isinstance(reply, p.Pong):
            self.membership.on_pong(link.endpoint, self._now(), files=reply.files)

    async def _membership_loop(self) -> None:
        while True:
            now = self._now()
            self._apply(self.membership.tick(now))
            wait = min(0.5, max(0.02, self.membership.next_wakeup(now) - now))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    def _membership_changed(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def next_change(self, timeout: float) -> bool:
        """Wait until the membership table changes (True) or `timeout` seconds pass (False)."""
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, timeout)):
                await changed.wait()
        return changed.is_set()

    async def wait_until(self, ready: Callable[[], bool], timeout: float) -> bool:
        """Wait until `ready()` holds, checked at each membership change, for at most `timeout`
        seconds; returns whether it does."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not ready():
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return False
            await self.next_change(left)
        return True

    def alive(self, ep: Endpoint) -> bool:
        """Whether the peer at `ep` has answered our hello and still answers pings."""
        m = self.membership.by_endpoint.get(ep)
        return m is not None and m.state is State.ALIVE

    def answered(self, endpoints: Iterable[Endpoint]) -> bool:
        """Whether each of these peers answered our hello, or was dropped (it refused us, or
        turned out to be ourselves or another peer's second address): none is worth waiting
        for any longer."""
        table = self.membership.by_endpoint
        return all(self.alive(ep) or ep not in table for ep in endpoints)

    async def settle(self, wait: float, quiet: float = 0.3) -> None:
        """Let discovery and hellos run: up to `wait` seconds, less once every peer found has
        answered and nothing new turned up for `quiet` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        last_change = loop.time()
        while (now := loop.time()) < deadline:
            members = self.membership.by_endpoint.values()
            answered = bool(members) and all(m.state is State.ALIVE for m in members)
            if answered and now - last_change >= quiet:
                return
            until = min(deadline, last_change + quiet) if answered else deadline
            if await self.next_change(until - now):
                last_change = loop.time()

    async def meet(self, endpoints: Iterable[Endpoint], timeout: float) -> None:
        """Say hello to peers a local command named, and wait (at most `timeout`) until each
        has answered or failed; those that failed are in `membership.lost`, with the reason."""
        eps = list(dict.fromkeys(endpoints))
        if eps:
            self._apply(self.membership.add_named(eps, self._now()))
            await self.wait_until(lambda: self.answered(eps), timeout)

    def problems(self, within: float = 60.0) -> list[str]:
        """Peers lost or unreachable in the last `within` seconds, as lines for a user."""
        now = self._now()
        return [
            describe_lost(lost)
            for lost in reversed(self.membership.lost.values())
            if now - lost.at <= within
        ]

    def failures(self) -> list[p.Failure]:
        """Peers lost or unreachable, latest first (as the control endpoint reports them)."""
        mono = self._now()
        out = []
        for lost in reversed(self.membership.lost.values()):
            out.append(
                p.Failure(
                    host=lost.endpoint.host.encode()[: p.MAX_HOST_BYTES].decode(errors="ignore")
                    or "?",
                    port=lost.endpoint.port,
                    node=lost.node,
                    name=lost.name,
                    learned=tuple(p.Learned(how=str(k), detail=v) for k, v in lost.learned.items())[
                        :4
                    ],
                    reason=lost.reason[: p.MAX_REASON_CHARS],
                    ago_ms=max(0, int((mono - lost.at) * 1000)),
                )
            )
        return out[: p.MAX_FAILURES]

    async def hear_back(self) -> None:
        """Wait until every peer in the table has answered hello or failed (with the reason a
        user will want): at most the hello timeout and a diagnosis."""
        await self.wait_until(
            lambda: all(m.state is State.ALIVE for m in self.membership.by_endpoint.values()),
            hello_wait(self.cfg),
        )

    def neighbours(self) -> list[bytes]:
        """Node ids of the live peers: where a walk can go next."""
        return [m.node for m in self.membership.alive() if m.node is not None]

    def link_for(self, node: bytes, *, alive_only: bool = True) -> PeerLink | None:
        m = self.membership.by_node(node)
        if m is None or (alive_only and m.state is not State.ALIVE):
            return None
        link = self.links.get(m.endpoint)
        return link if link is not None and not link.closed else None

    def link_to(self, ref: p.PeerRef) -> PeerLink | None:
        """A link to a node named in a message (a searcher we had not met): meet it."""
        ep = Endpoint(ref.host, ref.port)
        if not self.reachable(ep):
            return None
        self._apply(self.membership.on_discovered(ref.node, ep, Source.INBOUND, "", self._now()))
        link = self.links.get(ep)
        return link if link is not None and not link.closed else None

    def reachable_at(self) -> list[Endpoint]:
        """Where peers can reach us: our listening endpoints, a wildcard one as each address
        we announce on (or every non-loopback address of this host)."""
        out: list[Endpoint] = []
        for e in self.endpoints:
            hosts = (
                [e.host]
                if _gossipable(e.host)
                else (self.mdns_addresses or default_addresses() or [LOOPBACK])
            )
            out += [Endpoint(h, e.port) for h in hosts if _gossipable(h)]
        return list(dict.fromkeys(out))

    def self_ref(self) -> p.PeerRef:
        """How peers reach this node: a concrete address of ours, and our port."""
        hosts = [e.host for e in self.reachable_at()]
        hosts += self.mdns_addresses or default_addresses() or [LOOPBACK]
        host = next(h for h in hosts if _gossipable(h))
        return p.PeerRef(node=self.identity.node_id, name=self.name, host=host, port=self.port or 1)

    def alive_links(self) -> list[PeerLink]:
        return [self.links[m.endpoint] for m in self.membership.alive() if m.endpoint in self.links]

    def gossip(self, exclude: bytes) -> tuple[p.PeerRef, ...]:
        refs = [
            p.PeerRef(node=m.node, name=m.name, host=m.endpoint.host, port=m.endpoint.port)
            for m in self.membership.alive()
            if m.node is not None and m.node != exclude and _gossipable(m.endpoint.host)
        ]
        random.shuffle(refs)
        return tuple(refs[: p.MAX_GOSSIP])

    # --- serving peers ----------------------------------------------------------------------
    async def _serve_router(self) -> None:
        router, tg = self._router, self._tg
        if router is None or tg is None:
            raise RuntimeError("node is not running")
        while True:
            frames = await router.recv_multipart(copy=False)
            try:
                await self._on_router_message(router, tg, frames)
            except Exception:  # one bad message, or a bug it finds, must not stop the node
                log.exception("error handling a message")

    async def _on_router_message(
        self, router: zmq.asyncio.Socket, tg: asyncio.TaskGroup, frames: list[zmq.Frame]
    ) -> None:
        if len(frames) < 2:
            return
        rid = frames[0].bytes
        sender = rid[: p.ID_BYTES]
        self.membership.on_traffic(sender, self._now())
        try:
            msg = p.decode([f.buffer for f in frames[1:]])
        except p.ProtocolError as e:
            log.info("rejected message from %s: %s", rid.hex()[:12], e.reason)
            if e.req is not None:
                await self._reply(router, rid, p.Error(req=e.req, code=e.code, reason=e.reason))
            return
        if isinstance(msg, p.NOTIFICATIONS):
            if isinstance(msg, p.Bye):
                self._apply(self.membership.on_bye(sender, self._now()))
            else:
                self.spawn(self.walks.on_notification(msg, sender))
            return
        if isinstance(msg, p.Hello):
            if msg.node != sender:
                await self._reply(
                    router,
                    rid,
                    p.Error(
                        req=msg.req,
                        code=p.ErrorCode.BAD_REQUEST,
                        reason="hello node id differs from the routing id",
                    ),
                )
                return
            peer_ep = Endpoint(frames[1].get("Peer-Address"), msg.port)
            if msg.port and self.reachable(peer_ep):
                self._apply(
                    self.membership.on_discovered(
                        msg.node, peer_ep, Source.INBOUND, "", self._now(), incarnation=msg.inc
                    )
                )
        if not isinstance(msg, p.REQUESTS):
            reason = (
                "not a request"
                if not isinstance(msg, p.CONTROL_REQUESTS)
                else ("control requests go to the control endpoint")
            )
            await self._reply(
                router, rid, p.Error(req=msg.req, code=p.ErrorCode.BAD_REQUEST, reason=reason)
            )
            return
        if isinstance(msg, p.Hello | p.Ping):  # membership must work however busy we are
            await self._reply(router, rid, await self.answer(msg, sender=sender))
            return
        if self._request_slots.locked():
            await self._reply(
                router,
                rid,
                p.Error(req=msg.req, code=p.ErrorCode.BUSY, reason="too many requests"),
            )
            return
        await self._request_slots.acquire()
        tg.create_task(self._handle(router, rid, msg))

    async def _handle(self, sock: zmq.asyncio.Socket, rid: bytes, msg: p.Message) -> None:
        try:
            reply = await self.answer(msg, sender=rid[: p.ID_BYTES])
        except Exception as e:  # a handler bug must not take the node down
            log.exception("error answering %s", msg.TYPE)
            reply = p.Error(req=msg.req, code=p.ErrorCode.INTERNAL, reason=type(e).__name__)
        finally:
            self._request_slots.release()
        pooled = isinstance(reply, p.Chunks) and isinstance(reply.payload, memoryview)
        tracker = None
        try:
            tracker = await self._reply(sock, rid, reply, track=pooled)
        finally:
            if pooled:
                self._buffers.give_back(reply.payload, tracker)  # type: ignore[union-attr,arg-type]

    @staticmethod
    async def _reply(
        sock: zmq.asyncio.Socket, rid: bytes, msg: p.Message, *, track: bool = False
    ) -> zmq.MessageTracker | None:
        """Send a reply; with `track`, returns when ZeroMQ is done with its buffers."""
        try:
            frames = p.encode(msg)
        except Exception:  # a reply we cannot encode is our bug; the requester will time out
            log.exception("cannot encode %s reply", msg.TYPE)
            return None
        try:
            sent = await sock.send_multipart(
                [rid, *frames], flags=zmq.NOBLOCK, copy=False, track=track
            )
        except zmq.ZMQError as e:  # queue full or peer gone: the requester will time out
            log.debug("dropped reply to %s: %s", rid.hex()[:12], e)
            return None
        return sent if isinstance(sent, zmq.MessageTracker) else None

    async def answer(self, msg: p.Message, sender: bytes = b"") -> p.Message:
        """The reply to one request from a peer (the node's whole server-side behaviour)."""
        match msg:
            case p.Hello():
                return p.HelloOk(
                    req=msg.req,
                    node=self.identity.node_id,
                    name=self.name,
                    files=len(self.index),
                    port=self.port,
                    inc=self.incarnation,
                    peers=self.gossip(exclude=sender),
                )
            case p.Ping():
                return p.Pong(req=msg.req, files=len(self.index))
            case p.Walk():
                if not self.walks.can_relay():
                    return p.Error(req=msg.req, code=p.ErrorCode.BUSY, reason="relaying enough")
                self.spawn(self.walks.relay_walk(msg, sender))
                return p.WalkOk(req=msg.req)
            case p.WalkCheck():
                return self.walks.on_check(msg, sender)
            case p.Search():
                query = Query(kind=msg.kind, pattern=msg.pattern, icase=msg.icase)
                found = self.index.search(query, limit=msg.limit)
                return p.Hits(req=msg.req, qid=msg.qid, hits=tuple(e.hit() for e in found))
            case p.GetInfo():
                entry = self.index.by_cid(msg.cid)
                if entry is None:
                    return _not_found(msg.req, msg.cid)
                return entry.info(msg.req)
            case p.GetChunks():
                return await self._chunks(msg)
        return p.Error(req=msg.req, code=p.ErrorCode.BAD_REQUEST, reason="unexpected message")

    async def _chunks(self, msg: p.GetChunks) -> p.Message:
        entry = self.index.by_cid(msg.cid)
        if entry is None:
            return _not_found(msg.req, msg.cid)
        n = p.chunk_count(entry.size, entry.chunk_size)
        if msg.index + msg.count > n:
            return p.Error(req=msg.req, code=p.ErrorCode.BAD_REQUEST, reason="chunk out of range")
        offset = msg.index * entry.chunk_size
        length = min(msg.count * entry.chunk_size, entry.size - offset)
        if length > p.MAX_PAYLOAD:
            return p.Error(req=msg.req, code=p.ErrorCode.TOO_LARGE, reason="ask for fewer chunks")
        async with self._read_slots:
            data = self._buffers.take(length)
            read = asyncio.ensure_future(
                asyncio.to_thread(read_span, entry.path, offset, data, entry.mtime_ns)
            )
            try:
                await asyncio.shield(read)
            except asyncio.CancelledError:  # the thread still fills the buffer: free it after
                read.add_done_callback(lambda _: self._buffers.give_back(data, None))
                raise
            except BaseException as e:
                self._buffers.give_back(data, None)
                if not isinstance(e, OSError):
                    raise
                log.warning("cannot read %s: %s", entry.path, e)
                if not self._rescan_pending:  # one rescan for a burst of failed reads
                    self._rescan_pending = True
                    self.spawn(self._rescan_quietly())
                if not isinstance(e, FileChanged | FileNotFoundError):
                    # perhaps passing (a busy disk): the downloader may ask again
                    return p.Error(
                        req=msg.req,
                        code=p.ErrorCode.INTERNAL,
                        reason=f"could not read {entry.name}: {e.strerror or 'read error'}",
                    )
                # Offered no more (this copy) until the rescan has looked at it again.
                self.index = self.index.without(entry.path)
                why = "changed" if isinstance(e, FileChanged) else "was removed"
                return p.Error(
                    req=msg.req,
                    code=p.ErrorCode.NOT_FOUND,
                    reason=f"{p.cid_to_text(msg.cid)} is no longer shared here: {entry.name} "
                    f"{why} since it was indexed (it is being indexed again)",
                )
        return p.Chunks(req=msg.req, cid=msg.cid, index=msg.index, count=msg.count, payload=data)

    async def _rescan_quietly(self) -> None:
        try:
            await self.rescan()
            self._write_state()
        except OSError as e:
            log.warning("rescan failed: %s", e)
        finally:
            self._rescan_pending = False

    # --- the local control endpoint ---------------------------------------------------------
    async def _serve_control(self) -> None:
        sock = self._control
        if sock is None:
            return
        while True:
            frames = await sock.recv_multipart(copy=False)
            if len(frames) < 2:
                continue
            rid = frames[0].bytes
            try:
                msg = p.decode([f.buffer for f in frames[1:]])
            except p.ProtocolError as e:
                if e.req is not None:
                    await self._reply(sock, rid, p.Error(req=e.req, code=e.code, reason=e.reason))
                continue
            if not isinstance(msg, p.CONTROL_REQUESTS) or not secrets.compare_digest(
                msg.token, self._token
            ):
                await self._reply(
                    sock,
                    rid,
                    p.Error(
                        req=msg.req,
                        code=p.ErrorCode.BAD_REQUEST,
                        reason="not a valid control request",
                    ),
                )
                continue
            if isinstance(msg, p.Find):
                self.spawn(self._control_find(sock, rid, msg))  # searches run side by side
            elif msg.peers:
                self.spawn(self._control_status(sock, rid, msg))  # after a hello to each
            else:
                await self._control_status(sock, rid, msg)

    async def _control_status(self, sock: zmq.asyncio.Socket, rid: bytes, msg: p.Status) -> None:
        await self.meet(_named(msg.peers), hello_wait(self.cfg))
        try:
            reply: p.Message = self.status(msg.req)
        except Exception as e:  # a table we cannot describe must not stop the node
            log.exception("cannot build status")
            reply = p.Error(req=msg.req, code=p.ErrorCode.INTERNAL, reason=type(e).__name__)
        await self._reply(sock, rid, reply)

    async def _control_find(self, sock: zmq.asyncio.Socket, rid: bytes, msg: p.Find) -> None:
        from zwalk.net.finder import SearchOptions, run_find  # finder builds on this module

        opts = SearchOptions(
            strategy=msg.strategy,
            timeout=msg.timeout_ms / 1000,
            want=msg.want,
            walkers=msg.walkers,
            initial=msg.initial,
            ttl=msg.ttl,
            check_every=msg.check_every,
            linger=msg.linger_ms / 1000 if msg.linger_ms else None,
        )
        query = Query(kind=msg.kind, pattern=msg.pattern, icase=msg.icase)
        try:
            await self.meet(_named(msg.peers), hello_wait(self.cfg))
            result = await run_find(self, query, opts)
            result.errors = self.problems()
            reply: p.Message = result.to_wire(msg.req)
        except Exception as e:  # a failed search must not stop the node
            log.exception("search failed")
            reply = p.Error(req=msg.req, code=p.ErrorCode.INTERNAL, reason=type(e).__name__)
        await self._reply(sock, rid, reply)

    def status(self, req: int = 0) -> p.StatusOk:
        mono, wall = self._now(), time.time()

        def ms(t: float) -> int:
            return max(0, int((wall - (mono - t)) * 1000))

        return p.StatusOk(
            req=req,
            node=self.identity.node_id,
            name=self.name,
            endpoints=tuple(
                p.PeerRef(node=self.identity.node_id, name=self.name, host=e.host, port=e.port)
                for e in self.reachable_at()
            )[:16],
            files=len(self.index),
            bytes=self.index.total_bytes,
            members=tuple(_member_info(m, ms) for m in self.membership.by_endpoint.values())[
                : p.MAX_MEMBERS
            ],
            sent=self.walks.sent,
            failed=tuple(self.failures()),
        )


def describe_lost(lost: Lost) -> str:
    """'h1 (0fdcb51f506b) at 10.0.0.5:47474, seen on mDNS: connection refused: ...'."""
    who = f"{lost.name} ({lost.node.hex()[:12]}) at " if lost.node else ""
    how = {
        Source.MDNS: "seen on mDNS",
        Source.STATIC: "a configured peer",
        Source.GOSSIP: "named by another peer",
        Source.INBOUND: "it had said hello to us",
        Source.NAMED: "named with --peer",
    }
    learned = ", ".join(how[s] for s in lost.learned if s in how)
    return f"{who}{lost.endpoint}{', ' + learned if learned else ''}: {lost.reason}"


def _named(peers: Iterable[p.Address]) -> list[Endpoint]:
    return [Endpoint(a.host, a.port) for a in peers]


def _member_info(m: Member, ms: Any) -> p.MemberInfo:
    return p.MemberInfo(
        node=m.node,
        name=m.name,
        host=m.endpoint.host.encode()[: p.MAX_HOST_BYTES].decode(errors="ignore") or "?",
        port=m.endpoint.port,
        version=m.version,
        state=str(m.state),
        learned=tuple(p.Learned(how=str(k), detail=v) for k, v in m.learned.items())[:4],
        first_seen_ms=ms(m.first_seen),
        last_seen_ms=ms(m.last_seen or m.first_seen),
        rtt_us=None if m.rtt is None else min(p.MAX_COUNT, int(m.rtt * 1e6)),
        files=m.files,
    )


async def diagnose(ep: Endpoint, timeout: float = DIAGNOSE_TIMEOUT) -> str | None:
    """Why a peer may not have answered: what a plain TCP connection to it says. None when it
    accepts connections (then the peer itself did not answer). Sends nothing."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(ep.host, ep.port)
    except ConnectionRefusedError:
        return f"connection refused: nothing listens on {ep.host} port {ep.port}"
    except TimeoutError:
        return f"no answer from {ep.host} (it is down, or a firewall drops TCP port {ep.port})"
    except socket.gaierror:
        return f"cannot resolve the host name {ep.host!r}"
    except OSError as e:
        return f"cannot connect to {ep}: {e.strerror or e}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


def _bind_failure(addr: str, port: int, e: zmq.ZMQError) -> str:
    where = f"cannot listen on {addr}:{port}"
    if e.errno == zmq.EADDRINUSE:
        return f"{where}: the port is taken (another zwalk serve? --port 0 picks a free one)"
    if e.errno == errno.EACCES:
        return f"{where}: permission denied (ports below 1024 need privileges; use --port 0)"
    if e.errno == errno.EADDRNOTAVAIL:
        return f"{where}: {addr} is not an address of this host"
    return f"{where}: {e.strerror}"


def _gossipable(host: str) -> bool:
    """Only addresses a peer can use as they are (never names, never wildcards)."""
    try:
        p.ipv4(host)
    except p.ProtocolError:
        return False
    return True


def _not_found(req: int, cid: bytes) -> p.Error:
    return p.Error(
        req=req, code=p.ErrorCode.NOT_FOUND, reason=f"{p.cid_to_text(cid)} not shared here"
    )


class FileChanged(OSError):
    """A shared file is not what the index says any more."""


def read_span(path: Path, offset: int, into: memoryview, mtime_ns: int) -> None:
    """Fill `into` from a shared file at `offset`, refusing if the file changed since it was
    indexed or is now shorter."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        if os.fstat(fd).st_mtime_ns != mtime_ns:
            raise FileChanged(f"{path} changed since it was indexed")
        if not hasattr(os, "preadv"):  # Windows
            os.lseek(fd, offset, os.SEEK_SET)
        view = into
        while view:
            if hasattr(os, "preadv"):
                n = os.preadv(fd, [view], offset)
            else:
                got = os.read(fd, len(view))
                n = len(got)
                view[:n] = got
            if n <= 0:
                raise FileChanged(f"{path} is shorter than indexed")
            view, offset = view[n:], offset + n
    finally:
        os.close(fd)


async def _guarded(coro: Coroutine[Any, Any, None]) -> None:
    try:
        await coro
    except Exception:
        log.exception("a node task failed")
