# Asking a file's holders for its chunk hashes before a download starts (net/download.py): who
# agrees with whom, and how long a small request to each takes.
from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from zwalk.core import protocol as p
from zwalk.net.links import PeerError, PeerLink
from zwalk.store.downloads import DownloadError


async def fetch_info(
    holders: Sequence[PeerLink], cid: bytes, size: int, timeout: float
) -> tuple[list[tuple[p.FileInfo, list[PeerLink]]], dict[str, str], dict[PeerLink, float]]:
    """Ask every holder for the file's chunk hashes. Holders are grouped by the hash list they
    sent, most holders first: a list that does not produce the content id shows only once the
    whole file is hashed, and then the next group gets its turn. Also returns how long each
    answer took: the round trip of a small request, which frames cannot measure."""
    rtts: dict[PeerLink, float] = {}

    async def ask(holder: PeerLink) -> p.Message:
        started = time.monotonic()
        reply = await holder.request(p.GetInfo(req=0, cid=cid), timeout)
        # The hello's round trip, if there was one: the file-info reply carries the hash list
        # (up to 4 MiB), whose transfer is not part of the round trip.
        took = time.monotonic() - started
        rtts[holder] = min(took, holder.rtt) if holder.rtt is not None else took
        return reply

    replies = await asyncio.gather(*(ask(h) for h in holders), return_exceptions=True)
    groups: dict[tuple[int, bytes], tuple[p.FileInfo, list[PeerLink]]] = {}
    excluded: dict[str, str] = {}
    for holder, r in zip(holders, replies, strict=True):
        if isinstance(r, BaseException):
            if not isinstance(r, PeerError | TimeoutError):
                raise r
            excluded[holder.label] = str(r) or f"no answer within {timeout:g} s"
        elif not isinstance(r, p.FileInfo) or r.cid != cid or r.size != size:
            excluded[holder.label] = "file-info does not match the search hit"
        else:
            groups.setdefault((r.chunk_size, r.hashes), (r, []))[1].append(holder)
    if not groups:
        raise DownloadError(
            "no holder answered with usable file info: "
            + "; ".join(f"{k}: {v}" for k, v in excluded.items()),
            sources=True,
        )
    return sorted(groups.values(), key=lambda g: -len(g[1])), excluded, rtts
