# `zwalk status`: what the node running here does: what it shares, its peers, and the downloads
# under way or interrupted in its download folder.
from __future__ import annotations

import json
from typing import Any

import click

from zwalk.cli.app import App, plural, run
from zwalk.cli.main import EXIT_NOT_FOUND, EXIT_OK, global_options, make_app
from zwalk.core import protocol as p
from zwalk.core.units import mib
from zwalk.net import control
from zwalk.store import state as node_state
from zwalk.store.inprogress import partials


@click.command(
    epilog="Exit status: 0 a node runs here and answered, 1 none runs (or it does not answer), "
    "2 usage or configuration error."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@global_options
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show what the node that `zwalk serve` runs here shares, its peers and its downloads."""
    app = make_app(ctx)
    local = node_state.read_state(app.cfg.data_dir)
    reply = run(control.status(local, app.status_timeout)) if local is not None else None
    if local is None or reply is None:
        why = "does not answer" if local is not None else "runs here"
        app.error(
            f"no zwalk node {why} (data dir {app.cfg.data_dir}); start one with `zwalk serve`"
        )
        ctx.exit(EXIT_NOT_FOUND)
    doc = report(reply, local)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        render(app, doc)
    ctx.exit(EXIT_OK)


def report(st: p.StatusOk, local: node_state.LocalNode) -> dict[str, Any]:
    folder = local.downloads
    parts = partials(folder) if folder is not None else []
    return {
        "node": st.node.hex(),
        "name": st.name,
        "pid": local.pid,
        "endpoints": [f"{e.host}:{e.port}" for e in st.endpoints],
        "shares": list(st.shares),
        "files": st.files,
        "bytes": st.bytes,
        "hashed": st.hashed,
        "peers": sum(1 for m in st.members if m.state == "alive"),
        "connecting": sum(1 for m in st.members if m.state != "alive"),
        "downloads_folder": str(folder) if folder else None,
        "downloads": [
            {
                "name": x.name,
                "part": str(x.part),
                "cid": p.cid_to_text(x.cid) if x.cid else None,
                "size": x.size,
                "verified": x.verified,
                "state": "fetching" if x.active else ("paused" if x.cid else "unreadable"),
            }
            for x in parts
        ],
    }


def render(app: App, doc: dict[str, Any]) -> None:
    say = app.out.print
    say(f"[bold]{doc['name']}[/] ({doc['node'][:12]}), pid {doc['pid']}, listening on "
        f"{', '.join(doc['endpoints']) or '?'}", highlight=False)  # fmt: skip
    shares = ", ".join(doc["shares"]) or "nothing"
    say(
        f"shares {plural(doc['files'], 'file')}, {mib(doc['bytes'])}, from {shares} "
        f"({doc['hashed']} hashed since it started, the rest from its index cache)",
        highlight=False,
    )
    connecting = f", {doc['connecting']} being contacted" if doc["connecting"] else ""
    say(f"{plural(doc['peers'], 'live peer')}{connecting} (`zwalk peers` lists them)")
    if not doc["downloads"]:
        say(f"no downloads under way in {doc['downloads_folder']}", highlight=False)
        return
    say(f"downloads in {doc['downloads_folder']}:", highlight=False)
    for d in doc["downloads"]:
        share = f"{100 * d['verified'] // d['size']}%" if d["size"] else "?"
        size = mib(d["size"]) if d["size"] else "?"
        say(f"  {d['state']:8} {share:>4} of {size:>10}  {d['name']}", highlight=False)
    if any(d["state"] == "paused" for d in doc["downloads"]):
        say("a paused download goes on when the same `zwalk find` runs again")
