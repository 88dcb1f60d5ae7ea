# `zwalk ls [PEER]`: what one peer shares (or this host's running node), page by page.
#
# PEER is a name, a node id prefix or [KEY@]HOST[:PORT]. Names and ids are looked up in the
# running local node's peer table, else among the peers mDNS and --peer find in a moment. The
# listing streams: a peer with a million files neither blocks nor floods (it answers a page of
# at most 1000 files per request).
from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
from dataclasses import dataclass
from typing import Any

import click

from zwalk.cli.app import App, client_node, meet_named, plural, run, running
from zwalk.cli.main import EXIT_INTERRUPTED, EXIT_NOT_FOUND, EXIT_OK, global_options, make_app
from zwalk.cli.render import peer_label
from zwalk.core import protocol as p
from zwalk.core.addresses import Endpoint
from zwalk.net import control
from zwalk.net.diagnosis import hello_wait
from zwalk.net.listing import ListError, pages
from zwalk.net.node import Node
from zwalk.store import identity
from zwalk.store import state as node_state
from zwalk.store.config import ConfigError, parse_peer

MIN_ID_PREFIX = 4  # hex digits of a node id a user may type


class NoPeer(Exception):
    """The peer cannot be found or reached; the message says why and what is known."""


@dataclass(frozen=True, slots=True)
class Target:
    endpoint: Endpoint
    key: bytes | None
    label: str


@click.command(
    epilog="Exit status: 0 listed, 1 no such peer (or it cannot be reached) or nothing matched, "
    "2 usage or configuration error, 130 interrupted."
)
@click.argument("target", metavar="[PEER]", required=False)
@click.option("-m", "--match", "pattern", metavar="PATTERN", help="Only names matching PATTERN "
              "(an exact name or a glob such as '*.iso': quote it).")  # fmt: skip
