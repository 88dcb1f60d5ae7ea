# `zwalk find`'s searches: through the running local node when there is one (its control
# endpoint), else from a node of the command's own; and again for a version that changed.
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from dataclasses import replace

from zwalk.cli.app import App, client_node, meet_named, running
from zwalk.cli.render import peer_label
from zwalk.core import protocol as p
from zwalk.core.addresses import Endpoint
from zwalk.core.fields import Strategy
from zwalk.core.query import Query
from zwalk.core.search_options import SearchOptions, default_ttl
from zwalk.net import control
from zwalk.net.diagnosis import hello_wait
from zwalk.net.finder import FindResult
from zwalk.net.node import Node
from zwalk.store import identity
from zwalk.store import state as node_state

log = logging.getLogger(__name__)

# A search for every version of a name goes on this long after its first hit (or as long again
# as that hit took), unless every peer has been asked sooner.
LINGER = 1.0


def options(app: App, q: Query, all_: bool, no_download: bool) -> SearchOptions:
    """A list, --all, or a name or glob (which may come in several versions) looks at every
    peer; a content id is one file, and holders found later join its download."""
    cfg = app.cfg
    strategy = Strategy(cfg.strategy)
    ttl = cfg.ttl or default_ttl(strategy)
    every = all_ or no_download or q.kind is not p.QueryKind.CID
    return SearchOptions(
        strategy=strategy,
        timeout=cfg.find_timeout,
        want=p.MAX_HITS if every else 1,
        walkers=cfg.walkers,
        initial=min(cfg.initial_walkers, cfg.walkers),
        ttl=ttl,
        check_every=cfg.check_every,
        linger=LINGER if every else None,
    )


def _find_msg(
    local: node_state.LocalNode, q: Query, opts: SearchOptions, peers: tuple[p.Address, ...] = ()
) -> p.Find:
    return p.Find(
        req=1,
        token=local.token,
        kind=q.kind,
        pattern=q.pattern,
        icase=q.icase,
        strategy=opts.strategy,
        walkers=opts.walkers,
        initial=opts.initial,
        ttl=opts.ttl,
        check_every=opts.check_every,
        timeout_ms=int(opts.timeout * 1000),
        want=opts.want,
        peers=peers,
        linger_ms=int(opts.linger * 1000) if opts.linger else 0,
    )


async def ask_local(app: App, q: Query, opts: SearchOptions) -> FindResult | None:
    local = node_state.read_state(app.cfg.data_dir)
    if local is None:
        return None
    msg = _find_msg(local, q, opts, app.named)
    reply = await control.request(local, msg, opts.timeout + app.status_timeout + 5)
    return FindResult.from_wire(reply, opts.strategy) if isinstance(reply, p.FindOk) else None


async def search(
    app: App, q: Query, opts: SearchOptions, stack: contextlib.AsyncExitStack
) -> tuple[FindResult, str, Node]:
    """Search through the running local node if there is one, else from a temporary node.
    Returns the result, how the peers were found, and a running node to download with."""
    cfg = app.cfg
    local = node_state.read_state(cfg.data_dir)
    if local is not None:
        log.info("searching through the local node %s (pid %d)", local.name, local.pid)
        result = await ask_local(app, q, opts)
        if result is not None:
            holders = holder_endpoints(result.found)
            dl_cfg = replace(
                cfg,
                peers=tuple(holders) + cfg.peers,
                peer_keys=tuple(holder_keys(result.found).items()) + cfg.peer_keys,
            )
            node = await stack.enter_async_context(
                # It fetches for the local node, as the local node: the key the holders
                # know (and, in allowlist mode, have listed).
                running(Node(dl_cfg, identity.load_or_create(cfg.data_dir), listen=False))
            )
            # Only the holders matter to this node: no need to wait for discovery to go quiet.
            # A new connection over a lossy link can lose its SYN (a 1 s retransmit) or more,
            # so wait as long as a hello may take, not one reply's time.
            await node.peers.wait_until(
                functools.partial(node.peers.answered, holders), hello_wait(cfg)
            )
            return result, "local-node", node
        app.warn("the local node did not answer its control endpoint; searching without it")
    node = await stack.enter_async_context(running(client_node(app, listen=True)))
    log.info("no local node: browsing mDNS on %s", ", ".join(node.local.mdns_addresses))
    await meet_named(app, node)
    await node.peers.settle(cfg.discovery_wait)
    if not node.peers.neighbours():  # nobody to ask: wait to say why those seen do not answer
        await node.peers.hear_back()
    log.info("%d live peers: %s", len(node.peers.neighbours()), _peer_list(node))
    return await _search_from(node, q, opts), "discovery", node


def _peer_list(node: Node) -> str:
    return ", ".join(
        f"{peer_label(m.name, m.node)} at {m.endpoint}" for m in node.peers.membership.alive()
    )


async def _search_from(node: Node, q: Query, opts: SearchOptions) -> FindResult:
    result = await node.find(q, opts)
    result.errors = node.problems()
    return result


def holder_endpoints(found: list[p.FoundFile]) -> list[Endpoint]:
    return list(dict.fromkeys(Endpoint(h.host, h.port) for f in found for h in f.holders if h.port))


def holder_keys(found: list[p.FoundFile]) -> dict[Endpoint, bytes]:
    """The keys the holders proved to the node that found them."""
    return {Endpoint(h.host, h.port): h.key for f in found for h in f.holders if h.port and h.key}


async def search_again(
    app: App,
    q: Query,
    opts: SearchOptions,
    via: str,
    node: Node,
    changed: p.FoundFile,
    seen: set[bytes],
) -> p.FoundFile | None:
    """The file changed on its holders while we fetched it: search again (their rescan takes a
    moment) until a file of that name turns up whose contents the first search had not seen
    (another version it listed is not this one's new state), or time is up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + app.cfg.find_timeout
    while loop.time() < deadline:
        await asyncio.sleep(1.0)
        result = await ask_local(app, q, opts) if via == "local-node" else None
        if result is None:
            result = await _search_from(node, q, opts)
        for f in result.found:
            if f.name == changed.name and f.cid not in seen:
                await node.peers.meet(
                    holder_endpoints([f]), holder_keys([f]), timeout=hello_wait(app.cfg)
                )
                return f
    return None
