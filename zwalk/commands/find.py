# `zwalk find QUERY`: search the peers, list the hits, fetch the best one (or all).
#
# The command gathers plain data into one report dict, then renders it either as text or as the
# JSON document described in docs/CLI.md. Exit status: 0 found (and fetched), 1 not found,
# 2 usage or configuration error, 3 found but the download failed.
from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from zwalk import control, identity
from zwalk import protocol as p
from zwalk.app import App, run, running
from zwalk.cli import (
    EXIT_DOWNLOAD_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    global_options,
    make_app,
)
from zwalk.config import Endpoint
from zwalk.download import DownloadError, DownloadResult, download
from zwalk.finder import FindResult, SearchOptions, run_find
from zwalk.node import Node, PeerLink
from zwalk.query import Query, parse_query
from zwalk.walk import Strategy

log = logging.getLogger(__name__)


@click.command()
@click.argument("query")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Download folder (default: ./downloaded).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Give up the search after this many seconds (default: 10).",
)
@click.option("--no-download", is_flag=True, help="List the hits only.")
@click.option("--all", "all_", is_flag=True, help="Fetch every distinct hit, not just the best.")
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
    help="Most walkers for kwalk (default 16; it starts with 2 and adds more).",
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
    ignore_case: bool,
    as_json: bool,
    trace: bool,
    strategy: str | None,
    walkers: int | None,
    ttl: int | None,
) -> None:
    """Find QUERY on the LAN and download it.

    QUERY is an exact file name, a glob such as '*.iso' (quote it), or a content id 'b3:<hex>'
    as printed by b3sum."""
    app = make_app(
        ctx, downloads=out, find_timeout=timeout, strategy=strategy, walkers=walkers, ttl=ttl
    )
    try:
        q = parse_query(query, icase=ignore_case)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="QUERY") from None
    try:
        report, code = run(
            _find(
                app,
                query,
                q,
                no_download=no_download,
                all_=all_,
                show_progress=not as_json and sys.stderr.isatty(),
            )
        )
    except KeyboardInterrupt:
        # What was verified stays in the .part beside its progress record.
        app.error("interrupted; run the same find again to go on from where it stopped")
        ctx.exit(EXIT_INTERRUPTED)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _render(app, report, trace)
    ctx.exit(code)


def _options(app: App, all_: bool) -> SearchOptions:
    cfg = app.cfg
    strategy = Strategy(cfg.strategy)
    ttl = cfg.ttl or (64 if strategy is Strategy.KWALK else 2)
    return SearchOptions(
        strategy=strategy,
        timeout=cfg.find_timeout,
        want=p.MAX_HITS if all_ else 1,
        walkers=cfg.walkers,
        initial=min(cfg.initial_walkers, cfg.walkers),
        ttl=ttl,
        check_every=cfg.check_every,
    )


def _find_msg(local: control.LocalNode, q: Query, opts: SearchOptions) -> p.Find:
    return p.Find(
        req=1,
        token=local.token,
        kind=q.kind,
        pattern=q.pattern,
        icase=q.icase,
        strategy=p.SearchStrategy(str(opts.strategy)),
        walkers=opts.walkers,
        initial=opts.initial,
        ttl=opts.ttl,
        check_every=opts.check_every,
        timeout_ms=int(opts.timeout * 1000),
        want=opts.want,
    )


async def _search(
    app: App, q: Query, opts: SearchOptions, stack: contextlib.AsyncExitStack
) -> tuple[FindResult, str, Node]:
    """Search through the running local node if there is one, else from a temporary node.
    Returns the result, how the peers were found, and a running node to download with."""
    cfg = app.cfg
    local = control.read_state(cfg.data_dir)
    if local is not None:
        reply = await control.request(local, _find_msg(local, q, opts), opts.timeout + 5)
        if isinstance(reply, p.FindOk):
            result = FindResult.from_wire(reply, opts.strategy)
            holders = {Endpoint(h.host, h.port) for f in result.found for h in f.holders if h.port}
            dl_cfg = replace(cfg, peers=tuple(holders) + cfg.peers)
            node = await stack.enter_async_context(
                running(Node(dl_cfg, identity.ephemeral(), listen=False))
            )

            # Only the holders matter to this node: no need to wait for discovery to go quiet.
            await node.wait_until(functools.partial(node.answered, holders), cfg.reply_timeout)
            return result, "local-node", node
        app.warn("the local node did not answer its control endpoint; searching without it")
    # A temporary node that listens (walkers report hits to it) but does not announce itself.
    node = await stack.enter_async_context(
        running(
            Node(
                replace(cfg, port=0),
                identity.ephemeral(),
                listen=True,
                discover=True,
                announce=False,
            )
        )
    )
    await node.settle(cfg.discovery_wait)
    return await run_find(node, q, opts), "discovery", node


