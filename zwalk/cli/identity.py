# `zwalk id`: who this node is, as lines another user can paste: `--peer KEY@HOST:PORT` on their
# side reaches this node and checks, through CurveZMQ, that it is this node.
from __future__ import annotations

import json

import click

from zwalk.cli.main import EXIT_OK, global_options, make_app
from zwalk.core import keys
from zwalk.core.addresses import Endpoint
from zwalk.net.netif import default_addresses, resolve
from zwalk.store import identity
from zwalk.store import state as node_state
from zwalk.store.config import Config, parse_endpoint

WILDCARD = "0.0.0.0"  # noqa: S104 -- what node.json says when the node listens everywhere


@click.command(name="id")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@global_options
@click.pass_context
def id_(ctx: click.Context, as_json: bool) -> None:
    """Print this node's id and public key, one KEY@HOST:PORT line per address.

    Another user gives one of these lines as --peer (or in [peers] static) to reach this node;
    `zwalk trust add` takes one too. The key is created in the data dir if there is none yet."""
    app = make_app(ctx)
    cfg = app.cfg
    me = identity.load_or_create(cfg.data_dir)
    running = node_state.read_state(cfg.data_dir)
    endpoints = _where(cfg, running.endpoints if running else None)
    key = keys.to_text(me.key)
    lines = [f"{key}@{ep}" for ep in endpoints]
    if as_json:
        doc = {
            "node": me.node_id.hex(),
            "key": key,
            "name": running.name if running else cfg.name,
            "running": running is not None,
            "peers": lines,
        }
        click.echo(json.dumps(doc, indent=2))
    else:
        state = "serving" if running else f"not serving (zwalk serve listens on port {cfg.port})"
        app.info(f"node {me.node_id.hex()} ({cfg.name}), {state}; give a peer one of:")
        for line in lines or [f"{key}@HOST:{cfg.port}"]:
            click.echo(line)
    ctx.exit(EXIT_OK)


def _where(cfg: Config, listening: list[str] | None) -> list[Endpoint]:
    """Where peers reach this node: a running node's endpoints, or where serve would listen;
    a wildcard stands for each non-loopback address of this host."""
    if listening is not None:
        eps = [parse_endpoint(e) for e in listening]
    else:
        hosts = resolve(cfg.interfaces) if cfg.interfaces else [WILDCARD]
        eps = [Endpoint(h, cfg.port) for h in hosts]
    out: list[Endpoint] = []
    for ep in eps:
        hosts = (default_addresses() or ["127.0.0.1"]) if ep.host == WILDCARD else [ep.host]
        out += [Endpoint(h, ep.port) for h in hosts]
    return list(dict.fromkeys(out))
