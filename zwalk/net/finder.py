# One search, whichever strategy, as plain data: run by the local node for a control request,
# or by a temporary node in the `find` command itself.
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from zwalk.core import protocol as p
from zwalk.core.fields import Strategy
from zwalk.core.outcome import ProbeSearch
from zwalk.core.query import Query
from zwalk.core.search_options import SearchOptions
from zwalk.core.searches import FloodSearch, KWalkSearch
from zwalk.net.links import PeerLink
from zwalk.net.peers import PeerTable
from zwalk.net.probe import probe
from zwalk.net.shares import Shares
from zwalk.net.walks import WalkService


@dataclass(slots=True)
class FindResult:
    strategy: Strategy
    found: list[p.FoundFile] = field(default_factory=list)
    messages: int = 0
    hops: int = 0
    first_hit_hops: int | None = None
    visited: int = 0
    known: int = 0
    elapsed: float = 0.0
    trace: list[p.TraceHop] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # peers that could not be asked, and why
    local: list[p.LocalHit] = field(default_factory=list)  # matches the node shares itself

    def to_wire(self, req: int) -> p.FindOk:
        # Bounded so the answer always fits one header: the best hits, a few holders each.
        found = tuple(
            p.FoundFile(
                name=f.name,
                size=f.size,
                cid=f.cid,
                holders=f.holders[: p.MAX_HOLDERS],
                mtime_ms=f.mtime_ms,
            )
            for f in self.found[: p.MAX_FOUND]
        )
        return p.FindOk(
            req=req,
            found=found,
            messages=min(self.messages, p.MAX_COUNT),
            hops=min(self.hops, p.MAX_COUNT),
            first_hit_hops=self.first_hit_hops,
            visited=min(self.visited, p.MAX_COUNT),
            known=min(self.known, p.MAX_COUNT),
            elapsed_us=int(self.elapsed * 1e6),
            trace=tuple(self.trace)[: p.MAX_TRACE],
            errors=tuple(e[: p.MAX_REASON_CHARS] for e in self.errors)[: p.MAX_FAILURES],
            local=tuple(self.local)[: p.MAX_LOCAL_HITS],
        )

    @classmethod
    def from_wire(cls, msg: p.FindOk, strategy: Strategy) -> FindResult:
        return cls(
            strategy,
            list(msg.found),
            msg.messages,
            msg.hops,
            msg.first_hit_hops,
            msg.visited,
            msg.known,
            msg.elapsed_us / 1e6,
            list(msg.trace),
            list(msg.errors),
            list(msg.local),
        )


def _holder(peers: PeerTable, peer: bytes, path: str) -> p.Holder:
    m = peers.membership.by_node(peer)
    if m is None:
        return p.Holder(node=peer, name="", host="?", port=0, path=path)
    return p.Holder(
        node=peer,
        name=m.name,
        host=m.endpoint.host,
        port=m.endpoint.port,
        path=path,
        key=m.pubkey or b"",
    )


async def local_hits(shares: Shares, query: Query) -> list[p.LocalHit]:
    """What the node itself shares that matches: a user's own files are hits too."""
    return [
        p.LocalHit(name=e.name, size=e.size, cid=e.cid, path=str(e.path))
        for e in await shares.search(query, p.MAX_LOCAL_HITS)
        if len(str(e.path).encode()) <= p.MAX_PATH_BYTES
    ]


async def run_find(walks: WalkService, query: Query, opts: SearchOptions) -> FindResult:
    """Search the node's live peers with the chosen strategy."""
    peers = walks.peers
    await peers.ready()  # a node started a moment ago meets its peers first
    started = time.monotonic()
    known = len(peers.neighbours())
    result = FindResult(opts.strategy, known=known, local=await local_hits(walks.shares, query))
    if opts.strategy is Strategy.PROBE:
        ps: ProbeSearch[PeerLink] = await probe(
            peers.alive_links(),
            query,
            timeout=opts.timeout,
            reply_timeout=walks.reply_timeout,
            want=opts.want,
            rng=random.Random(),  # noqa: S311 -- peer order only
            linger=opts.linger,
        )
        for f in ps.ranked():
            holders = tuple(
                p.Holder(
                    node=link.info.node if link.info else b"\0" * p.ID_BYTES,
                    name=link.info.name if link.info else "",
                    host=link.endpoint.host,
                    port=link.endpoint.port,
                    path=path,
                    key=link.server_key,
                )
                for link, path in list(f.holders.items())[: p.MAX_GOSSIP]
            )
            result.found.append(
                p.FoundFile(
                    name=f.name, size=f.size, cid=f.cid, holders=holders, mtime_ms=f.mtime_ms
                )
            )
        result.messages = result.hops = ps.messages
        walks.sent += ps.messages
        result.first_hit_hops = ps.first_hit_hops
        result.visited = ps.visited
        result.trace = [
            p.TraceHop(
                node=h.peer.info.node if h.peer.info else None,
                name=h.peer.info.name if h.peer.info else str(h.peer.endpoint),
                latency_us=int(h.latency * 1e6),
                verdict=str(h.verdict),
                hits=h.hits,
            )
            for h in ps.trace
        ]
    else:
        s: KWalkSearch[bytes] | FloodSearch[bytes] = await walks.search(query, opts)
        for w in s.ranked():
            holders = tuple(
                _holder(peers, peer, path) for peer, path in list(w.holders.items())[: p.MAX_GOSSIP]
            )
            result.found.append(
                p.FoundFile(
                    name=w.name, size=w.size, cid=w.cid, holders=holders, mtime_ms=w.mtime_ms
                )
            )
        if isinstance(s, KWalkSearch):
            result.messages = s.messages
            result.hops = sum(s.hops.values())
        else:
            result.messages = result.hops = s.messages
        result.first_hit_hops = s.first_hit_hops
        result.visited = len(s.visited)
        result.trace = [
            p.TraceHop(
                node=h.peer,
                name=_holder(peers, h.peer, "x").name,
                latency_us=int(h.latency * 1e6),
                verdict=str(h.verdict),
                hits=h.hits,
            )
            for h in s.trace
        ]
    result.elapsed = time.monotonic() - started
    return result