async def _find(
    app: App, text: str, q: Query, *, no_download: bool, all_: bool, show_progress: bool
) -> tuple[dict[str, Any], int]:
    opts = _options(app, all_)
    report: dict[str, Any] = {
        "query": {"text": text, "kind": str(q.kind), "pattern": q.pattern, "ignore_case": q.icase},
        "status": "not-found",
        "hits": [],
        "download": None,
        "downloads": [],
        "errors": [],
        "walk": None,
    }
    async with contextlib.AsyncExitStack() as stack:
        result, via, node = await _search(app, q, opts, stack)
        report["peers_via"] = via
        report["walk"] = _walk_report(result)
        report["hits"] = [_hit_report(f) for f in result.found]
        if not result.found:
            return report, EXIT_NOT_FOUND
        report["status"] = "found"
        if no_download:
            return report, EXIT_OK
        failed = False
        for f in result.found if all_ else result.found[:1]:
            links = [
                node.links[ep] for h in f.holders if (ep := Endpoint(h.host, h.port)) in node.links
            ]
            more: asyncio.Queue[PeerLink] = asyncio.Queue()
            gathering = asyncio.create_task(_gather_holders(app, node, f, opts, via, more))
            try:
                if not links:
                    raise DownloadError("no holder of it answers")
                got = await _fetch(app, f, links, show_progress, more)
            except DownloadError as e:
                report["errors"].append(f"{f.name}: {e}")
                failed = True
                continue
            finally:
                gathering.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await gathering
            report["downloads"].append(
                {
                    "name": f.name,
                    "path": str(got.path.absolute()),
                    "cid": p.cid_to_text(got.cid),
                    "bytes": got.size,
                    "sources": got.sources,
                    "excluded": got.excluded,
                    "seconds": round(got.seconds, 4),
                    "already_present": got.already_present,
                    "fetched_bytes": got.fetched_bytes,
                    "resumed_bytes": got.resumed_bytes,
                    "received_bytes": got.received_bytes,
                    "end_game_requests": got.duplicate_requests,
                    "bytes_by_source": got.bytes_by_source,
                }
            )
        report["download"] = report["downloads"][0] if report["downloads"] else None
        report["status"] = "download-failed" if failed else "downloaded"
        return report, EXIT_DOWNLOAD_FAILED if failed else EXIT_OK


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
        if via == "local-node":
            local = control.read_state(app.cfg.data_dir)
            if local is None:
                return  # the local node went away; the download node cannot walk itself
            msg = _find_msg(local, cid_query, wide)
            reply = await control.request(local, msg, wide.timeout + 5)
            if not isinstance(reply, p.FindOk):
                return
            result = FindResult.from_wire(reply, wide.strategy)
        else:
            result = await run_find(node, cid_query, wide)
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
            link = node.link_to(ref)
            if link is None:
                continue
            if await node.wait_until(functools.partial(_met, node, h.node), app.cfg.reply_timeout):
                out.put_nowait(link)


def _met(node: Node, node_id: bytes) -> bool:
    """Whether the peer has answered our hello (a link for it is up)."""
    return node.link_for(node_id) is not None


async def _fetch(
    app: App,
    f: p.FoundFile,
    links: list[PeerLink],
    show_progress: bool,
    more: asyncio.Queue[PeerLink] | None = None,
) -> DownloadResult:
    cfg = app.cfg
    fetch = functools.partial(
        download,
        links,
        cid=f.cid,
        name=f.name,
        size=f.size,
        out_dir=cfg.downloads,
        options=cfg.transfer_options(),
        more_holders=more,
    )
    if not show_progress:
        return await fetch()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[sources]} src"),
    )
    with Progress(*columns, console=app.err, transient=True) as bar:
        task = bar.add_task(f.name, total=f.size, sources=0)

        def update(done: int, total: int, sources: int) -> None:
            bar.update(task, completed=done, total=total, sources=sources)

        return await fetch(progress=update)


def _hit_report(f: p.FoundFile) -> dict[str, Any]:
    return {
        "name": f.name,
        "size": f.size,
        "cid": p.cid_to_text(f.cid),
        "holders": [
            {"node": h.node.hex(), "name": h.name, "endpoint": f"{h.host}:{h.port}", "path": h.path}
            for h in f.holders
        ],
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


def _human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _render(app: App, r: dict[str, Any], trace: bool) -> None:
    for problem in r["errors"]:
        app.warn(problem)
    walk = r["walk"]
    if trace and walk:
        for i, hop in enumerate(walk["trace"], 1):
            who = hop["name"] or (hop["node"] or "?")[:12]
            app.info(f"hop {i}: {who} {hop['latency_ms']:.1f} ms {hop['verdict']}")
    if not r["hits"] and walk["peers_known"] == 0:
        how = (
            "the local node knows no live peer"
            if r.get("peers_via") == "local-node"
            else "nothing answered on mDNS"
        )
        app.error(
            f"no peers found ({how}): is a zwalk node running on the LAN? Name one with "
            "--peer HOST:PORT, or run `zwalk doctor`"
        )
        return
    if not r["hits"]:
        app.error(
            f"not found: {r['query']['text']!r} (asked {walk['peers_visited']} of "
            f"{walk['peers_known']} peers in {walk['elapsed_ms']:.0f} ms)"
        )
        return
    # Plain aligned columns, never truncated: content ids must survive copy-paste and pipes.
    rows = [
        (
            h["name"],
            _human_size(h["size"]),
            h["cid"],
            ", ".join(x["name"] or x["endpoint"] for x in h["holders"]),
        )
        for h in r["hits"]
    ]
    wn = max(len(x[0]) for x in rows)
    ws = max(len(x[1]) for x in rows)
    for name, size, cid, holders in rows:
        app.out.print(
            f"{name:<{wn}}  {size:>{ws}}  {cid}  {holders}", highlight=False, markup=False
        )
    for d in r["downloads"]:
        # the rate of what came over the network this time, not of what a resume found
        rate = d["fetched_bytes"] / d["seconds"] / 1e6 if d["seconds"] > 0 else 0.0
        verb = "already had" if d["already_present"] else "saved"
        resumed = (
            f", {_human_size(d['resumed_bytes'])} of it kept from an earlier attempt"
            if d["resumed_bytes"]
            else ""
        )
        app.info(
            f"{verb} {d['path']} ({_human_size(d['bytes'])}, verified{resumed}) from "
            f"{len(d['sources'])} source(s) in {d['seconds']:.2f} s, {rate:.0f} MB/s"
        )
