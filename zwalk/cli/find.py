# `zwalk find QUERY`: search the peers, list the hits, fetch the best one (or all, or a pick).
#
# The command gathers plain data into one report dict, then renders it either as text or as the
# JSON document described in docs/CLI.md. Exit status: 0 found (and fetched), 1 not found,
# 2 usage or configuration error, 3 found but the download failed, 130 interrupted.
from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click
from rich.cells import cell_len

from zwalk.cli.app import App, client_node, describe, meet_named, plural, run, running
from zwalk.cli.main import (
    EXIT_DOWNLOAD_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    global_options,
    make_app,
)
from zwalk.cli.render import TransferBar, mib_per_s, pad, peer_label
from zwalk.core import protocol as p
from zwalk.core.addresses import Endpoint
from zwalk.core.fields import Strategy
from zwalk.core.query import Query, is_bare_cid, parse_query
from zwalk.core.search_options import SearchOptions, default_ttl
from zwalk.core.units import mib
from zwalk.net import control
from zwalk.net.download import DownloadResult, download
from zwalk.net.finder import FindResult
from zwalk.net.links import PeerLink
from zwalk.net.node import Node
from zwalk.net.tasks import TaskSet
from zwalk.store import identity
from zwalk.store import state as node_state
from zwalk.store.downloads import (
    DownloadError,
    OutDirError,
    already_saved,
    check_out_dir,
    part_path,
)

log = logging.getLogger(__name__)

# A search for every version of a name goes on this long after its first hit (or as long again
# as that hit took), unless every peer has been asked sooner.
LINGER = 1.0

EXIT_CODES = (
    "Exit status: 0 found (and downloaded unless --no-download), 1 not found, 2 usage or "
    "configuration error, 3 found but the download failed, 130 interrupted."
)


