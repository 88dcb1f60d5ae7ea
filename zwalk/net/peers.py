# The peer table: the sans-IO membership core and one link per peer endpoint, kept in step.
# Membership decides (connect, ping, drop); this shell carries it out over the links, greets
# each new peer, pings the quiet ones, and lets commands wait for the table to change.
#
# Each link needs the key its peer must prove. mDNS, gossip and walk origins carry it (and a
# row whose id is not its key's hash is ignored), a user gives it (KEY@HOST:PORT), or, for a
# plain HOST:PORT, it is learned on first use and pinned (net/keyservice.py, store/trust.py).
# In allowlist mode a key not on the list is never met, nor told to anyone.
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import random
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

import zmq
import zmq.asyncio

from zwalk.core import protocol as p
from zwalk.core.addresses import Endpoint, gossipable, within
from zwalk.core.keys import matches
from zwalk.core.membership import Action, Connect, Disconnect, Membership, Ping, Source, State
from zwalk.net.diagnosis import diagnose, hello_wait, listens
from zwalk.net.gate import Gate
from zwalk.net.links import PeerError, PeerLink
from zwalk.net.local import Local
from zwalk.net.netif import ipv4_networks, resolve
from zwalk.net.pinning import Unknown, key_for
from zwalk.net.tablewaits import TableWaits
from zwalk.store import trust
from zwalk.store.config import Config

log = logging.getLogger(__name__)

BYE_LINGER_MS = 200  # how long a closing link may take to deliver our bye
MAX_UNVERIFIED_PER_HOST = 2  # endpoints of one host met from walk origins, not yet answering
CLOSED_PROBES = (0.0, 0.1, 0.4)  # pauses (s) before each test connection to a closed link's peer

Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None] | None"]


