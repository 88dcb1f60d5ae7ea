# `zwalk find FOLDER/`: every file that live peers list under a folder (the `list` request,
# docs/PROTOCOL.md 6.23), fetched into the download folder with its tree, DIR/photos/2024/a.jpg,
# each file verified against its content id and resumable from its own .part, from every peer
# that lists that path with that content.
#
# Paths come from the network: every part of one goes through the same safe-name rules as a
# single download's name (store/downloads.py `local_path`), folders are made one level at a time
# without following links, and nothing is written outside the download folder.
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from zwalk.cli.app import App, client_node, describe, meet_named, plural, running
from zwalk.cli.fetching import State
from zwalk.cli.main import EXIT_DOWNLOAD_FAILED, EXIT_NOT_FOUND, EXIT_OK
from zwalk.cli.render import TransferBar, peer_label
from zwalk.core import protocol as p
from zwalk.core.addresses import Endpoint
from zwalk.core.units import mib
from zwalk.net import control
from zwalk.net.diagnosis import hello_wait
from zwalk.net.download import download
from zwalk.net.links import PeerLink
from zwalk.net.listing import ListError, pages
from zwalk.net.node import Node
from zwalk.store import state as node_state
from zwalk.store.downloads import DownloadError, already_saved, local_path, make_folders

K = TypeVar("K", bound=Hashable)
MAX_FOLDER_FILES = 100_000  # files one folder fetch takes from one peer


@dataclass(slots=True)
class Version(Generic[K]):
    """One content of a path, and the peers that list it so."""

    name: str
    size: int
    cid: bytes
    mtime_ms: int
    holders: list[K] = field(default_factory=list)


@dataclass(slots=True)
class Planned(Generic[K]):
    path: str
    versions: list[Version[K]]  # best first: the newest, then the most holders

    @property
    def chosen(self) -> Version[K]:
        return self.versions[0]


def plan(listings: Iterable[tuple[K, Iterable[p.Hit]]]) -> list[Planned[K]]:
    """Each path the peers list, in path order, with its versions best first: the newest
    (largest mtime_ms), then the one most peers hold, then by content id (a fixed order)."""
    by_path: dict[str, dict[tuple[bytes, int], Version[K]]] = {}
    for holder, hits in listings:
        for h in hits:
            versions = by_path.setdefault(h.path, {})
            v = versions.setdefault((h.cid, h.size), Version(h.name, h.size, h.cid, h.mtime_ms))
            if holder not in v.holders:
                v.holders.append(holder)
            v.mtime_ms = max(v.mtime_ms, h.mtime_ms)
    return [
        Planned(path, sorted(vs.values(), key=lambda v: (-v.mtime_ms, -len(v.holders), v.cid)))
        for path, vs in sorted(by_path.items())
    ]


def version_note(pf: Planned[K], label: Callable[[K], str]) -> str:
    """Why this version of a path was taken, when the peers disagree on its content."""
    if len(pf.versions) < 2:
        return ""
    best, runner = pf.versions[0], pf.versions[1]
    if best.mtime_ms > runner.mtime_ms:
        why = f"the newest ({_when(best.mtime_ms)})"
    elif len(best.holders) > len(runner.holders):
        why = "the one most peers have"
    else:
        why = "the first by content id (as new and as common as the others)"
    others = ", ".join(dict.fromkeys(label(h) for v in pf.versions[1:] for h in v.holders))
    return (
        f"{len(pf.versions)} versions on the peers; took {why}, from "
        f"{', '.join(label(h) for h in best.holders)}; {others} had another"
    )


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def _label(link: PeerLink) -> str:
    return peer_label(link.info.name, link.info.node) if link.info else str(link.endpoint)


# --- the command ------------------------------------------------------------------------------


