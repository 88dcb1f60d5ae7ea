# `zwalk peers`: the live peer set, through the running local node or by browsing mDNS.
from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from typing import Any

import click
from rich.live import Live
from rich.table import Table

from zwalk import control
from zwalk import protocol as p
from zwalk.app import App, peer_source, run, running
from zwalk.cli import global_options, make_app
from zwalk.node import Node


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.option("--watch", is_flag=True, help="Keep a live table on screen until Ctrl-C.")
@click.option("--all", "show_all", is_flag=True, help="Include peers still being contacted.")
@global_options
@click.pass_context
def peers(ctx: click.Context, as_json: bool, watch: bool, show_all: bool) -> None:
    """List the peers this node can see (through the running node, or by asking the LAN)."""
    app = make_app(ctx)
    if watch and as_json:
        raise click.UsageError("--watch shows a live table; use --json without it")
    try:
        run(_watch(app, show_all) if watch else _once(app, as_json, show_all))
    except KeyboardInterrupt:
        pass


async def _gather(node: Node | None, local: control.LocalNode | None) -> dict[str, Any] | None:
    """One snapshot: from the local node's control endpoint, or from our own temporary node;
    None when the local node stopped answering and there is no node of our own."""
    status = await control.status(local) if local is not None else None
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
    this = None
    if via == "local-node":
        this = {
            "node": status.node.hex(),
            "name": status.name,
            "files": status.files,
            "bytes": status.bytes,
            "endpoints": [f"{e.host}:{e.port}" for e in status.endpoints],
        }
    return {"via": via, "self": this, "peers": rows}


def _table(doc: dict[str, Any], show_all: bool) -> Table:
    via = "the local node" if doc["via"] == "local-node" else "mDNS"
    rows = [r for r in doc["peers"] if show_all or r["state"] == "alive"]
    table = Table(
        title=f"{len(rows)} peers (via {via})", box=None, header_style="bold", title_justify="left"
    )
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


async def _once(app: App, as_json: bool, show_all: bool) -> None:
    local = control.read_state(app.cfg.data_dir)
    doc = await _gather(None, local) if local is not None else None
    if doc is None:
        node, _ = await peer_source(app)
        async with running(node):
            await node.settle(app.cfg.discovery_wait)
            doc = await _gather(node, None)
    assert doc is not None  # noqa: S101 -- a node of our own always answers
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        app.out.print(_table(doc, show_all))


async def _watch(app: App, show_all: bool) -> None:
    with Live(console=app.out, auto_refresh=False) as live:
        while True:  # through the local node while it answers, else by browsing ourselves
            local = control.read_state(app.cfg.data_dir)
            if local is not None and await control.status(local) is not None:
                while (doc := await _gather(None, local)) is not None:
                    live.update(_table(doc, show_all), refresh=True)
                    await asyncio.sleep(1.0)
                continue
            node, _ = await peer_source(app)
            async with running(node):
                while True:
                    doc = await _gather(node, None)
                    assert doc is not None  # noqa: S101
                    live.update(_table(doc, show_all), refresh=True)
                    await asyncio.sleep(1.0)
