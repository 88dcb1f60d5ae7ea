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

from zwalk import identity
from zwalk import protocol as p
from zwalk.app import App, run, running
from zwalk.cli import global_options, make_app
from zwalk.commands.find import _human_size
from zwalk.config import Config
from zwalk.download import download
from zwalk.index import file_blake3
from zwalk.node import Node
from zwalk.query import parse_query
from zwalk.search import probe

SAMPLES = [  # (name, size in KiB); the last node gets the big file the demo fetches
    ("notes.txt", 4),
    ("holiday.jpg", 2048),
    ("report-2024.pdf", 700),
    ("song.flac", 5120),
    ("slides.odp", 1500),
]
LOOPBACK = "127.0.0.1"


@click.command()
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
    app = make_app(ctx)
    ok = run(_demo(app, nodes, size_mib))
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
        )
        node = Node(cfg, identity.ephemeral(), shares=[share])
        await stack.enter_async_context(running(node))
        swarm.append(node)
        files = ", ".join(e.name for e in node.index.entries)
        say(f"  {node.name} on {node.endpoints[0]}: {files}")

    out = root / "client" / "downloaded"
    ccfg = replace(
        base,
        name="demo-client",
        data_dir=root / "client" / "data",
        downloads=out,
        peers=tuple(e for n in swarm for e in n.endpoints),
    )
    client = await stack.enter_async_context(
        running(Node(ccfg, identity.ephemeral(), listen=False))
    )
    await client.settle(5)
    links = client.alive_links()
    if len(links) != len(swarm):
        app.warn(f"only {len(links)} of {len(swarm)} demo nodes answered")

    say(f"\n$ zwalk find {target}")
    search = await probe(links, parse_query(target), timeout=10, reply_timeout=2)
    for i, hop in enumerate(search.trace, 1):
        name = hop.peer.info.name if hop.peer.info else str(hop.peer.endpoint)
        say(f"  hop {i}: asked {name:<8} {hop.latency * 1000:6.1f} ms  {hop.verdict}")
    ranked = search.ranked()
    if not ranked:
        app.error("the demo file was not found")
        return False
    hit = ranked[0]
    say(f"  found {hit.name} ({_human_size(hit.size)}) {p.cid_to_text(hit.cid)}")
    started = time.monotonic()
    result = await download(
        list(hit.holders),
        cid=hit.cid,
        name=hit.name,
        size=hit.size,
        out_dir=out,
        window=client.cfg.window,
        chunk_timeout=client.cfg.chunk_timeout,
        info_timeout=client.cfg.reply_timeout,
    )
    seconds = time.monotonic() - started
    source = shares[-1] / target
    same = file_blake3(result.path) == file_blake3(source)
    rate = result.size / seconds / 1e6 if seconds else 0.0
    say(
        f"  downloaded {result.path.name}: {_human_size(result.size)} in {seconds:.2f} s "
        f"({rate:.0f} MB/s), every chunk and the whole file verified with BLAKE3"
    )
    say(f"  byte-identical to the source: {'yes' if same else 'NO'}")
    say("\nstopping the nodes and removing the demo folder")
    return same
