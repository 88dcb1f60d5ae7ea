# `zwalk find QUERY`: search the peers, list the hits, fetch the best one (or all, or a pick).
#
# The command gathers plain data into one report dict, then renders it either as text or as the
# JSON document described in docs/CLI.md. Exit status: 0 found (and fetched), 1 not found,
# 2 usage or configuration error, 3 found but the download failed, 130 interrupted.
from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from zwalk.cli.app import App, describe, run
from zwalk.cli.fetching import State, fetch_one
from zwalk.cli.main import (
    EXIT_DOWNLOAD_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    global_options,
    make_app,
)
from zwalk.cli.report import hit_report, local_report, render_find, walk_report
from zwalk.cli.searching import options, search
from zwalk.core import protocol as p
from zwalk.core.fields import Strategy
from zwalk.core.query import Query, is_bare_cid, parse_query
from zwalk.store import state as node_state
from zwalk.store.downloads import (
    OutDirError,
    check_out_dir,
)

log = logging.getLogger(__name__)

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
    state = State()
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
        render_find(app, report, trace)
    ctx.exit(code)


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
    state: State,
) -> tuple[dict[str, Any], int]:
    opts = options(app, q, all_, no_download)
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
        result, via, node = await search(app, q, opts, stack)
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
        report["walk"] = walk_report(result)
        report["hits"] = [hit_report(f) for f in result.found]
        report["local"] = [local_report(h) for h in result.local]
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
            entry = await fetch_one(
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


# --- the report -------------------------------------------------------------------------------


# --- the text ---------------------------------------------------------------------------------
