# `zwalk find QUERY`: search the peers, list the hits, fetch the best one (or all, or a pick,
# or the ones the user chooses when asked on a terminal), into the download folder, exactly at
# `-o FILE`, or to stdout (`-o -`); and `zwalk find FOLDER/` (cli/folder.py).
#
# The command gathers plain data into one report dict, then renders it either as text or as the
# JSON document described in docs/CLI.md. Exit status: 0 found (and fetched), 1 not found,
# 2 usage or configuration error, 3 found but the download failed, 130 interrupted.
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from zwalk.cli.app import App, describe, run
from zwalk.cli.fetching import State, Target, copy_local, fetch_one
from zwalk.cli.folder import fetch_folder, render_folder
from zwalk.cli.main import (
    EXIT_DOWNLOAD_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    global_options,
    make_app,
)
from zwalk.cli.output import check_options, output_file, write_stdout
from zwalk.cli.prompt import ask_which, can_ask
from zwalk.cli.report import hit_report, hit_table, local_report, render_find, walk_report
from zwalk.cli.searching import options, search
from zwalk.core import protocol as p
from zwalk.core.fields import Strategy
from zwalk.core.query import Query, is_bare_cid, parse_folder, parse_query
from zwalk.store import state as node_state
from zwalk.store.downloads import OutDirError, check_out_dir, content_at

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
    "-o",
    "--output",
    metavar="FILE",
    help="Save the one file fetched exactly as FILE; '-' writes it to stdout, once all of it "
    "is verified, and nothing else.",
)
@click.option(
    "--force", is_flag=True, help="With -o FILE: replace a FILE that holds other content."
)
@click.option(
    "-q", "--quiet", is_flag=True, help="No progress bar, hit list or messages: only problems."
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
    output: str | None,
    force: bool,
    quiet: bool,
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
    --no-download say otherwise (on a terminal, find asks which). A QUERY that ends in '/'
    names a folder as `zwalk ls` shows paths (photos/2024/): every file under it is fetched
    into --out, keeping the tree."""
    try:
        folder = parse_folder(query)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="QUERY") from None
    check_options(
        folder, output, force, quiet, out, no_download, all_, pick, ignore_case, as_json, trace
    )
    app = make_app(ctx, find_timeout=timeout, strategy=strategy, walkers=walkers, ttl=ttl)
    to_stdout = output == "-"
    if to_stdout:
        app = replace(app, out=app.err)  # stdout carries the file's bytes and nothing else
    q = None
    if folder is None:
        try:
            q = parse_query(query, icase=ignore_case)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="QUERY") from None
        if is_bare_cid(query) and not as_json and not quiet:
            app.info(f"taking {query.strip()[:12]}… as a content id ({q.pattern[:15]}…)")
    local = node_state.read_state(app.cfg.data_dir)
    out_dir = _out_dir(app, out, local)
    file = output_file(output) if output and not to_stdout else None
    if not no_download and not to_stdout:
        where = file.parent if file is not None else out_dir
        try:
            check_out_dir(where)
        except OutDirError as e:
            app.error(str(e))
            ctx.exit(EXIT_USAGE)
        shared = next((s for s in (local.shares if local else ()) if _inside(where, s)), None)
        if local is not None and local.downloads is not None and _inside(where, local.downloads):
            shared = None  # the node's own download folder: it never shares that
        if shared is not None and not as_json:
            app.warn(
                f"{where} is inside {shared}, which the local node shares: what you fetch "
                "there is shared too"
            )
    state = State()
    show_progress = not (as_json or quiet or to_stdout) and sys.stderr.isatty()
    with contextlib.ExitStack() as scope:
        if to_stdout:  # a private folder, removed at the end whatever happens
            temp = scope.enter_context(
                tempfile.TemporaryDirectory(prefix="zwalk-stdout-", ignore_cleanup_errors=True)
            )
            target = Target(Path(temp), stdout=True)
        elif file is not None:
            target = Target(file.parent, file, force)
        else:
            target = Target(out_dir.absolute())
        ask = not (all_ or pick or as_json or no_download or quiet or to_stdout) and can_ask()
        try:
            if folder is not None:
                report, code = run(
                    fetch_folder(
                        app,
                        folder,
                        target.folder,
                        no_download=no_download,
                        show_progress=show_progress,
                        state=state,
                    )
                )
            else:
                assert q is not None  # noqa: S101 - set above for every query but a folder
                say = (lambda _: None) if (as_json or quiet) else app.info
                report, code = run(
                    _find(
                        app,
                        query,
                        q,
                        target,
                        no_download=no_download,
                        all_=all_,
                        pick=pick,
                        ask=ask,
                        show_progress=show_progress,
                        say=say,
                        state=state,
                    )
                )
        except KeyboardInterrupt:
            if state.fetching and to_stdout:
                app.error("interrupted; -o - keeps nothing (its temporary file is removed)")
            elif state.fetching:  # what was verified stays in the .part beside its record
                app.error("interrupted; run the same find again to go on from where it stopped")
            else:
                app.error("interrupted")
            ctx.exit(EXIT_INTERRUPTED)
        except OSError as e:  # this command's own node could not start (say, its port)
            app.error(describe(e))
            ctx.exit(EXIT_USAGE)
        problem = write_stdout(report) if to_stdout and report.get("downloads") else None
    if as_json:
        click.echo(json.dumps(report, indent=2))
    elif folder is not None:
        render_folder(app, report, quiet=quiet)
    else:
        render_find(app, report, trace, quiet=quiet, listed=state.listed, chose=state.chose)
    if problem is not None:
        app.error(problem)
        code = EXIT_DOWNLOAD_FAILED
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
    target: Target,
    *,
    no_download: bool,
    all_: bool,
    pick: int | None,
    ask: bool,
    show_progress: bool,
    say: Any,
    state: State,
) -> tuple[dict[str, Any], int]:
    opts = options(app, q, all_, no_download)
    exact = target.file is not None or target.stdout  # -o: the user wants these bytes, here
    report: dict[str, Any] = {
        "query": {"text": text, "kind": str(q.kind), "pattern": q.pattern, "ignore_case": q.icase},
        "status": "not-found",
        "hits": [],
        "local": [],
        "out": str(target.folder),
        "output": "-" if target.stdout else str(target.file) if target.file else None,
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
        hits = list(result.found)
        if exact and not hits:  # only this node shares it, but -o wants its bytes
            hits = [
                p.FoundFile(name=h.name, size=h.size, cid=h.cid, holders=()) for h in ours.values()
            ]
        if not hits:  # only this node has it
            return report, EXIT_OK
        if pick is not None and pick > len(hits):
            report["status"] = "bad-pick"
            report["errors"].append(f"--pick {pick}: there are only {len(hits)} hits")
            return report, EXIT_USAGE
        chosen = hits if all_ else [hits[(pick or 1) - 1]]
        if ask and len(hits) > 1:
            hit_table(app, report)
            state.listed = state.chose = True
            picked = await ask_which(app.err, len(hits), many=target.file is None)
            chosen = [hits[i] for i in picked]
        if target.file is not None and not target.force and chosen:
            f = chosen[0]
            if await asyncio.to_thread(content_at, target.file, f.cid, f.size) == "other":
                report["status"] = "output-exists"
                report["errors"].append(
                    f"{target.file} exists and holds other content: not overwritten (remove it, "
                    "choose another -o FILE, or add --force to replace it once the download "
                    "is verified)"
                )
                return report, EXIT_USAGE
        seen = {f.cid for f in hits}
        for f in chosen:
            if f.cid in ours and exact:
                entry = await copy_local(f, Path(ours[f.cid].path), target)
            elif f.cid in ours:
                continue  # the user has it already, where the list says
            else:
                entry = await fetch_one(
                    app, q, opts, via, node, f, target, show_progress, say, state, seen
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