@click.command(epilog=EXIT_CODES)
@click.argument("query")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Download folder (default: the running local node's download folder, else ./downloaded).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Give up the search after this many seconds (default: 10).",
)
@click.option("--no-download", is_flag=True, help="List the hits only.")
@click.option("--all", "all_", is_flag=True, help="Fetch every distinct hit, not just the best.")
@click.option(
    "--pick",
    type=click.IntRange(min=1),
    metavar="N",
    help="Fetch the Nth hit of the list instead of the best (the first).",
)
@click.option("-i", "--ignore-case", is_flag=True, help="Match names case-insensitively.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.option("--trace", is_flag=True, help="Show each hop: peer, latency, verdict.")
@click.option(
    "--strategy",
    type=click.Choice([x.value for x in Strategy]),
    help="kwalk (default): random walkers; flood; probe: one peer at a time.",
)
@click.option(
    "--walkers",
    type=click.IntRange(1, p.MAX_WALKERS // 2),
    help="Most walkers for kwalk (default 16; it starts with 1 and doubles them while "
    "nothing is found).",
)
@click.option(
    "--ttl",
    type=click.IntRange(1, p.MAX_TTL),
    help="Hops a walker (or a flood) may make (default: 64 for kwalk, 2 for flood).",
)
@global_options
@click.pass_context
def find(
    ctx: click.Context,
    query: str,
    out: Path | None,
    timeout: float | None,
    no_download: bool,
    all_: bool,
    pick: int | None,
    ignore_case: bool,
    as_json: bool,
    trace: bool,
    strategy: str | None,
    walkers: int | None,
    ttl: int | None,
) -> None:
    """Find QUERY on the LAN and download it.

    QUERY is an exact file name, a glob such as '*.iso' (quote it), or a content id: 'b3:'
    and 64 hex digits, or the 64 hex digits alone as b3sum prints them. The hits are listed
    best first (most holders, then the newest); the first is fetched unless --pick, --all or
    --no-download say otherwise."""
    if pick is not None and all_:
        raise click.UsageError("--pick fetches one hit and --all every hit: choose one")
    app = make_app(ctx, find_timeout=timeout, strategy=strategy, walkers=walkers, ttl=ttl)
    try:
        q = parse_query(query, icase=ignore_case)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="QUERY") from None
    if is_bare_cid(query) and not as_json:
        app.info(f"taking {query.strip()[:12]}… as a content id ({q.pattern[:15]}…)")
    local = node_state.read_state(app.cfg.data_dir)
    out_dir = _out_dir(app, out, local)
    if not no_download:
        try:
            check_out_dir(out_dir)
        except OutDirError as e:
            app.error(str(e))
            ctx.exit(EXIT_USAGE)
        shared = next((s for s in (local.shares if local else ()) if _inside(out_dir, s)), None)
        if shared is not None and not as_json:
            app.warn(
                f"{out_dir} is inside {shared}, which the local node shares: what you fetch "
                "there is shared too"
            )
    state = _State()
    try:
        report, code = run(
            _find(
                app,
                query,
                q,
                out_dir.absolute(),
                no_download=no_download,
                all_=all_,
                pick=pick,
                show_progress=not as_json and sys.stderr.isatty(),
                say=(lambda _: None) if as_json else app.info,
                state=state,
            )
        )
    except KeyboardInterrupt:
        if state.fetching:  # what was verified stays in the .part beside its progress record
            app.error("interrupted; run the same find again to go on from where it stopped")
        else:
            app.error("interrupted")
        ctx.exit(EXIT_INTERRUPTED)
    except OSError as e:  # this command's own node could not start (say, its port)
        app.error(describe(e))
        ctx.exit(EXIT_USAGE)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _render(app, report, trace)
    ctx.exit(code)


@dataclass(slots=True)
class _State:
    fetching: bool = False  # a download is under way (Ctrl-C now keeps a resumable .part)


def _out_dir(app: App, out: Path | None, local: node_state.LocalNode | None) -> Path:
    """Where downloads go: --out; else the running local node's download folder (which it never
    shares); else [share] downloads (default ./downloaded, from where zwalk runs)."""
    if out is not None:
        return out
    if local is not None and local.downloads is not None:
        return local.downloads
    return app.cfg.downloads


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def _options(app: App, q: Query, all_: bool, no_download: bool) -> SearchOptions:
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


async def _ask_local(app: App, q: Query, opts: SearchOptions) -> FindResult | None:
    local = node_state.read_state(app.cfg.data_dir)
    if local is None:
        return None
    msg = _find_msg(local, q, opts, app.named)
    reply = await control.request(local, msg, opts.timeout + app.status_timeout + 5)
    return FindResult.from_wire(reply, opts.strategy) if isinstance(reply, p.FindOk) else None


async def _search(
    app: App, q: Query, opts: SearchOptions, stack: contextlib.AsyncExitStack
) -> tuple[FindResult, str, Node]:
    """Search through the running local node if there is one, else from a temporary node.
    Returns the result, how the peers were found, and a running node to download with."""
    cfg = app.cfg
    local = node_state.read_state(cfg.data_dir)
    if local is not None:
        log.info("searching through the local node %s (pid %d)", local.name, local.pid)
        result = await _ask_local(app, q, opts)
        if result is not None:
            holders = _holder_endpoints(result.found)
            dl_cfg = replace(cfg, peers=tuple(holders) + cfg.peers)
            node = await stack.enter_async_context(
                running(Node(dl_cfg, identity.ephemeral(), listen=False))
            )
            # Only the holders matter to this node: no need to wait for discovery to go quiet.
            await node.peers.wait_until(
                functools.partial(node.peers.answered, holders), cfg.reply_timeout
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


def _holder_endpoints(found: list[p.FoundFile]) -> list[Endpoint]:
    return list(dict.fromkeys(Endpoint(h.host, h.port) for f in found for h in f.holders if h.port))


async def _search_again(
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
        result = await _ask_local(app, q, opts) if via == "local-node" else None
        if result is None:
            result = await _search_from(node, q, opts)
        for f in result.found:
            if f.name == changed.name and f.cid not in seen:
                await node.peers.meet(_holder_endpoints([f]), app.cfg.reply_timeout)
                return f
    return None


async def _find(
    app: App,
    text: str,
    q: Query,
    out_dir: Path,
    *,
    no_download: bool,
    all_: bool,
    pick: int | None,
    show_progress: bool,
    say: Any,
    state: _State,
) -> tuple[dict[str, Any], int]:
    opts = _options(app, q, all_, no_download)
    report: dict[str, Any] = {
        "query": {"text": text, "kind": str(q.kind), "pattern": q.pattern, "ignore_case": q.icase},
        "status": "not-found",
        "hits": [],
        "local": [],
        "out": str(out_dir),
        "download": None,
        "downloads": [],
        "failed": [],
        "errors": [],
        "walk": None,
    }
    async with contextlib.AsyncExitStack() as stack:
        result, via, node = await _search(app, q, opts, stack)
        log.info(
            "%s search: %d hits, %d of %d peers visited, %d messages, %.0f ms",
            result.strategy,
            len(result.found),
            result.visited,
            result.known,
            result.messages,
            result.elapsed * 1000,
        )
        report["peers_via"] = via
        report["errors"] += result.errors
        report["walk"] = _walk_report(result)
        report["hits"] = [_hit_report(f) for f in result.found]
        report["local"] = [_local_report(h) for h in result.local]
        if not result.found and not result.local:
            return report, EXIT_NOT_FOUND
        report["status"] = "found"
        if no_download:
            return report, EXIT_OK
        ours = {h.cid: h for h in result.local}
        if not result.found:  # only this node has it
            return report, EXIT_OK
        if pick is not None and pick > len(result.found):
            report["status"] = "bad-pick"
            report["errors"].append(f"--pick {pick}: there are only {len(result.found)} hits")
            return report, EXIT_USAGE
        chosen = result.found if all_ else [result.found[(pick or 1) - 1]]
        seen = {f.cid for f in result.found}
        for f in chosen:
            if f.cid in ours:
                continue  # the user has it already, where the list says
            entry = await _fetch_one(
                app, q, opts, via, node, f, out_dir, show_progress, say, state, seen
            )
            if "path" in entry:
                report["downloads"].append(entry)
            else:
                report["failed"].append(entry)
                report["errors"].append(f"{entry['name']}: {entry['error']}")
        report["download"] = report["downloads"][0] if report["downloads"] else None
        if report["failed"]:
            report["status"] = "download-failed"
            return report, EXIT_DOWNLOAD_FAILED
        report["status"] = "downloaded" if report["downloads"] else "found"
        return report, EXIT_OK


async def _fetch_one(
    app: App,
    q: Query,
    opts: SearchOptions,
    via: str,
    node: Node,
    f: p.FoundFile,
    out_dir: Path,
    show_progress: bool,
    say: Any,
    state: _State,
    seen: set[bytes],
) -> dict[str, Any]:
    """Download one hit (unless it is there already); the report entry of the download, or of
    the failure."""
    present = await asyncio.to_thread(already_saved, out_dir, f.name, f.cid, f.size)
    if present is not None:
        return _download_report(f, present, None)
    note = ""
    for attempt in (1, 2):
        links = [node.peers.links[ep] for ep in _holder_endpoints([f]) if ep in node.peers.links]
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
                    newer = await _search_again(app, q, opts, via, node, f, seen)
                    if newer is not None:
                        first = p.cid_to_text(f.cid)[:15]
                        note = f"the version found first ({first}…) had changed"
                        await asyncio.to_thread(_forget_part, out_dir, f)  # that version is gone
                        f = newer
                        continue
                return _failure_report(f, e)
        state.fetching = False
        return _download_report(f, got.path, got, note)
    raise AssertionError("unreachable")  # pragma: no cover


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
        result = await _ask_local(app, cid_query, wide) if via == "local-node" else None
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
            ref = p.PeerRef(node=h.node, name=h.name, host=h.host, port=h.port)
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


# --- the report -------------------------------------------------------------------------------


def _holder_report(h: p.Holder) -> dict[str, Any]:
    return {"node": h.node.hex(), "name": h.name, "endpoint": f"{h.host}:{h.port}", "path": h.path}


def _hit_report(f: p.FoundFile) -> dict[str, Any]:
    return {
        "name": f.name,
        "size": f.size,
        "cid": p.cid_to_text(f.cid),
        "mtime_ms": f.mtime_ms or None,
        "holders": [_holder_report(h) for h in f.holders],
    }


def _local_report(h: p.LocalHit) -> dict[str, Any]:
    return {"name": h.name, "size": h.size, "cid": p.cid_to_text(h.cid), "path": h.path}


def _download_report(
    f: p.FoundFile, path: Path, got: DownloadResult | None, note: str = ""
) -> dict[str, Any]:
    """A finished download; `got` is None when an identical file was there already."""
    return {
        "name": f.name,
        "path": str(path.absolute()),
        "cid": p.cid_to_text(f.cid),
        "bytes": f.size,
        "sources": got.sources if got else [],
        "excluded": got.excluded if got else {},
        "seconds": round(got.seconds, 4) if got else 0.0,
        "already_present": got.already_present if got else True,
        "fetched_bytes": got.fetched_bytes if got else 0,
        "resumed_bytes": got.resumed_bytes if got else 0,
        "received_bytes": got.received_bytes if got else 0,
        "end_game_requests": got.duplicate_requests if got else 0,
        "bytes_by_source": got.bytes_by_source if got else {},
        "note": note,
    }


def _failure_report(f: p.FoundFile, e: DownloadError) -> dict[str, Any]:
    return {
        "name": f.name,
        "cid": p.cid_to_text(f.cid),
        "bytes": f.size,
        "error": str(e),
        "part": str(e.part.absolute()) if e.part else None,
        "kept_bytes": e.kept,
        "allocated_bytes": e.allocated,
        "changed": e.changed,
    }


def _walk_report(r: FindResult) -> dict[str, Any]:
    return {
        "strategy": str(r.strategy),
        "messages": r.messages,
        "hops": r.hops,
        "hops_to_first_hit": r.first_hit_hops,
        "peers_visited": r.visited,
        "peers_known": r.known,
        "coverage": round(min(1.0, r.visited / r.known), 4) if r.known else 0.0,
        "elapsed_ms": round(r.elapsed * 1000, 3),
        "trace": [
            {
                "node": h.node.hex() if h.node else None,
                "name": h.name,
                "latency_ms": round(h.latency_us / 1000, 3),
                "verdict": h.verdict,
                "hits": h.hits,
            }
            for h in r.trace
        ],
    }


# --- the text ---------------------------------------------------------------------------------


def _render(app: App, r: dict[str, Any], trace: bool) -> None:
    """Hits on stdout; on stderr the warnings first, the outcome of each download, and (if
    something failed) one error line last, so a failure is what the user sees at the end."""
    walk = r["walk"]
    if trace and walk:
        for i, hop in enumerate(walk["trace"], 1):
            who = hop["name"] or (hop["node"] or "?")[:12]
            app.info(f"hop {i}: {who} {hop['latency_ms']:.1f} ms {hop['verdict']}")
    shown = {f"{f['name']}: {f['error']}" for f in r["failed"]}  # they get lines of their own
    if r["status"] == "bad-pick":
        shown.add(r["errors"][-1])
    for problem in r["errors"]:
        if (r["hits"] or r["local"] or walk["peers_known"]) and problem not in shown:
            app.warn(problem)
    if not r["hits"] and not r["local"]:
        app.error(_not_found(r))
        return
    _hit_table(app, r)
    for d in r["downloads"]:
        app.info(_saved(d))
    attempted = len(r["downloads"]) + len(r["failed"])
    if len(r["hits"]) > 1 and attempted == 1:
        app.info(
            f"{plural(len(r['hits']) - 1, 'other hit')} listed above: fetch one with --pick N, "
            "or all of them with --all"
        )
    mine = {h["cid"]: h for h in r["local"]}
    best = (r["hits"] or r["local"])[0]
    if best["cid"] in mine and not attempted and r["status"] != "bad-pick":
        app.info(f"you share this already, at {mine[best['cid']]['path']}: nothing to fetch")
    if r["status"] == "bad-pick":
        app.error(r["errors"][-1])
    failed = r["failed"]
    if len(failed) > 1:
        for f in failed:
            app.warn(f"{f['name']}: {f['error']}")
    if failed:
        app.error(_failure_line(failed))


def _not_found(r: dict[str, Any]) -> str:
    walk, q = r["walk"], r["query"]
    if walk["peers_known"] == 0:
        if r["errors"]:
            return (
                "no peer answered; tried: "
                + "; ".join(r["errors"])
                + ". Check the address and port, or run `zwalk doctor`"
            )
        how = (
            "the local node knows no live peer"
            if r.get("peers_via") == "local-node"
            else "nothing answered on mDNS"
        )
        return (
            f"no peers found ({how}): is `zwalk serve` running on another machine of this "
            "LAN? Name one with --peer HOST[:PORT], or run `zwalk doctor`"
        )
    asked = f"{walk['peers_visited']} of {plural(walk['peers_known'], 'peer')}"
    hints = []
    if q["kind"] != "cid" and not q["ignore_case"]:
        hints.append("names match case-sensitively: try -i")
    if q["kind"] == "name":
        hints.append(f"or a glob such as '*{q['pattern']}*'")
    hints.append("hidden files (a name starting with '.') and .part files are never shared")
    return f"not found: {q['text']!r} (asked {asked} in {walk['elapsed_ms']:.0f} ms). " + "; ".join(
        hints
    )


def _hit_table(app: App, r: dict[str, Any]) -> None:
    """Plain aligned columns, never truncated: content ids must survive copy-paste and pipes.
    Numbered when there is a choice (for --pick)."""
    mine = {h["cid"]: h for h in r["local"]}
    rows = []
    for h in r["hits"]:
        holders = ", ".join(
            peer_label(x["name"], bytes.fromhex(x["node"]), x["endpoint"]) for x in h["holders"]
        )
        if h["cid"] in mine:
            holders += ", and this node"
        rows.append((h["name"], mib(h["size"]), h["cid"], holders))
    seen = {h["cid"] for h in r["hits"]}
    for h in r["local"]:
        if h["cid"] not in seen:
            rows.append((h["name"], mib(h["size"]), h["cid"], f"this node, at {h['path']}"))
    picks = len(r["hits"])  # --pick numbers: the hits from peers; this node's own come after
    numbered = picks > 1
    wn = max(cell_len(x[0]) for x in rows)
    ws = max(len(x[1]) for x in rows)
    for i, (name, size, cid, holders) in enumerate(rows, 1):
        width = len(str(picks))
        number = (f"{i:>{width}}  " if i <= picks else " " * (width + 2)) if numbered else ""
        app.out.print(
            f"{number}{pad(name, wn)}  {size:>{ws}}  {cid}  {holders}",
            highlight=False,
            markup=False,
        )


def _saved(d: dict[str, Any]) -> str:
    if d["already_present"] and not d["fetched_bytes"]:
        return f"already here: {d['path']} ({mib(d['bytes'])}, same content id); nothing fetched"
    # the rate of what came over the network this time, not of what a resume found
    rate = d["fetched_bytes"] / d["seconds"] if d["seconds"] > 0 else 0.0
    resumed = (
        f", {mib(d['resumed_bytes'])} of it kept from an earlier attempt"
        if d["resumed_bytes"]
        else ""
    )
    who = ", ".join(s.split(" at ")[0] for s in d["sources"]) or "?"
    note = f" ({d['note']})" if d["note"] else ""
    return (
        f"saved {d['path']} ({mib(d['bytes'])}, verified{resumed}) from {who} in "
        f"{d['seconds']:.1f} s, {mib_per_s(rate)}{note}"
    )


def _failure_line(failed: list[dict[str, Any]]) -> str:
    """One line: what failed, why (each source named once), what is kept, how to go on."""
    if len(failed) > 1:
        names = ", ".join(f["name"] for f in failed)
        return f"{len(failed)} downloads failed ({names}); run the same find again to resume them"
    f = failed[0]
    line = f"{f['name']} was not downloaded: {f['error']}."
    if f["part"] and f["kept_bytes"]:
        line += (
            f" {mib(f['kept_bytes'])} of {mib(f['bytes'])} verified and kept in {f['part']}"
            f" ({mib(f['allocated_bytes'])} on disk); run the same find again to resume."
        )
    elif f["part"]:
        line += (
            f" {f['part']} holds nothing verified yet but takes {mib(f['allocated_bytes'])} on"
            " disk; run the same find again to retry, or remove it."
        )
    return line
