# `zwalk peers`: the live peer set, through the running local node or by browsing mDNS.
from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from typing import Any

import click
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from zwalk.cli.app import App, client_node, meet_named, plural, run, running
from zwalk.cli.main import EXIT_INTERRUPTED, EXIT_NOT_FOUND, EXIT_OK, global_options, make_app
from zwalk.core import protocol as p
from zwalk.net import control
from zwalk.net.node import Node
from zwalk.store import state


@click.command(
    epilog="Exit status: 0 if a live peer was found, 1 if none, 2 for a usage or configuration "
    "error, 130 interrupted (but for --watch, which Ctrl-C ends: 0)."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.option("--watch", is_flag=True, help="Keep a live table on screen until Ctrl-C.")
@click.option("--all", "show_all", is_flag=True, help="Include peers still being contacted.")
@global_options
@click.pass_context
def peers(ctx: click.Context, as_json: bool, watch: bool, show_all: bool) -> None:
    """List the peers this node can see (through the running node, or by asking the LAN).

    Peers named with --peer are asked too, and listed if they answer; those that do not are
    listed below the table with the reason."""
    app = make_app(ctx)
    if watch and as_json:
        raise click.UsageError("--watch shows a live table; use --json without it")
    try:
        found = run(_watch(app, show_all) if watch else _once(app, as_json, show_all))
    except KeyboardInterrupt:
        ctx.exit(EXIT_OK if watch else EXIT_INTERRUPTED)  # Ctrl-C is how --watch ends
    ctx.exit(EXIT_OK if found else EXIT_NOT_FOUND)


async def _gather(
    app: App, node: Node | None, local: state.LocalNode | None
) -> dict[str, Any] | None:
    """One snapshot: from the local node's control endpoint, or from our own temporary node;
    None when the local node stopped answering and there is no node of our own."""
    status = (
        await control.status(local, app.status_timeout, app.named) if local is not None else None
    )
    if status is not None:
        return report(status, "local-node")
    return report(node.status(), "discovery") if node is not None else None


def report(status: p.StatusOk, via: str) -> dict[str, Any]:
    now_ms = time.time() * 1000

    def iso(ms: int) -> str:
        return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")

    rows = []
    for m in status.members:
        rows.append(
            {
                "node": m.node.hex() if m.node else None,
                "name": m.name,
                "addresses": [m.host],
                "port": m.port,
                "version": m.version,
                "state": m.state,
                "learned": [{"how": x.how, "detail": x.detail} for x in m.learned],
                "first_seen": iso(m.first_seen_ms),
                "last_seen": iso(m.last_seen_ms),
                "age_s": round((now_ms - m.first_seen_ms) / 1000, 3),
                "idle_s": round((now_ms - m.last_seen_ms) / 1000, 3),
                "rtt_ms": None if m.rtt_us is None else round(m.rtt_us / 1000, 3),
                "files": m.files,
            }
        )
    rows.sort(key=lambda r: (r["name"], r["node"] or ""))
    unreachable = [
        {
            "node": f.node.hex() if f.node else None,
            "name": f.name,
            "endpoint": f"{f.host}:{f.port}",
            "learned": [{"how": x.how, "detail": x.detail} for x in f.learned],
            "reason": f.reason,
            "ago_s": round(f.ago_ms / 1000, 3),
        }
        for f in status.failed
    ]
    this = None
    if via == "local-node":
        this = {
            "node": status.node.hex(),
            "name": status.name,
            "files": status.files,
            "bytes": status.bytes,
            "endpoints": [f"{e.host}:{e.port}" for e in status.endpoints],
        }
    return {"via": via, "self": this, "peers": rows, "unreachable": unreachable}


def _table(doc: dict[str, Any], show_all: bool) -> Table:
    via = "the local node" if doc["via"] == "local-node" else "mDNS"
    rows = [r for r in doc["peers"] if show_all or r["state"] == "alive"]
    title = f"{plural(len(rows), 'peer')} (via {via})"
    table = Table(title=title, box=None, header_style="bold", title_justify="left")
    for col, kw in (
        ("node", {"no_wrap": True}),
        ("name", {}),
        ("address", {"no_wrap": True}),
        ("v", {}),
        ("learned", {}),
        ("age", {"justify": "right"}),
        ("seen", {"justify": "right"}),
        ("rtt", {"justify": "right"}),
        ("files", {"justify": "right"}),
    ):
        table.add_column(col, **kw)
    for r in rows:
        # The table names the interface only; --json has the address too.
        learned = ", ".join(
            x["how"] + (f" {x['detail'].split(' (')[0]}" if x["detail"] else "")
            for x in r["learned"]
        )
        table.add_row(
            (r["node"] or "?")[:12],
            r["name"],
            f"{r['addresses'][0]}:{r['port']}",
            str(r["version"] or ""),
            learned,
            _ago(r["age_s"]),
            _ago(r["idle_s"]) + " ago",
            "" if r["rtt_ms"] is None else f"{r['rtt_ms']:.1f} ms",
            str(r["files"]),
        )
    return table


def _ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _render(app: App, doc: dict[str, Any], show_all: bool) -> Group:
    """The table, then the peers that did not answer, or a hint when there is nothing."""
    parts: list[Any] = []
    alive = [r for r in doc["peers"] if r["state"] == "alive"]
    if alive or (show_all and doc["peers"]):
        parts.append(_table(doc, show_all))
    else:
        where = (
            "the local node knows no live peer"
            if doc["via"] == "local-node"
            else f"nothing answered on mDNS within {app.cfg.discovery_wait:g} s"
        )
        parts.append(Text(f"no peers found: {where}", style="bold"))
    if doc["unreachable"]:
        parts.append(Text("did not answer:", style="yellow"))
        for u in doc["unreachable"]:
            who = f"{u['name']} ({u['node'][:12]}) at " if u["node"] else ""
            parts.append(Text(f"  {who}{u['endpoint']}: {u['reason']}", style="yellow"))
    if not alive:
        parts.append(
            Text(
                "Is `zwalk serve` running on another machine of this LAN? Name one with "
                "--peer HOST[:PORT], or run `zwalk doctor` to see what blocks discovery."
            )
        )
    return Group(*parts)


async def _once(app: App, as_json: bool, show_all: bool) -> bool:
    local = state.read_state(app.cfg.data_dir)
    doc = await _gather(app, None, local) if local is not None else None
    if doc is None:
        node = client_node(app)
        async with running(node):
            await meet_named(app, node)
            await node.peers.settle(app.cfg.discovery_wait)
            await node.peers.hear_back()  # a peer that does not answer is listed with the reason
            doc = await _gather(app, node, None)
    assert doc is not None  # noqa: S101 -- a node of our own always answers
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        app.out.print(_render(app, doc, show_all))
    return any(r["state"] == "alive" for r in doc["peers"])


async def _watch(app: App, show_all: bool) -> bool:
    with Live(console=app.out, auto_refresh=False) as live:
        while True:  # through the local node while it answers, else by browsing ourselves
            local = state.read_state(app.cfg.data_dir)
            if local is not None and await control.status(local) is not None:
                while (doc := await _gather(app, None, local)) is not None:
                    live.update(_render(app, doc, show_all), refresh=True)
                    await asyncio.sleep(1.0)
                continue
            node = client_node(app)
            async with running(node):
                await meet_named(app, node)
                while True:
                    doc = await _gather(app, node, None)
                    assert doc is not None  # noqa: S101
                    live.update(_render(app, doc, show_all), refresh=True)
                    await asyncio.sleep(1.0)
