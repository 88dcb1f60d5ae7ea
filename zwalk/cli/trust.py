# `zwalk trust`: the allowlist (which keys may join in allowlist mode) and the keys pinned on
# first use for peers named without one.
from __future__ import annotations

import json

import click

from zwalk.cli.app import plural
from zwalk.cli.main import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, global_options, make_app
from zwalk.core import keys
from zwalk.store import trust as store
from zwalk.store.config import ConfigError, parse_endpoint, parse_peer


@click.group()
def trust() -> None:
    """Which nodes this node trusts.

    In allowlist mode (--trust allowlist, or [trust] mode = allowlist) only the keys listed
    here may connect, and only they are met or told about; `zwalk id` on a host prints its
    key. Changes apply to the next connection, without a restart."""


@trust.command()
@click.argument("key")
@click.option("--label", default="", help="A name to list it by (e.g. the host's).")
@global_options
@click.pass_context
def add(ctx: click.Context, key: str, label: str) -> None:
    """Allow KEY (64 hex digits, or a KEY@HOST:PORT line from `zwalk id`)."""
    app = make_app(ctx)
    raw = _key(key)
    added = store.add_trusted(app.cfg.allowlist, raw, label.strip())
    node = keys.node_id_for(raw).hex()
    what = "added" if added else "already listed"
    app.info(f"{what}: node {node}{f' ({label})' if label else ''} in {app.cfg.allowlist}")
    if app.cfg.trust != "allowlist":
        app.warn("the trust mode is open: the list applies once it is allowlist")
    ctx.exit(EXIT_OK)


@trust.command()
@click.argument("which")
@global_options
@click.pass_context
def remove(ctx: click.Context, which: str) -> None:
    """Remove the key WHICH names: its label, or the start of the key or of the node id."""
    app = make_app(ctx)
    hits = store.remove_trusted(app.cfg.allowlist, which)
    if not hits:
        app.error(f"no key in {app.cfg.allowlist} matches {which!r}")
        ctx.exit(EXIT_NOT_FOUND)
    if len(hits) > 1:
        app.error(f"{which!r} matches {len(hits)} keys; say more:")
        for t in hits:
            app.info(f"  {keys.to_text(t.key)} {t.label}")
        ctx.exit(EXIT_USAGE)
    app.info(f"removed node {hits[0].node.hex()} from {app.cfg.allowlist}")
    ctx.exit(EXIT_OK)


@trust.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@global_options
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """The allowlist and the keys pinned on first use."""
    app = make_app(ctx)
    listed = store.read_allowlist(app.cfg.allowlist)
    pins = store.read_pins(app.cfg.pins)
    if as_json:
        doc = {
            "mode": app.cfg.trust,
            "allowlist": str(app.cfg.allowlist),
            "trusted": [
                {"key": keys.to_text(t.key), "node": t.node.hex(), "label": t.label} for t in listed
            ],
            "pinned": [{"peer": str(ep), "key": keys.to_text(k)} for ep, k in pins.items()],
        }
        click.echo(json.dumps(doc, indent=2))
        ctx.exit(EXIT_OK)
    app.info(f"trust mode {app.cfg.trust}; {app.cfg.allowlist}: {plural(len(listed), 'key')}")
    for t in listed:
        click.echo(f"{keys.to_text(t.key)}  {t.node.hex()[:12]}  {t.label}".rstrip())
    if pins:
        app.info(f"pinned on first use ({app.cfg.pins}):")
        for ep, k in pins.items():
            click.echo(f"{ep}  {keys.to_text(k)}")
    ctx.exit(EXIT_OK)


@trust.command()
@click.argument("endpoint", metavar="HOST:PORT")
@global_options
@click.pass_context
def forget(ctx: click.Context, endpoint: str) -> None:
    """Forget the key pinned for HOST:PORT: the next connection learns it anew (after that
    host was reinstalled, or changed its key)."""
    app = make_app(ctx)
    try:
        ep = parse_endpoint(endpoint)
    except ConfigError as e:
        raise click.BadParameter(str(e)) from None
    if not store.forget_pin(app.cfg.pins, ep):
        app.error(f"no key is pinned for {ep} in {app.cfg.pins}")
        ctx.exit(EXIT_NOT_FOUND)
    app.info(f"forgot the key pinned for {ep}")
    ctx.exit(EXIT_OK)


def _key(text: str) -> bytes:
    try:
        if "@" in text:
            _, key = parse_peer(text)
            assert key is not None  # noqa: S101 -- a KEY@ form always has one
            return key
        return keys.from_text(text)
    except (ConfigError, keys.BadKey) as e:
        raise click.BadParameter(str(e), param_hint="KEY") from None
