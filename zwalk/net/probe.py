# Runs a search policy over real peer links: the thin loop between the walk core and the sockets.
from __future__ import annotations

import os
import random
import time

from zwalk.core import protocol as p
from zwalk.core.outcome import ProbeSearch
from zwalk.core.query import Query
from zwalk.net.links import PeerError, PeerLink


async def probe(
    links: list[PeerLink],
    query: Query,
    *,
    timeout: float,
    reply_timeout: float,
    want: int = 1,
    rng: random.Random | None = None,
    linger: float | None = None,
) -> ProbeSearch[PeerLink]:
    """Ask peers one at a time, in random order, until `want` distinct files are found."""
    clock = time.monotonic
    start = clock()
    rng = rng or random.Random()  # noqa: S311 -- peer order only, not security
    search = ProbeSearch(links, rng=rng, now=start, deadline=start + timeout, want=want)
    search.linger = linger
    msg = p.Search(
        req=0, qid=os.urandom(p.ID_BYTES), kind=query.kind, pattern=query.pattern, icase=query.icase
    )
    while (peer := search.next_ask(clock())) is not None:
        wait = max(0.001, min(reply_timeout, search.deadline - clock()))
        try:
            reply = await peer.request(msg, wait)
        except TimeoutError:
            search.on_failure(peer, clock(), timeout=True)
            continue
        except PeerError:
            search.on_failure(peer, clock(), timeout=False)
            continue
        if isinstance(reply, p.Hits) and reply.qid == msg.qid:
            search.on_reply(peer, reply.hits, clock())
        else:
            search.on_failure(peer, clock(), timeout=False)
    search.done(clock())
    return search
