# `zwalk demo`: a small swarm on 127.0.0.1 with generated files, a find and a verified download.
# Everything lives in a temporary folder that is removed afterwards; nothing leaves loopback.
from __future__ import annotations

import contextlib
import os
import random
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import click

from zwalk.cli.app import App, describe, run, running
from zwalk.cli.main import global_options, make_app, used
from zwalk.cli.render import mib_per_s
from zwalk.core import protocol as p
from zwalk.core.addresses import Endpoint
from zwalk.core.outcome import Found
from zwalk.core.query import parse_query
from zwalk.core.search_options import SearchOptions
from zwalk.core.units import mib
from zwalk.net.download import download
from zwalk.net.node import Node
from zwalk.store import identity
from zwalk.store.config import Config
from zwalk.store.downloads import DownloadError
from zwalk.store.hashing import file_blake3

SAMPLES = [  # (name, size in KiB); the last node gets the big file the demo fetches
    ("notes.txt", 4),
    ("holiday.jpg", 2048),
    ("report-2024.pdf", 700),
    ("song.flac", 5120),
    ("slides.odp", 1500),
]
LOOPBACK = "127.0.0.1"


@click.command(epilog="Exit status: 0 on a verified download, 3 otherwise.")
@click.option(
    "--nodes",
    type=click.IntRange(2, 16),
    default=3,
    show_default=True,
    help="How many nodes to start.",
)
@click.option(
    "--size",
    "size_mib",
    type=click.IntRange(1, 1024),
    default=32,
    show_default=True,
    help="Size of the file the demo fetches, in MiB.",
)
@global_options
@click.pass_context
def demo(ctx: click.Context, nodes: int, size_mib: int) -> None:
    """Start a few nodes on 127.0.0.1, find a file among them and download it."""
    given = [f"--{k.replace('_', '-')}" for k in ("interface", "peer") if used(ctx, k)]
    given += [f"--{k.replace('_', '-')}" for k in ("data_dir", "config") if used(ctx, k)]
    if given:
        raise click.UsageError(
            f"the demo runs on 127.0.0.1 in a folder of its own: {', '.join(given)} do not "
            "apply (use them with serve, find and peers)"
        )
    app = make_app(ctx)
    try:
        ok = run(_demo(app, nodes, size_mib))
    except (DownloadError, OSError) as e:
        app.error(f"the demo failed: {describe(e) if isinstance(e, OSError) else e}")
        ok = False
    ctx.exit(0 if ok else 3)


def _make_shares(root: Path, nodes: int, size_mib: int, seed: int) -> tuple[list[Path], str]:
    rng = random.Random(seed)  # noqa: S311 -- sample content, not security
    shares = []
    for i in range(nodes):
        share = root / f"node{i + 1}" / "share"
        share.mkdir(parents=True)
        for name, kib in SAMPLES[i % len(SAMPLES) :: nodes] or SAMPLES[:1]:
            (share / name).write_bytes(rng.randbytes(kib * 1024))
        shares.append(share)
    target = "demo-video.mkv"
    (shares[-1] / target).write_bytes(rng.randbytes(size_mib * 1024 * 1024))
    return shares, target


async def _demo(app: App, nodes: int, size_mib: int) -> bool:
    with tempfile.TemporaryDirectory(prefix="zwalk-demo-") as tmp:
        async with contextlib.AsyncExitStack() as stack:
            return await _run_demo(app, Path(tmp), stack, nodes, size_mib)


async def _run_demo(
    app: App, root: Path, stack: contextlib.AsyncExitStack, nodes: int, size_mib: int
) -> bool:
    say = app.info
    say(f"[bold]zwalk demo[/]: {nodes} nodes on {LOOPBACK}, files in {root} (removed afterwards)")
    shares, target = _make_shares(root, nodes, size_mib, seed=os.getpid())
    base = replace(app.cfg, port=0, interfaces=(LOOPBACK,), peers=(), shares=())
    swarm: list[Node] = []
    for i, share in enumerate(shares):
        cfg: Config = replace(
            base,
            name=f"demo-{i + 1}",
            data_dir=root / f"node{i + 1}" / "data",
            downloads=root / f"node{i + 1}" / "downloaded",
            # Each knows the ones before it (they learn it back from its hello): a full mesh,
            # as mDNS makes one on a LAN, without sending mDNS anywhere.
            peers=tuple(e for n in swarm for e in n.local.endpoints),
        )
        node = Node(cfg, identity.ephemeral(), shares=[share])
        await stack.enter_async_context(running(node))
        swarm.append(node)
        files = ", ".join(e.name for e in node.shares.index.entries)
        say(f"  {node.local.name} on {node.local.endpoints[0]}: {files}")

    out = root / "client" / "downloaded"
    ccfg = replace(
        base,
        name="demo-client",
        data_dir=root / "client" / "data",
        downloads=out,
        peers=tuple(e for n in swarm for e in n.local.endpoints),
    )
    client = await stack.enter_async_context(
        running(Node(ccfg, identity.ephemeral(), listen=True, announce=False))
    )
    await client.peers.settle(5)
    if len(client.peers.alive_links()) != len(swarm):
        app.warn(f"only {len(client.peers.alive_links())} of {len(swarm)} demo nodes answered")
    for node in swarm:  # wait until the swarm is a full mesh, so walkers can go anywhere
        await node.peers.settle(5)

    say(f"\n$ zwalk find {target}")
    result = await client.find(parse_query(target), SearchOptions(timeout=10))
    names = {n.identity.node_id: n.local.name for n in swarm}
    say(
        f"  a random walker went {result.hops} hop(s) in {result.elapsed * 1000:.1f} ms, "
        f"{result.messages} message(s), {result.visited} of {result.known} nodes visited"
    )
    for h in result.trace:
        who = names.get(h.node, h.name) if h.node else h.name
        say(f"  {who} reported a {h.verdict} after {h.latency_us / 1000:.1f} ms")
    if not result.found:
        app.error("the demo file was not found")
        return False
    f = result.found[0]
    links = [
        client.peers.links[ep]
        for h in f.holders
        if (ep := Endpoint(h.host, h.port)) in client.peers.links
    ]
    ranked = [Found(cid=f.cid, name=f.name, size=f.size, holders={link: "" for link in links})]
    hit = ranked[0]
    say(f"  found {hit.name} ({mib(hit.size)}) {p.cid_to_text(hit.cid)}")
    started = time.monotonic()
    got = await download(
        list(hit.holders),
        cid=hit.cid,
        name=hit.name,
        size=hit.size,
        out_dir=out,
        options=client.cfg.transfer_options(),
    )
    seconds = time.monotonic() - started
    source = shares[-1] / target
    same = file_blake3(got.path) == file_blake3(source)
    rate = got.size / seconds if seconds else 0.0
    say(
        f"  downloaded {got.path.name}: {mib(got.size)} in {seconds:.2f} s "
        f"({mib_per_s(rate)}), every chunk and the whole file verified with BLAKE3"
    )
    say(f"  byte-identical to the source: {'yes' if same else 'NO'}")
    say("\nstopping the nodes and removing the demo folder")
    return same