async def fetch_folder(
    app: App, prefix: str, out_dir: Path, *, no_download: bool, show_progress: bool, state: State
) -> tuple[dict[str, Any], int]:
    """List `prefix` on every live peer and fetch what is under it into `out_dir`; the report
    (docs/CLI.md) and the exit status."""
    report: dict[str, Any] = {
        "query": {"text": prefix, "kind": "folder", "pattern": prefix, "ignore_case": False},
        "folder": prefix,
        "status": "not-found",
        "out": str(out_dir),
        "files": [],
        "peers": [],
        "bytes": 0,
        "fetched_bytes": 0,
        "errors": [],
        "peers_via": "",
    }
    async with contextlib.AsyncExitStack() as stack:
        node, report["peers_via"] = await _peers(app, stack)
        links = node.peers.alive_links()
        listings, errors = await _list(app, links, prefix)
        report["errors"] += errors + node.problems()
        report["peers"] = [
            {
                "node": link.info.node.hex() if link.info else None,
                "name": link.info.name if link.info else "",
                "endpoint": str(link.endpoint),
                "files": len(hits),
            }
            for link, hits in listings
        ]
        files = plan(listings)
        report["bytes"] = sum(pf.chosen.size for pf in files)
        if not files:
            return report, EXIT_NOT_FOUND
        report["status"] = "found"
        report["files"] = [_entry(pf) for pf in files]
        if no_download:
            return report, EXIT_OK
        bar = TransferBar(app.err, prefix) if show_progress else None
        done = 0
        with bar or contextlib.nullcontext():
            if bar is not None:
                bar.update(0, report["bytes"], 0)
            for pf, entry in zip(files, report["files"], strict=True):
                base = done

                def progress(d: int, total: int, sources: int, base: int = base) -> None:
                    if bar is not None:
                        bar.update(base + d, report["bytes"], sources)

                await _fetch_file(app, pf, entry, out_dir, progress, state)
                done += pf.chosen.size
                if bar is not None:
                    bar.update(done, report["bytes"], 0)
        report["fetched_bytes"] = sum(e["fetched_bytes"] for e in report["files"])
        if any(e["status"] == "failed" for e in report["files"]):
            report["status"] = "download-failed"
            return report, EXIT_DOWNLOAD_FAILED
        report["status"] = "downloaded"
        return report, EXIT_OK


async def _peers(app: App, stack: contextlib.AsyncExitStack) -> tuple[Node, str]:
    """A node of this command's own, met with every live peer: those of the running local
    node's table when there is one, else those mDNS and --peer find."""
    cfg = app.cfg
    local = node_state.read_state(cfg.data_dir)
    if local is not None:
        status = await control.status(local, app.status_timeout, app.named)
        if status is not None:
            alive = [m for m in status.members if m.state == "alive" and m.port]
            node = await stack.enter_async_context(
                running(client_node(app, listen=False, discover=False))
            )
            eps = [Endpoint(m.host, m.port) for m in alive]
            keys = {Endpoint(m.host, m.port): m.key for m in alive if m.key}
            await node.peers.meet(eps, keys, timeout=hello_wait(cfg))
            return node, "local-node"
        app.warn("the local node did not answer its control endpoint; looking for peers without it")
    node = await stack.enter_async_context(running(client_node(app, listen=False)))
    await meet_named(app, node)
    await node.peers.settle(cfg.discovery_wait)
    if not node.peers.neighbours():  # nobody to ask: wait to say why those seen do not answer
        await node.peers.hear_back()
    return node, "discovery"


async def _list(
    app: App, links: list[PeerLink], prefix: str
) -> tuple[list[tuple[PeerLink, list[p.Hit]]], list[str]]:
    """Every peer's files under `prefix`, asked of all peers at once; and why some could not
    be listed."""

    async def one(link: PeerLink) -> list[p.Hit]:
        hits: list[p.Hit] = []
        async for page in pages(link, prefix=prefix, timeout=app.cfg.reply_timeout * 5):
            hits += [h for h in page.files if h.path.startswith(prefix)]  # trust, but check
            if len(hits) > MAX_FOLDER_FILES:
                raise ListError(
                    f"{link} lists more than {MAX_FOLDER_FILES} files under {prefix}: "
                    "fetch the folders below it one at a time"
                )
        return hits

    results = await asyncio.gather(*(one(link) for link in links), return_exceptions=True)
    listings, errors = [], []
    for link, r in zip(links, results, strict=True):
        if isinstance(r, ListError):
            errors.append(str(r))
        elif isinstance(r, BaseException):
            raise r
        else:
            listings.append((link, r))
    return listings, errors


def _entry(pf: Planned[PeerLink]) -> dict[str, Any]:
    v = pf.chosen
    return {
        "path": pf.path,
        "name": v.name,
        "size": v.size,
        "cid": p.cid_to_text(v.cid),
        "mtime_ms": v.mtime_ms or None,
        "status": "listed",
        "file": None,
        "holders": [link.label for link in v.holders],
        "sources": [],
        "versions": len(pf.versions),
        "note": version_note(pf, _label),
        "error": None,
        "part": None,
        "fetched_bytes": 0,
        "resumed_bytes": 0,
        "seconds": 0.0,
    }