@click.option("-i", "--ignore-case", is_flag=True, help="Match names case-insensitively.")
@click.option("--under", metavar="PATH", default="", help="Only files under PATH (a shared "
              "folder as `ls` shows it, such as photos/2024).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@global_options
@click.pass_context
def ls(
    ctx: click.Context,
    target: str | None,
    pattern: str | None,
    ignore_case: bool,
    under: str,
    as_json: bool,
) -> None:
    """List what PEER shares: size, modification time, content id and path of each file.

    PEER is a peer's name, the first digits of its node id (as `zwalk peers` shows them), or
    [KEY@]HOST[:PORT]. Without PEER: what the node that `zwalk serve` runs here shares."""
    app = make_app(ctx)
    prefix = under.strip("/") + "/" if under.strip("/") else ""
    if pattern is not None and ("/" in pattern or "\n" in pattern):
        raise click.BadParameter("matches file names: leave out the folders", param_hint="-m")
    try:
        doc = run(_ls(app, target, prefix, pattern or "", ignore_case, as_json))
    except NoPeer as e:
        app.error(str(e))
        ctx.exit(EXIT_NOT_FOUND)
    except KeyboardInterrupt:
        app.error("interrupted")
        ctx.exit(EXIT_INTERRUPTED)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    ctx.exit(EXIT_OK if doc["files"] or doc["listed"] else EXIT_NOT_FOUND)


async def _ls(
    app: App, peer: str | None, prefix: str, pattern: str, icase: bool, as_json: bool
) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        node, target = await _reach(app, peer, stack)
        link = node.peers.links.get(target.endpoint)
        if link is None or link.info is None or not node.peers.alive(target.endpoint):
            raise NoPeer(f"{target.label} does not answer{_why(node, target.endpoint)}")
        who = {
            "node": link.info.node.hex(),
            "name": link.info.name,
            "endpoint": str(target.endpoint),
        }
        files: list[dict[str, Any]] = []
        listed = total = size = 0
        try:
            async for page in pages(
                link, prefix=prefix, pattern=pattern, icase=icase, timeout=app.cfg.reply_timeout * 5
            ):
                total = page.total
                listed += len(page.files)
                size += sum(h.size for h in page.files)
                if as_json:
                    files += [_row(h) for h in page.files]
                else:
                    for h in page.files:
                        click.echo(_line(h))
        except ListError as e:
            raise NoPeer(str(e)) from None
        if not as_json:
            shared = f"of {total} shared by " if (prefix or pattern) else "shared by "
            app.info(
                f"{plural(listed, 'file')}, {_size(size)}, {shared}"
                f"{peer_label(link.info.name, link.info.node)} at {target.endpoint}"
            )
        return {
            "peer": who,
            "under": prefix,
            "match": pattern or None,
            "ignore_case": icase,
            "listed": listed,
            "bytes": size,
            "total": total,
            "files": files,
        }


def _row(h: p.Hit) -> dict[str, Any]:
    return {
        "name": h.name,
        "path": h.path,
        "size": h.size,
        "cid": p.cid_to_text(h.cid),
        "mtime_ms": h.mtime_ms or None,
        "modified": _iso(h.mtime_ms),
    }


def _iso(ms: int) -> str | None:
    if not ms:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")


def _line(h: p.Hit) -> str:
    when = (
        dt.datetime.fromtimestamp(h.mtime_ms / 1000).strftime("%Y-%m-%d %H:%M")
        if h.mtime_ms
        else "?".ljust(16)
    )
    return f"{_size(h.size):>9}  {when}  {p.cid_to_text(h.cid)[:15]}  {h.path}"


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


# --- finding the peer -------------------------------------------------------------------------


async def _reach(
    app: App, peer: str | None, stack: contextlib.AsyncExitStack
) -> tuple[Node, Target]:
    """A running node of our own that has said hello to the target, and the target."""
    local = node_state.read_state(app.cfg.data_dir)
    if peer is None:
        if local is None:
            raise NoPeer(
                "no zwalk node runs here (with this data dir): name a PEER, or start "
                "`zwalk serve` first"
            )
        target = _local_target(app, local)
    else:
        target = await _lookup(app, peer, local, stack)
    node = await stack.enter_async_context(running(client_node(app, listen=False, discover=False)))
    keys = {target.endpoint: target.key} if target.key else {}
    await node.peers.meet([target.endpoint], keys, timeout=hello_wait(app.cfg))
    return node, target


def _local_target(app: App, local: node_state.LocalNode) -> Target:
    try:
        ep = parse_peer(local.endpoints[0])[0]
    except (ConfigError, IndexError):
        raise NoPeer(f"the local node's state in {app.cfg.data_dir} names no endpoint") from None
    if ipaddress.ip_address(ep.host).is_unspecified:
        ep = Endpoint("127.0.0.1", ep.port)
    key = identity.load_or_create(app.cfg.data_dir).key
    return Target(ep, key, f"the local node {peer_label(local.name, local.node)}")


def _is_address(text: str) -> bool:
    if "@" in text or ":" in text:
        return True
    with contextlib.suppress(ValueError):
        ipaddress.IPv4Address(text)
        return True
    return False


async def _lookup(
    app: App,
    peer: str,
    local: node_state.LocalNode | None,
    stack: contextlib.AsyncExitStack,
) -> Target:
    if _is_address(peer):
        try:
            ep, key = parse_peer(peer)
        except ConfigError as e:
            raise click.BadParameter(str(e), param_hint="PEER") from None
        return Target(ep, key or app.cfg.keys.get(ep), str(ep))
    members = await _members(app, local, stack)
    return _match(peer, members)


async def _members(
    app: App, local: node_state.LocalNode | None, stack: contextlib.AsyncExitStack
) -> list[p.MemberInfo]:
    """The peers this host knows: the local node's table, else a quick look of our own."""
    if local is not None:
        status = await control.status(local, app.status_timeout, app.named)
        if status is not None:
            return list(status.members)
    node = await stack.enter_async_context(running(client_node(app)))
    await meet_named(app, node)
    await node.peers.settle(app.cfg.discovery_wait)
    await node.peers.hear_back()
    return list(node.status().members)


def _match(peer: str, members: list[p.MemberInfo]) -> Target:
    alive = [m for m in members if m.state == "alive" and m.node is not None]
    text = peer.strip()
    hits = [m for m in alive if m.name == text] or [
        m for m in alive if m.name.casefold() == text.casefold()
    ]
    if not hits and len(text) >= MIN_ID_PREFIX and all(c in "0123456789abcdefABCDEF" for c in text):
        hits = [m for m in alive if m.node is not None and m.node.hex().startswith(text.lower())]
    if len(hits) == 1:
        m = hits[0]
        return Target(Endpoint(m.host, m.port), m.key or None, peer_label(m.name, m.node))
    known = ", ".join(
        f"{peer_label(m.name, m.node)} at {m.host}:{m.port}" for m in (hits or alive)[:10]
    )
    if hits:
        raise NoPeer(f"{peer!r} names {len(hits)} peers: {known}; give more of the node id")
    if not alive:
        raise NoPeer(f"no peer named {peer!r}: no live peer found (see `zwalk doctor`)")
    raise NoPeer(f"no peer named {peer!r} (or with a node id starting so); live peers: {known}")


def _why(node: Node, ep: Endpoint) -> str:
    lost = node.peers.membership.lost.get(ep)
    return f": {lost.reason}" if lost is not None else ""