class PeerTable(TableWaits):
    def __init__(
        self, ctx: zmq.asyncio.Context, cfg: Config, local: Local, spawn: Spawn, gate: Gate
    ) -> None:
        super().__init__()
        self.ctx = ctx
        self.cfg = cfg
        self.local = local
        self.spawn = spawn
        self.gate = gate
        self.given_keys: dict[Endpoint, bytes] = cfg.keys  # KEY@HOST:PORT from the user
        self._first_use: dict[Endpoint, bytes] = {}  # learned, to pin once the hello proves it
        self.links: dict[Endpoint, PeerLink] = {}
        self.membership = Membership(
            local.node_id,
            ping_after=cfg.ping_interval,
            ping_timeout=cfg.ping_timeout,
            max_missed=cfg.max_missed_pings,
            # the shell gives up on a hello first, and finds out why (diagnose)
            hello_timeout=hello_wait(cfg),
        )
        self._req_ids = itertools.count(1)
        self._link_tasks: dict[Endpoint, asyncio.Task[None]] = {}
        self._probing: set[Endpoint] = set()  # links whose connection closed, being looked at
        self._allowed_nets: list[ipaddress.IPv4Network] | None = None
        self._wake = asyncio.Event()

    @staticmethod
    def now() -> float:
        return time.monotonic()

    # --- what we learn ----------------------------------------------------------------------
    def on_found(self, node: bytes, ep: Endpoint, detail: str, version: int, key: bytes) -> None:
        """An mDNS record."""
        if node == self.local.node_id and not self.local.is_own(ep):
            log.info("ignoring an announcement of our own node id at %s", ep)
            return
        if node != self.local.node_id:
            if version != p.PROTOCOL_VERSION:
                why = f"it speaks protocol version {version}, this node {p.PROTOCOL_VERSION}" + (
                    " (unencrypted, no longer accepted: upgrade zwalk there)" if version < 2 else ""
                )
                if ep not in self.membership.lost:
                    log.warning("ignoring %s at %s: %s", node.hex()[:12], ep, why)
                self.membership.refuse(ep, node, Source.MDNS, why, self.now())
                return
            if not matches(node, key):
                log.warning("ignoring an mDNS record at %s: its id is not its key's", ep)
                return
            if not self.gate.admits(key):
                log.info("ignoring %s at %s: %s", node.hex()[:12], ep, self.gate.why_not(key))
                return
        self.apply(self.membership.on_announced(node, ep, detail, version, self.now(), key))

    def on_gone(self, node: bytes) -> None:
        """An mDNS goodbye."""
        self.apply(self.membership.on_mdns_removed(node, self.now()))

    def on_hello(self, msg: p.Hello, host: str, key: bytes) -> None:
        """A peer that proved `key` said hello to us from `host`: if it listens, we may talk
        back, expecting the same key there."""
        ep = Endpoint(host, msg.port)
        if msg.port and self.reachable(ep):
            self.apply(
                self.membership.on_discovered(
                    msg.node, ep, Source.INBOUND, "", self.now(), incarnation=msg.inc, key=key
                )
            )

    def on_bye(self, node: bytes) -> None:
        self.apply(self.membership.on_bye(node, self.now()))

    def on_traffic(self, node: bytes) -> None:
        """A message from a peer that proved its key (a lost one is met again at once)."""
        self.apply(self.membership.on_traffic(node, self.now()))

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
        return within(ep.host, self._allowed_nets)

    # --- carrying out membership's decisions ------------------------------------------------
    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case Connect(endpoint=ep, key=key):
                    key = key or self.given_keys.get(ep)
                    if key is None:
                        self.spawn(self._first_meeting(ep))
                    else:
                        self._open(ep, key)
                case Ping(endpoint=ep):
                    if ep in self.links:
                        self.spawn(self._ping(self.links[ep]))
                case Disconnect(endpoint=ep, reason=why):
                    log.info("peer %s gone: %s", ep, why)
                    gone = self.links.pop(ep, None)
                    if gone is not None:
                        gone.close()
                    task = self._link_tasks.pop(ep, None)
                    if task is not None:
                        task.cancel()
        if actions:
            self._changed_now()
            self._wake.set()

    def _open(self, ep: Endpoint, key: bytes) -> None:
        """Link to `ep`, expecting it to prove `key`, and say hello."""
        if not self.gate.admits(key):
            self.apply(self.membership.on_unreachable(ep, self.gate.why_not(key), self.now()))
            return
        self.membership.set_key(ep, key)
        try:
            link = self._link(ep, key)
        except zmq.ZMQError as e:  # out of sockets, or an address zmq refuses
            log.warning("cannot open a link to %s: %s", ep, e)
            self.apply(self.membership.on_unreachable(ep, str(e), self.now()))
            return
        self.spawn(self._greet(link))

    async def _first_meeting(self, ep: Endpoint) -> None:
        """A peer named without its key: the key pinned for it, or learned now."""
        try:
            key, first = await key_for(ep, self.cfg.pins, self.cfg.reply_timeout)
        except Unknown as e:
            if ep in self.membership.by_endpoint:
                # Nothing there at all says more than "no key": what TCP says, if it says no.
                why = (await diagnose(ep) if not e.pinned else None) or str(e)
                self.apply(self.membership.on_unreachable(ep, why, self.now()))
            return
        if ep not in self.membership.by_endpoint:
            return  # dropped meanwhile
        if first:
            self._first_use[ep] = key
        self._open(ep, key)

    def _link(self, ep: Endpoint, key: bytes) -> PeerLink:
        link = self.links.get(ep)
        if link is None or link.closed:
            link = PeerLink(
                self.ctx,
                ep,
                identity=self.local.identity,
                server_key=key,
                req_ids=lambda: next(self._req_ids),
                on_reply=lambda e: self.membership.on_reply(e, self.now()),
                on_closed=self._closed,
            )
            self.links[ep] = link
            task = self.spawn(link.receive_loop())
            if task is not None:
                self._link_tasks[ep] = task
        return link

    def _closed(self, ep: Endpoint) -> None:
        """The connection of a live peer's link closed: find out whether anything still
        listens there (a peer that died does not), and let membership decide."""
        if self.alive(ep) and ep not in self._probing:
            self._probing.add(ep)
            self.spawn(self._probe_closed(ep))

    async def _probe_closed(self, ep: Endpoint) -> None:
        listening: bool | None = None
        try:
            # A killed process's connections may close a moment before its listening socket
            # does: a first test connection can still be accepted. Look again, briefly.
            for pause in CLOSED_PROBES:
                await asyncio.sleep(pause)
                if (listening := await listens(ep)) is not True:
                    break
        finally:
            self._probing.discard(ep)
        self.apply(self.membership.on_connection_lost(ep, listening, self.now()))

    async def _greet(self, link: PeerLink) -> None:
        ep = link.endpoint
        try:
            reply = await link.hello(self.local.hello(), self.cfg.reply_timeout)
        except (TimeoutError, PeerError) as e:
            if self.links.get(ep) is not link:
                return  # this link was replaced meanwhile: its fate is not the new member's
            why, retry = str(e), False
            if isinstance(e, TimeoutError):
                diagnosis = await diagnose(ep)
                retry = diagnosis is not None  # refused or no answer: it may come back
                why = diagnosis or (
                    f"no answer to hello within {self.cfg.reply_timeout:g} s, though it "
                    "accepts connections (not a zwalk node, one of another version, one "
                    "with another key than the one we expect, or a stopped one?)"
                )
            if self.links.get(ep) is link:
                self.apply(self.membership.on_unreachable(ep, why, self.now(), retry=retry))
            return
        if self.links.get(ep) is not link:
            return
        now = self.now()
        actions = self.membership.on_hello(
            ep,
            node=reply.node,
            name=reply.name,
            incarnation=reply.inc,
            files=reply.files,
            version=p.PROTOCOL_VERSION,
            now=now,
        )
        told = [(ref.node, Endpoint(ref.host, ref.port), ref.key) for ref in reply.peers]
        actions += self.membership.on_gossip(ep, reply.name, told, self._may_meet, now)
        self.apply(actions)
        self._changed_now()
        first = self._first_use.pop(ep, None)
        if first is not None and self.alive(ep):  # the hello proved the key: pin it
            try:
                await asyncio.to_thread(trust.pin, self.cfg.pins, ep, first)
            except OSError as e:
                log.warning("cannot pin the key of %s in %s: %s", ep, self.cfg.pins, e)
            else:
                log.info("pinned the key of %s (first use) in %s", ep, self.cfg.pins)

    def _may_meet(self, ep: Endpoint, key: bytes) -> bool:
        return self.reachable(ep) and self.gate.admits(key)

    async def _ping(self, link: PeerLink) -> None:
        try:
            ping = p.Ping(req=0, files=self.local.files)
            reply = await link.request(ping, self.cfg.ping_timeout)
        except (TimeoutError, PeerError):
            return  # the membership clock counts the miss
        if isinstance(reply, p.Pong):
            self.membership.on_pong(link.endpoint, self.now(), files=reply.files)

    async def keep_alive(self) -> None:
        """Run the membership clock (pings, drops) until cancelled."""
        while True:
            now = self.now()
            self.apply(self.membership.tick(now))
            wait = min(0.5, max(0.02, self.membership.next_wakeup(now) - now))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    def close(self) -> None:
        """Say bye to every peer that knows us, and close the links."""
        for link in self.links.values():
            if self.local.listen and link.info is not None and not link.closed:
                with contextlib.suppress(PeerError):
                    link.send(p.Bye(req=0))
            link.close(linger_ms=BYE_LINGER_MS)
        self.links.clear()

    # --- meeting named peers ---------------------------------------------------------------
    async def meet(
        self,
        endpoints: Iterable[Endpoint],
        keys: Mapping[Endpoint, bytes] | None = None,
        *,
        timeout: float,
    ) -> None:
        """Say hello to peers a local command named (with the keys it gave, if any), and wait
        (at most `timeout`) until each has answered or failed; those that failed are in
        `membership.lost`, with the reason."""
        eps = list(dict.fromkeys(endpoints))
        self.given_keys.update(keys or {})
        if eps:
            self.apply(self.membership.add_named(eps, self.now()))
            await self.wait_until(lambda: self.answered(eps), timeout)

    # --- who is there -----------------------------------------------------------------------
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
        """A link to a node named in a message (a searcher we had not met): meet it. Not an
        endpoint that failed us a moment ago, nor one more on a host where MAX_UNVERIFIED_PER_HOST
        endpoints are still to answer hello: a walk's origin must not turn relays into a
        connection storm toward a third party."""
        ep = Endpoint(ref.host, ref.port)
        now = self.now()
        if not self.reachable(ep) or self.membership.failed_recently(ep, now):
            return None
        if ep not in self.membership.by_endpoint:
            waiting = [
                m
                for m in self.membership.by_endpoint.values()
                if m.endpoint.host == ep.host and m.state is not State.ALIVE
            ]
            if len(waiting) >= MAX_UNVERIFIED_PER_HOST:
                return None
        if not self.gate.admits(ref.key):
            return None
        self.apply(
            self.membership.on_discovered(ref.node, ep, Source.INBOUND, "", now, key=ref.key)
        )
        link = self.links.get(ep)
        return link if link is not None and not link.closed else None

    def tell_files(self) -> None:
        """Our share index changed: ping every live peer, so each learns our file count now
        rather than at its next refresh."""
        for link in self.alive_links():
            self.spawn(self._ping(link))

    def alive_links(self) -> list[PeerLink]:
        return [self.links[m.endpoint] for m in self.membership.alive() if m.endpoint in self.links]

    def gossip(self, exclude: bytes) -> tuple[p.PeerRef, ...]:
        refs = [
            p.PeerRef(
                node=m.node, name=m.name, host=m.endpoint.host, port=m.endpoint.port, key=m.pubkey
            )
            for m in self.membership.alive()
            if m.node is not None
            and m.pubkey is not None
            and m.node != exclude
            and gossipable(m.endpoint.host)
        ]
        random.shuffle(refs)
        return tuple(refs[: p.MAX_GOSSIP])
