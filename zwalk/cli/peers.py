# `zwalk peers`: the live peer set, through the running local node or by browsing mDNS.
from __future__ import annotations

import asyncio
import json
from typing import Any

import click
from rich.live import Live

from zwalk.cli.app import App, client_node, meet_named, run, running
from zwalk.cli.main import EXIT_INTERRUPTED, EXIT_NOT_FOUND, EXIT_OK, global_options, make_app
from zwalk.cli.report import peers_report, render_peers
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
        return peers_report(status, "local-node")
    return peers_report(node.status(), "discovery") if node is not None else None


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
        app.out.print(render_peers(app, doc, show_all))
    return any(r["state"] == "alive" for r in doc["peers"])


async def _watch(app: App, show_all: bool) -> bool:
    with Live(console=app.out, auto_refresh=False) as live:
        while True:  # through the local node while it answers, else by browsing ourselves
            local = state.read_state(app.cfg.data_dir)
            if local is not None and await control.status(local) is not None:
                while (doc := await _gather(app, None, local)) is not None:
                    live.update(render_peers(app, doc, show_all), refresh=True)
                    await asyncio.sleep(1.0)
                continue
            node = client_node(app)
            async with running(node):
                await meet_named(app, node)
                while True:
                    doc = await _gather(app, node, None)
                    assert doc is not None  # noqa: S101
                    live.update(render_peers(app, doc, show_all), refresh=True)
                    await asyncio.sleep(1.0)
