# `zwalk find`'s downloads: one hit from its holders (those found later join), with a
# progress bar, and a search again when the file changed on its holders meanwhile; into the
# download folder, or exactly where `-o FILE` says.
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
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
from zwalk.net.download import DownloadResult, Placer, download
from zwalk.net.links import PeerLink
from zwalk.net.node import Node
from zwalk.net.tasks import TaskSet
from zwalk.store.downloads import (
    DownloadError,
    already_saved,
    content_at,
    copy_verified,
    part_path,
    place,
    place_at,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class State:
    fetching: bool = False  # a download is under way (Ctrl-C now keeps a resumable .part)
    listed: bool = False  # the hits were shown already (before the question which to fetch)
    chose: bool = False  # the user chose at that question


@dataclass(frozen=True, slots=True)
class Target:
    """Where a download goes: into `folder` under the name the network gives it (`name (1).ext`
    if that is taken by other bytes), or exactly at `file` (`-o FILE`: its .part beside it),
    which `force` lets replace a file with other content."""

    folder: Path
    file: Path | None = None
    force: bool = False
    stdout: bool = False  # -o -: `folder` is private and temporary, the file goes to stdout

    def name(self, f: p.FoundFile) -> str:
        return self.file.name if self.file is not None else f.name

    def part(self, f: p.FoundFile) -> Path:
        return part_path(self.folder, self.name(f), f.cid)

    def present(self, f: p.FoundFile) -> Path | None:
        """A file with this content already where it would go."""
        if self.file is None:
            return already_saved(self.folder, f.name, f.cid, f.size)
        return self.file if content_at(self.file, f.cid, f.size) == "same" else None

    def placer(self, f: p.FoundFile) -> Placer | None:
        if self.file is None:
            return None
        return functools.partial(place_at, target=self.file, cid=f.cid, replace=self.force)


async def fetch_one(
    app: App,
    q: Query,
    opts: SearchOptions,
    via: str,
    node: Node,
    f: p.FoundFile,
    target: Target,
    show_progress: bool,
    say: Any,
    state: State,
    seen: set[bytes],
) -> dict[str, Any]:
    """Download one hit (unless it is there already); the report entry of the download, or of
    the failure."""
    present = await asyncio.to_thread(target.present, f)
    if present is not None:
        return download_report(f, present, None)
    note = ""
    for attempt in (1, 2):
        links = await _holder_links(app, node, f)
        say(_announce(f, target, links))
        more: asyncio.Queue[PeerLink] = asyncio.Queue()
        async with TaskSet("a download's holder search") as helpers:
            if opts.want == 1:  # the search stopped at the first hit: look for every holder
                helpers.spawn(_gather_holders(app, node, f, opts, via, more))
            state.fetching = True  # until it ends: Ctrl-C now leaves a .part to resume
            try:
                if not links:
                    raise DownloadError("none of its holders answers", sources=True)
                try:
                    got = await _fetch(app, f, links, target, show_progress, more)
                except OSError as e:  # the disk: the .part, the final name, a record
                    where = target.file or target.folder
                    raise DownloadError(f"cannot save it in {where}: {describe(e)}") from None
            except DownloadError as e:
                state.fetching = False
                if e.changed and attempt == 1 and q.kind is not p.QueryKind.CID:
                    changed = "changed on its holders while it was being fetched"
                    say(f"{f.name} {changed}; searching again")
                    newer = await search_again(app, q, opts, via, node, f, seen)
                    if newer is not None:
                        first = p.cid_to_text(f.cid)[:15]
                        note = f"the version found first ({first}…) had changed"
                        await asyncio.to_thread(_forget_part, target.part(f))  # it is gone
                        f = newer
                        continue
                if e.sources and attempt == 1:
                    # Its holders went away (restarted, left, lost): others may have it now.
                    others = await _other_holders(app, node, f, opts, via)
                    if others is not None:
                        say(f"{f.name}: its holders failed; trying {_names(others)}")
                        f = others
                        continue
                return failure_report(f, e)
        state.fetching = False
        return download_report(f, got.path, got, note)
    raise AssertionError("unreachable")  # pragma: no cover


async def _other_holders(
    app: App, node: Node, f: p.FoundFile, opts: SearchOptions, via: str
) -> p.FoundFile | None:
    """The hit again, with the holders a content-id search finds now that were not among its
    first ones; None if there are none."""
    cid_query = Query(kind=p.QueryKind.CID, pattern=p.cid_to_text(f.cid), icase=False)
    wide = replace(opts, want=2)  # every holder: the search goes on until it covered the peers
    try:
        result = await ask_local(app, cid_query, wide) if via == "local-node" else None
        if result is None:
            result = await node.find(cid_query, wide)
    except Exception as e:  # a retry is a bonus: the first failure stands
        log.info("looking for other holders failed: %s", e)
        return None
    tried = {(h.host, h.port) for h in f.holders}
    fresh = tuple(
        h
        for hit in result.found
        if hit.cid == f.cid
        for h in hit.holders
        if h.port and (h.host, h.port) not in tried
    )
    if not fresh:
        return None
    again = replace(f, holders=fresh)
    await node.peers.meet(
        holder_endpoints([again]), holder_keys([again]), timeout=hello_wait(app.cfg)
    )
    return again


def _names(f: p.FoundFile) -> str:
    return ", ".join(peer_label(h.name, h.node) for h in f.holders[:4])


async def _holder_links(app: App, node: Node, f: p.FoundFile) -> list[PeerLink]:
    """Links to the hit's holders that answered hello. Those that did not get one more
    handshake: the search just heard from them, and on a lossy link a first connection can
    lose its SYN and more."""
    endpoints = holder_endpoints([f])
    if not any(node.peers.alive(ep) for ep in endpoints):
        await node.peers.meet(endpoints, holder_keys([f]), timeout=hello_wait(app.cfg))
    return [node.peers.links[ep] for ep in endpoints if ep in node.peers.links]


def _forget_part(part: Path) -> None:
    """Remove the .part (and its record) of a version no holder has any more."""
    for path in (part, part.with_name(part.name + ".progress")):
        with contextlib.suppress(OSError):
            path.unlink()


def _announce(f: p.FoundFile, target: Target, links: list[PeerLink]) -> str:
    who = ", ".join(
        peer_label(link.info.name, link.info.node) if link.info else str(link.endpoint)
        for link in links[:4]
    )
    more = f" and {len(links) - 4} more" if len(links) > 4 else ""
    resume = ""
    if target.part(f).exists():
        resume = " (resuming what an earlier attempt verified)"
    where = f"into {target.folder}" if target.file is None else f"to {target.file}"
    if target.stdout:
        where = f"to stdout once verified (through {target.folder})"
    return (
        f"fetching {f.name} ({mib(f.size)}, {p.cid_to_text(f.cid)[:15]}…) from "
        f"{plural(len(links), 'holder')}: {who}{more}, {where}{resume}"
    )


async def copy_local(f: p.FoundFile, src: Path, target: Target) -> dict[str, Any]:
    """`-o` for a file the local node shares: copy it from where it is shared, checked against
    its content id on the way (it may have changed since it was indexed)."""
    present = await asyncio.to_thread(target.present, f)
    if present is not None:
        return download_report(f, present, None)
    started = time.monotonic()
    part = target.part(f)
    copy = part.with_name(f"{part.name}.{os.getpid()}.copy")
    try:
        await asyncio.to_thread(target.folder.mkdir, parents=True, exist_ok=True)
        if not await asyncio.to_thread(copy_verified, src, copy, f.cid):
            raise DownloadError(f"{src}, which the local node shares, has changed since it was "
                                "indexed; try again in a moment")  # fmt: skip
        put = target.placer(f) or functools.partial(
            place, out_dir=target.folder, name=f.name, cid=f.cid
        )
        final, _ = await asyncio.to_thread(put, copy)
    except OSError as e:
        copy.unlink(missing_ok=True)
        return failure_report(f, DownloadError(f"cannot copy {src}: {describe(e)}"))
    except DownloadError as e:
        copy.unlink(missing_ok=True)
        return failure_report(f, e)
    got = DownloadResult(path=final, cid=f.cid, size=f.size, seconds=time.monotonic() - started)
    return download_report(f, final, got, f"copied from {src}, which the local node shares")


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
    target: Target,
    show_progress: bool,
    more: asyncio.Queue[PeerLink] | None = None,
) -> DownloadResult:
    fetch = functools.partial(
        download,
        links,
        cid=f.cid,
        name=target.name(f),
        size=f.size,
        out_dir=target.folder,
        options=app.cfg.transfer_options(),
        more_holders=more,
        placer=target.placer(f),
    )
    if not show_progress:
        return await fetch()
    with TransferBar(app.err, f.name) as bar:
        return await fetch(progress=bar.update)
