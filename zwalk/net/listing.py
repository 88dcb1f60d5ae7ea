# Listing what a peer shares: `list` requests, page after page, until the peer says it is done
# (docs/PROTOCOL.md sections 6.23 and 6.24). Used by `zwalk ls` and by folder fetches.
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from zwalk.core import protocol as p
from zwalk.net.links import PeerError, PeerLink

BUSY_RETRIES = 5  # a busy peer is asked again, a little later each time


class ListError(Exception):
    """The peer cannot, or did not, list its files."""


async def pages(
    link: PeerLink,
    *,
    prefix: str = "",
    pattern: str = "",
    icase: bool = False,
    limit: int = p.MAX_LIST,
    timeout: float = 10.0,
) -> AsyncIterator[p.ListOk]:
    """Every page of the peer's files (in path order) under `prefix` whose name matches
    `pattern` (a name or glob; '' for all)."""
    who = str(link)
    if link.info is None or p.FEATURE_LIST not in link.info.features:
        raise ListError(f"{who} runs a zwalk that cannot list its files (update it)")
    after = ""
    while True:
        msg = p.List(req=0, after=after, prefix=prefix, pattern=pattern, icase=icase, limit=limit)
        page = await _ask(link, msg, timeout)
        yield page
        if not page.next:
            return
        if page.next <= after:  # a peer whose cursor goes back would keep us here for ever
            raise ListError(f"{who} sent a cursor that does not move forward")
        after = page.next


async def _ask(link: PeerLink, msg: p.List, timeout: float) -> p.ListOk:
    for attempt in range(BUSY_RETRIES + 1):
        try:
            reply = await link.request(msg, timeout)
        except PeerError as e:
            if e.code is p.ErrorCode.BUSY and attempt < BUSY_RETRIES:
                await asyncio.sleep(0.2 * 2**attempt)
                continue
            raise ListError(f"{link} refused to list: {e}") from None
        except TimeoutError:
            raise ListError(f"{link} did not answer within {timeout:g} s") from None
        if not isinstance(reply, p.ListOk):
            raise ListError(f"{link} answered a list with {reply.TYPE}")
        return reply
    raise AssertionError("unreachable")  # pragma: no cover
