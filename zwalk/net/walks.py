# The I/O around the walk policy (core/walk.py, core/searches.py): relaying query copies that
# reach this node, and running searches that start here. Decisions stay in the sans-IO
# RelayStep and *Search objects; this module only sends what they return and reports back.
from __future__ import annotations

import asyncio
import enum
import logging
import os
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from zwalk.core import protocol as p
from zwalk.core.fields import EndReason, Strategy
from zwalk.core.query import Query
from zwalk.core.search_options import SearchOptions
from zwalk.core.searches import FloodSearch, KWalkSearch
from zwalk.core.walk import CheckBack, Ended, Forward, Relay, RelayStep, Walk
from zwalk.net.diagnosis import hello_wait
from zwalk.net.links import PeerError, PeerLink
from zwalk.net.local import Local
from zwalk.net.peers import PeerTable
from zwalk.net.shares import Shares

log = logging.getLogger(__name__)
access = logging.getLogger("zwalk.access")  # who searched for what (serve -v)

HANDOVER_TIMEOUT = 1.0  # seconds for the next hop to acknowledge a walk before another is tried
FLOOD_QUIET = 1.0  # seconds without a report after which a flood search is over
MAX_RELAYS = 256  # query copies relayed at once; beyond, a hand-over is refused as busy

AnySearch = KWalkSearch[bytes] | FloodSearch[bytes]


class Handover(enum.Enum):
    TAKEN = "walk-ok"
    BUSY = "busy"  # it relays, or serves, all it may: worth asking again shortly
    FAILED = "failed"  # gone, silent, or another error


def to_policy(msg: p.Walk | p.WalkHits | p.WalkCheck | p.WalkEnd) -> Walk[bytes]:
    if isinstance(msg, p.Walk):
        return Walk(
            msg.qid,
            msg.strategy,
            msg.walker,
            msg.ttl,
            msg.hops,
            msg.path,
            msg.check_every,
            msg.stop_on_hit,
            msg.backtrack,
        )
    return Walk(msg.qid, Strategy.KWALK, msg.walker, 0, msg.hops, msg.path)


def to_wire(walk: Walk[bytes], origin: p.PeerRef, query: Query) -> p.Walk:
    return p.Walk(
        req=0,
        qid=walk.qid,
        walker=walk.walker,
        hops=walk.hops,
        path=walk.path[:1] + walk.path[1:][-(p.MAX_PATH - 1) :],  # keep the latest
        strategy=walk.strategy,
        ttl=walk.ttl,
        check_every=walk.check_every,
        origin=origin,
        kind=query.kind,
        pattern=query.pattern,
        icase=query.icase,
        stop_on_hit=walk.stop_on_hit,
        backtrack=walk.backtrack,
    )


