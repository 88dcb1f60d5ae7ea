# `zwalk find`'s downloads: one hit from its holders (those found later join), with a
# progress bar, and a search again when the file changed on its holders meanwhile.
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from zwalk.cli.app import App, describe, plural
from zwalk.cli.render import TransferBar, peer_label
from zwalk.cli.report import download_report, failure_report
from zwalk.cli.searching import ask_local, holder_endpoints, holder_keys, search_again
from zwalk.core import protocol as p
from zwalk.core.query import Query
from zwalk.core.search_options import SearchOptions
from zwalk.core.units import mib
from zwalk.net.diagnosis import hello_wait
from zwalk.net.download import DownloadResult, download
from zwalk.net.links import PeerLink
from zwalk.net.node import Node
from zwalk.net.tasks import TaskSet
from zwalk.store.downloads import (
    DownloadError,
    already_saved,
    part_path,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class State:
    fetching: bool = False  # a download is under way (Ctrl-C now keeps a resumable .part)


async def fetch_one(
    app: App,
    q: Query,
    opts: SearchOptions,
    via: str,
    node: Node,
    f: p.FoundFile,
    out_dir: Path,
    show_progress: bool,
    say: Any,
    state: State,
    seen: set[bytes],
) -> dict[str, Any]:
    """Download one hit (unless it is there already); the report entry of the download, or of
    the failure."""
    present = await asyncio.to_thread(already_saved, out_dir, f.name, f.cid, f.size)
    if present is not None:
        return download_report(f, present, None)
    note = ""
    for attempt in (1, 2):
        links = await _holder_links(app, node, f)
        say(_announce(f, out_dir, links))
        more: asyncio.Queue[PeerLink] = asyncio.Queue()
        async with TaskSet("a download's holder search") as helpers:
            if opts.want == 1:  # the search stopped at the first hit: look for every holder
                helpers.spawn(_gather_holders(app, node, f, opts, via, more))
            state.fetching = True  # until it ends: Ctrl-C now leaves a .part to resume
            try:
                if not links:
                    raise DownloadError("none of its holders answers")
                try:
                    got = await _fetch(app, f, links, out_dir, show_progress, more)
                except OSError as e:  # the disk: the .part, the final name, a record
                    raise DownloadError(f"cannot save it in {out_dir}: {describe(e)}") from None
            except DownloadError as e:
                state.fetching = False
                if e.changed and attempt == 1 and q.kind is not p.QueryKind.CID:
                    changed = "changed on its holders while it was being fetched"
                    say(f"{f.name} {changed}; searching again")
                    newer = await search_again(app, q, opts, via, node, f, seen)
                    if newer is not None:
                        first = p.cid_to_text(f.cid)[:15]
                        note = f"the version found first ({first}…) had changed"
                        await asyncio.to_thread(_forget_part, out_dir, f)  # that version is gone
                        f = newer
                        continue
                return failure_report(f, e)
        state.fetching = False
        return download_report(f, got.path, got, note)
    raise AssertionError("unreachable")  # pragma: no cover


async def _holder_links(app: App, node: Node, f: p.FoundFile) -> list[PeerLink]:
    """Links to the hit's holders that answered hello. Those that did not get one more
    handshake: the search just heard from them, and on a lossy link a first connection can
    lose its SYN and more."""
    endpoints = holder_endpoints([f])
    if not any(node.peers.alive(ep) for ep in endpoints):
        await node.peers.meet(endpoints, holder_keys([f]), timeout=hello_wait(app.cfg))
    return [node.peers.links[ep] for ep in endpoints if ep in node.peers.links]


def _forget_part(out_dir: Path, f: p.FoundFile) -> None:
    """Remove the .part (and its record) of a version no holder has any more."""
    part = part_path(out_dir, f.name, f.cid)
    for path in (part, part.with_name(part.name + ".progress")):
        with contextlib.suppress(OSError):
            path.unlink()


def _announce(f: p.FoundFile, out_dir: Path, links: list[PeerLink]) -> str:
    who = ", ".join(
        peer_label(link.info.name, link.info.node) if link.info else str(link.endpoint)
        for link in links[:4]
    )
    more = f" and {len(links) - 4} more" if len(links) > 4 else ""
    resume = ""
    part = part_path(out_dir, f.name, f.cid)
    if part.exists():
        resume = " (resuming what an earlier attempt verified)"
    return (
        f"fetching {f.name} ({mib(f.size)}, {p.cid_to_text(f.cid)[:15]}…) from "
        f"{plural(len(links), 'holder')}: {who}{more}, into {out_dir}{resume}"
    )


async def _gather_holders(
    app: App,
    node: Node,
    f: p.FoundFile,
    opts: SearchOptions,
    via: str,
    out: asyncio.Queue[PeerLink],
) -> None:
    """While the download runs, look for every other holder of the file: a content-id search
    that wants more than the one file there is, so its walkers go on until they have covered
    the peers (or time is up). Each new holder is met and handed to the download."""
    cid_query = Query(kind=p.QueryKind.CID, pattern=p.cid_to_text(f.cid), icase=False)
    wide = replace(opts, want=2)
    try:
        result = await ask_local(app, cid_query, wide) if via == "local-node" else None
        if result is None:
            if via == "local-node":
                return  # the local node went away; the download node cannot walk itself
            result = await node.find(cid_query, wide)
    except Exception as e:  # more holders are a bonus: the download goes on without them
        log.info("looking for more holders failed: %s", e)
        return
    known = {(h.host, h.port) for h in f.holders}
    for hit in result.found:
        if hit.cid != f.cid:
            continue
        for h in hit.holders:
            if (h.host, h.port) in known or not h.port:
                continue
            known.add((h.host, h.port))
            if not h.key:
                continue
            ref = p.PeerRef(node=h.node, name=h.name, host=h.host, port=h.port, key=h.key)
            link = node.peers.link_to(ref)
            if link is None:
                continue
            if await node.peers.wait_until(
                functools.partial(_met, node, h.node), app.cfg.reply_timeout
            ):
                out.put_nowait(link)


def _met(node: Node, node_id: bytes) -> bool:
    """Whether the peer has answered our hello (a link for it is up)."""
    return node.peers.link_for(node_id) is not None


async def _fetch(
    app: App,
    f: p.FoundFile,
    links: list[PeerLink],
    out_dir: Path,
    show_progress: bool,
    more: asyncio.Queue[PeerLink] | None = None,
) -> DownloadResult:
    fetch = functools.partial(
        download,
        links,
        cid=f.cid,
        name=f.name,
        size=f.size,
        out_dir=out_dir,
        options=app.cfg.transfer_options(),
        more_holders=more,
    )
    if not show_progress:
        return await fetch()
    with TransferBar(app.err, f.name) as bar:
        return await fetch(progress=bar.update)
