# `zwalk find QUERY`: search the peers, list the hits, fetch the best one (or all).
#
# The command gathers plain data into one report dict, then renders it either as text or as the
# JSON document described in docs/CLI.md. Exit status: 0 found (and fetched), 1 not found,
# 2 usage or configuration error, 3 found but the download failed.
from __future__ import annotations

import functools
import json
import sys
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

from zwalk import protocol as p
from zwalk.app import App, peer_source, run, running
from zwalk.cli import EXIT_DOWNLOAD_FAILED, EXIT_NOT_FOUND, EXIT_OK, global_options, make_app
from zwalk.download import DownloadError, DownloadResult, download
from zwalk.node import PeerLink
from zwalk.query import Query, parse_query
from zwalk.search import probe
from zwalk.walk import Found, ProbeSearch


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
) -> None:
    """Find QUERY on the LAN and download it.

    QUERY is an exact file name, a glob such as '*.iso' (quote it), or a content id 'b3:<hex>'
    as printed by b3sum."""
    app = make_app(ctx, downloads=out, find_timeout=timeout)
    try:
        q = parse_query(query, icase=ignore_case)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="QUERY") from None
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
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _render(app, report, trace)
    ctx.exit(code)


async def _find(
    app: App, text: str, q: Query, *, no_download: bool, all_: bool, show_progress: bool
) -> tuple[dict[str, Any], int]:
    node, via = await peer_source(app)
    cfg = node.cfg
    report: dict[str, Any] = {
        "query": {"text": text, "kind": str(q.kind), "pattern": q.pattern, "ignore_case": q.icase},
        "status": "not-found",
        "hits": [],
        "download": None,
        "downloads": [],
        "errors": [],
        "walk": None,
    }
    async with running(node):
        await node.settle(cfg.discovery_wait if via == "discovery" else cfg.reply_timeout)
        links = node.alive_links()
        report["peers_via"] = via
        search = await probe(
            links,
            q,
            timeout=cfg.find_timeout,
            reply_timeout=cfg.reply_timeout,
            want=sys.maxsize if all_ else 1,
        )
        report["walk"] = _walk_report(search, peers_known=len(links))
        ranked = search.ranked()
        report["hits"] = [_hit_report(f) for f in ranked]
        if not ranked:
            return report, EXIT_NOT_FOUND
        report["status"] = "found"
        if no_download:
            return report, EXIT_OK
        failed = False
        for f in ranked if all_ else ranked[:1]:
            try:
                result = await _fetch(app, f, show_progress)
            except DownloadError as e:
                report["errors"].append(f"{f.name}: {e}")
                failed = True
                continue
            report["downloads"].append(
                {
                    "name": f.name,
                    "path": str(result.path.absolute()),
                    "cid": p.cid_to_text(result.cid),
                    "bytes": result.size,
                    "sources": result.sources,
                    "excluded": result.excluded,
                    "seconds": round(result.seconds, 4),
                    "already_present": result.already_present,
                }
            )
        report["download"] = report["downloads"][0] if report["downloads"] else None
        report["status"] = "download-failed" if failed else "downloaded"
        return report, EXIT_DOWNLOAD_FAILED if failed else EXIT_OK


async def _fetch(app: App, f: Found[PeerLink], show_progress: bool) -> DownloadResult:
    cfg = app.cfg
    fetch = functools.partial(
        download,
        list(f.holders),
        cid=f.cid,
        name=f.name,
        size=f.size,
        out_dir=cfg.downloads,
        window=cfg.window,
        chunk_timeout=cfg.chunk_timeout,
        info_timeout=cfg.reply_timeout,
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


def _peer_report(link: PeerLink) -> dict[str, Any]:
    info = link.info
    return {
        "node": info.node.hex() if info else None,
        "name": info.name if info else None,
        "endpoint": str(link.endpoint),
    }


def _hit_report(f: Found[PeerLink]) -> dict[str, Any]:
    return {
        "name": f.name,
        "size": f.size,
        "cid": p.cid_to_text(f.cid),
        "holders": [{**_peer_report(link), "path": path} for link, path in f.holders.items()],
    }


def _walk_report(s: ProbeSearch[PeerLink], peers_known: int) -> dict[str, Any]:
    return {
        "strategy": "probe",
        "messages": s.messages,
        "hops": len(s.trace),
        "hops_to_first_hit": s.first_hit_hops,
        "peers_visited": s.visited,
        "peers_known": peers_known,
        "coverage": round(s.visited / peers_known, 4) if peers_known else 0.0,
        "elapsed_ms": round(s.elapsed(s.ended_at or s.started) * 1000, 3),
        "trace": [
            {
                **_peer_report(h.peer),
                "latency_ms": round(h.latency * 1000, 3),
                "verdict": str(h.verdict),
                "hits": h.hits,
            }
            for h in s.trace
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
            app.info(
                f"hop {i}: {hop['name'] or '?'} ({hop['endpoint']}) "
                f"{hop['latency_ms']:.1f} ms {hop['verdict']}"
            )
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
        rate = d["bytes"] / d["seconds"] / 1e6 if d["seconds"] > 0 else 0.0
        verb = "already had" if d["already_present"] else "saved"
        app.info(
            f"{verb} {d['path']} ({_human_size(d['bytes'])}, verified) from "
            f"{len(d['sources'])} source(s) in {d['seconds']:.2f} s, {rate:.0f} MB/s"
        )