@dataclass
class Running:
    search: AnySearch
    query: Query
    origin: p.PeerRef
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class WalkService:
    """Walk relaying and walk searches for one node."""

    def __init__(
        self,
        local: Local,
        peers: PeerTable,
        shares: Shares,
        spawn: Callable[[Coroutine[Any, Any, None]], object],
        reply_timeout: float,
    ) -> None:
        self.local = local
        self.peers = peers
        self.shares = shares
        self.spawn = spawn
        self.reply_timeout = reply_timeout
        self.relay: Relay[bytes] = Relay(local.node_id)
        self.rng = random.Random()  # noqa: S311 -- walk choices, not security
        self.running: dict[bytes, Running] = {}
        self.sent = 0  # query copies and check-backs this node sent (for benchmarks)
        self.relaying = 0  # query copies being relayed now

    # --- relaying -------------------------------------------------------------------------------
    def can_relay(self) -> bool:
        return self.relaying < MAX_RELAYS

    async def relay_walk(self, msg: p.Walk, sender: bytes) -> None:
        """A query copy reached us (already acknowledged): check the index, then pass it on."""
        self.relaying += 1
        try:
            await self._relay_walk(msg, sender)
        finally:
            self.relaying -= 1

    async def _relay_walk(self, msg: p.Walk, sender: bytes) -> None:
        step = RelayStep(self.relay, to_policy(msg), self.rng, sender=sender)
        query = Query(kind=msg.kind, pattern=msg.pattern, icase=msg.icase)
        found = await self.shares.search(query, p.MAX_HITS) if step.first else []
        if step.first:
            access.info(
                "walk %s from %s for %r: %d hits here (hop %d)",
                walk_id(msg.qid),
                msg.origin.name or msg.origin.node.hex()[:12],
                msg.pattern,
                len(found),
                msg.hops,
            )
        if found:
            # Reported before the walk goes on (as a walk that comes back to its searcher can
            # end the search), and only once the searcher has answered our hello.
            await self._report(
                msg.origin,
                p.WalkHits(
                    req=0,
                    qid=msg.qid,
                    walker=msg.walker,
                    hops=msg.hops,
                    path=msg.path,
                    hits=tuple(e.hit() for e in found),
                ),
            )
        actions = step.start(self.peers.neighbours(), found_here=bool(found))
        if msg.strategy is Strategy.FLOOD:
            forwards = [a for a in actions if isinstance(a, Forward)]
            await asyncio.gather(
                *(self._hand_over(a.to, to_wire(a.walk, msg.origin, query)) for a in forwards)
            )
            return
        while actions:
            match actions[0]:
                case Ended(walk=walk, reason=reason):
                    self._end(msg, walk, reason)
                    return
                case CheckBack(walk=walk):
                    actions = step.on_check(*await self._check(msg, walk))
                case Forward(to=to, walk=walk):
                    outcome = await self._offer(to, to_wire(walk, msg.origin, query))
                    if outcome is Handover.TAKEN:
                        return
                    actions = step.on_refused(to, busy=outcome is Handover.BUSY)
                    if step.rest and isinstance(actions[0], Forward):
                        await asyncio.sleep(step.rest)  # busy passes: give it a moment

    async def _hand_over(self, to: bytes, msg: p.Walk) -> bool:
        return await self._offer(to, msg) is Handover.TAKEN

    async def _offer(self, to: bytes, msg: p.Walk) -> Handover:
        link = self.peers.link_for(to)
        if link is None:
            return Handover.FAILED
        self.sent += 1
        try:
            reply = await link.request(msg, HANDOVER_TIMEOUT)
        except (TimeoutError, PeerError) as e:
            log.info("walk hand-over to %s failed: %s", to.hex()[:12], e or "timeout")
            busy = isinstance(e, PeerError) and e.code is p.ErrorCode.BUSY
            return Handover.BUSY if busy else Handover.FAILED
        return Handover.TAKEN if isinstance(reply, p.WalkOk) else Handover.FAILED

    async def _check(self, msg: p.Walk, walk: Walk[bytes]) -> tuple[bool, tuple[bytes, ...]]:
        link = await self._searcher(msg.origin)
        if link is None:
            return False, ()
        self.sent += 1
        try:
            reply = await link.request(
                p.WalkCheck(req=0, qid=msg.qid, walker=msg.walker, hops=walk.hops, path=walk.path),
                self.reply_timeout,
            )
        except (TimeoutError, PeerError):
            return False, ()  # the searcher is gone or busy: no point walking on
        if not isinstance(reply, p.WalkGo):
            return False, ()
        return reply.go, reply.avoid

    def _end(self, msg: p.Walk, walk: Walk[bytes], reason: EndReason) -> None:
        self.spawn(
            self._report(
                msg.origin,
                p.WalkEnd(
                    req=0,
                    qid=msg.qid,
                    walker=msg.walker,
                    hops=walk.hops,
                    path=walk.path,
                    reason=reason,
                ),
            )
        )

    async def _searcher(self, origin: p.PeerRef) -> PeerLink | None:
        """The link to a walk's searcher once it has answered our hello, or None. Reports and
        check-backs go only to a searcher that proved it is a zwalk node at the address the
        walk names: an origin naming a third party gets a hello attempt, nothing more (and
        none again for a while if it does not answer, PeerTable.link_to)."""
        if (link := self.peers.link_for(origin.node)) is not None:
            return link
        greeting = self.peers.link_for(origin.node, alive_only=False)
        if greeting is None and self.peers.link_to(origin) is None:
            return None
        table = self.peers.membership
        await self.peers.wait_until(
            lambda: (
                table.by_node(origin.node) is None or self.peers.link_for(origin.node) is not None
            ),
            hello_wait(self.peers.cfg),
        )
        return self.peers.link_for(origin.node)

    async def _report(self, origin: p.PeerRef, msg: p.Message) -> None:
        if origin.node == self.local.node_id:
            await self.on_notification(msg, origin.node)
            return
        link = await self._searcher(origin)
        if link is None:
            log.info("no report to %s: it has not answered hello", origin.host)
            return
        try:
            link.send(msg)
        except PeerError as e:
            log.info("cannot report to the searcher: %s", e)

    # --- the searcher's side --------------------------------------------------------------------
    async def on_notification(self, msg: p.Message, sender: bytes) -> None:
        run = self.running.get(getattr(msg, "qid", b""))
        if run is None:
            return
        now = time.monotonic()
        s = run.search
        if isinstance(msg, p.WalkHits):
            log.info(
                "walk %s: %d hits from %s after %d hops",
                walk_id(msg.qid),
                len(msg.hits),
                sender.hex()[:12],
                msg.hops,
            )
            s.on_hits(to_policy(msg), sender, msg.hits, now, latency=now - s.started)
        elif isinstance(msg, p.WalkEnd) and isinstance(s, KWalkSearch):
            more = s.on_end(to_policy(msg), sender, msg.reason, now)
            self._launch(run, more)
        run.changed.set()

    def on_check(self, msg: p.WalkCheck, sender: bytes) -> p.WalkGo:
        run = self.running.get(msg.qid)
        if run is None or not isinstance(run.search, KWalkSearch):
            return p.WalkGo(req=msg.req, go=False)
        walk = to_policy(msg)
        go, more = run.search.on_check(walk, sender, time.monotonic())
        self._launch(run, more)
        run.changed.set()
        avoid = run.search.avoid_for(walk)[: p.MAX_PATH] if go else ()
        return p.WalkGo(req=msg.req, go=go, avoid=avoid)

    def _launch(self, run: Running, forwards: list[Forward[bytes]]) -> None:
        for f in forwards:
            self.spawn(self._first_hop(run, f))

    async def _first_hop(self, run: Running, f: Forward[bytes]) -> None:
        msg = to_wire(f.walk, run.origin, run.query)
        outcome = await self._offer(f.to, msg)
        if outcome is Handover.TAKEN or not isinstance(run.search, KWalkSearch):
            return
        now = time.monotonic()
        if outcome is Handover.BUSY:  # sent again later (the search loop asks when)
            self._launch(run, run.search.on_busy(f.walk, f.to, now))
        else:
            self._launch(run, run.search.on_lost(f.walk.walker, f.to, now))
        run.changed.set()

    async def search(
        self,
        query: Query,
        opts: SearchOptions,
    ) -> AnySearch:
        if not self.local.listen:
            raise RuntimeError("a walk or flood search needs a node that listens for hits")
        me = self.local.node_id
        neighbours = self.peers.neighbours()
        now = time.monotonic()
        qid = os.urandom(p.ID_BYTES)
        s: AnySearch
        if opts.strategy is Strategy.FLOOD:
            s = FloodSearch(
                me,
                neighbours,
                qid=qid,
                now=now,
                deadline=now + opts.timeout,
                want=opts.want,
                ttl=opts.ttl,
            )
        else:
            s = KWalkSearch(
                me,
                neighbours,
                qid=qid,
                rng=self.rng,
                now=now,
                deadline=now + opts.timeout,
                want=opts.want,
                walkers=opts.walkers,
                initial=opts.initial,
                ttl=opts.ttl,
                check_every=opts.check_every,
                widen_hops=opts.widen_hops,
                stop_on_hit=opts.want == 1,
            )
        s.linger = opts.linger
        log.info(
            "walk %s: %s %s %r among %d peers",
            walk_id(qid),
            opts.strategy,
            query.kind,
            query.pattern,
            len(neighbours),
        )
        run = Running(s, query, self.local.self_ref())
        self.running[qid] = run
        # Copies of our own query that come back (floods do) are duplicates here.
        self.relay.arrive(Walk(qid, opts.strategy, 0, 0, 0, (me,)))
        try:
            self._launch(run, s.start(now))
            last = time.monotonic()
            while not s.done(time.monotonic()):
                run.changed.clear()
                wake = s.deadline
                if isinstance(s, KWalkSearch):
                    self._launch(run, s.due(time.monotonic()))
                    wake = min(wake, s.next_due() or wake)
                wait = max(0.001, min(0.25, wake - time.monotonic()))
                try:
                    async with asyncio.timeout(wait):
                        await run.changed.wait()
                    last = time.monotonic()
                except TimeoutError:
                    # A flood sends no end notices: once nothing has come for a while, it is over.
                    if isinstance(s, FloodSearch) and time.monotonic() - last >= FLOOD_QUIET:
                        s.done(time.monotonic(), quiet=True)
        finally:
            self.running.pop(qid, None)
        return s


def walk_id(qid: bytes) -> str:
    """How logs name a search on every node it visits: the first hex digits of its query id."""
    return "q:" + qid.hex()[:12]