async def _fetch_file(
    app: App,
    pf: Planned[PeerLink],
    entry: dict[str, Any],
    out_dir: Path,
    progress: Callable[[int, int, int], None],
    state: State,
) -> None:
    """Fetch one file of the folder into its place below `out_dir` (unless it is there
    already); its report entry says how it went."""
    v = pf.chosen
    try:
        dest = local_path(out_dir, pf.path)
    except ValueError as e:
        entry.update(status="failed", error=f"{e}: not saved")
        return
    entry["file"] = str(dest)
    state.fetching = True  # until it ends: Ctrl-C now leaves a .part to resume
    try:
        await asyncio.to_thread(make_folders, out_dir, dest.parent)
        present = await asyncio.to_thread(already_saved, dest.parent, dest.name, v.cid, v.size)
        if present is not None:
            entry.update(status="present", file=str(present))
            return
        got = await download(
            v.holders,
            cid=v.cid,
            name=dest.name,
            size=v.size,
            out_dir=dest.parent,
            options=app.cfg.transfer_options(),
            progress=progress,
        )
    except DownloadError as e:
        part = str(e.part.absolute()) if e.part else None
        entry.update(status="failed", error=str(e), part=part)
        return
    except OSError as e:  # the disk: a folder, the .part, the final name
        entry.update(status="failed", error=f"cannot save it in {dest.parent}: {describe(e)}")
        return
    finally:
        state.fetching = False
    entry.update(
        status="downloaded",
        file=str(got.path),
        sources=got.sources,
        fetched_bytes=got.fetched_bytes,
        resumed_bytes=got.resumed_bytes,
        seconds=round(got.seconds, 4),
    )


# --- the text ---------------------------------------------------------------------------------

WORDS = {"listed": "listed", "downloaded": "fetched", "present": "here", "failed": "failed"}


def render_folder(app: App, r: dict[str, Any], *, quiet: bool = False) -> None:
    """One line per file on stdout (what happened, size, path, from whom); on stderr the
    notes and warnings, a summary, and (if a file failed) one error line last."""
    files = r["files"]
    for problem in r["errors"]:
        if files or r["peers"]:
            app.warn(problem)
    if not files:
        app.error(_not_found(r))
        return
    for e in files:
        if e["note"]:
            app.warn(f"{e['path']}: {e['note']}")
    width = max(len(mib(e["size"])) for e in files)
    for e in files if not quiet else ():
        who = ", ".join(s.split(" at ")[0] for s in e["sources"])
        app.out.print(
            f"{WORDS[e['status']]:<7} {mib(e['size']):>{width}}  {e['path']}"
            + (f"  from {who}" if who else ""),
            highlight=False,
            markup=False,
        )
    failed = [e for e in files if e["status"] == "failed"]
    for e in failed:
        app.warn(f"{e['path']}: {e['error']}")
    if not quiet:
        count = {w: sum(e["status"] == w for e in files) for w in WORDS}
        what = f"{plural(len(files), 'file')}, {mib(r['bytes'])}, listed by " + plural(
            sum(1 for x in r["peers"] if x["files"]), "peer"
        )
        if r["status"] == "found":
            app.info(f"{r['folder']}: {what}; nothing fetched (--no-download)")
        else:
            app.info(
                f"{r['folder']}: {what}, into {r['out']}: {count['downloaded']} fetched, "
                f"{count['present']} already here" + (f", {len(failed)} failed" if failed else "")
            )
    if failed:
        names = ", ".join(e["path"] for e in failed[:5]) + (", …" if len(failed) > 5 else "")
        app.error(
            f"{len(failed)} of {plural(len(files), 'file')} under {r['folder']} were not "
            f"fetched ({names}); run the same find again to resume them"
        )


def _not_found(r: dict[str, Any]) -> str:
    if not r["peers"]:
        if r["errors"]:
            return "no peer answered; tried: " + "; ".join(r["errors"])
        return (
            "no peers found: is `zwalk serve` running on another machine of this LAN? Name "
            "one with --peer HOST[:PORT], or run `zwalk doctor`"
        )
    return (
        f"no peer shares anything under {r['folder']!r} (asked "
        f"{plural(len(r['peers']), 'peer')}): a folder is named as `zwalk ls PEER` shows "
        "paths, the share's name first"
    )
