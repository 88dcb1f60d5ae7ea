# `zwalk serve`: share folders and answer peers until SIGINT/SIGTERM.
from __future__ import annotations

import asyncio
from pathlib import Path

import click

from zwalk.cli.app import App, describe, run, running, signals
from zwalk.cli.main import global_options, make_app
from zwalk.core.protocol import MAX_TEXT_BYTES
from zwalk.net.node import Node
from zwalk.store import identity
from zwalk.store.config import DEFAULT_PORT


@click.command(
    epilog="Exit status: 0 after leaving cleanly (Ctrl-C or SIGTERM), 1 if the node cannot "
    "start (say, its port is taken), 2 for a usage or configuration error."
)
@click.argument("dirs", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    help=f"Port to listen on (default {DEFAULT_PORT}, or [node] port; 0: any free port).",
)
@click.option("--name", help="Name shown to peers (default: host name).")
@click.option(
    "--downloads",
    type=click.Path(file_okay=False, path_type=Path),
    help="Download folder, never shared (default: ./downloaded).",
)
@global_options
@click.pass_context
def serve(
    ctx: click.Context,
    dirs: tuple[Path, ...],
    port: int | None,
    name: str | None,
    downloads: Path | None,
) -> None:
    """Share DIRS (default: the current folder) and answer peers until Ctrl-C.

    Everything in the shared folders (but hidden files, .part files and the download folder)
    can be searched and fetched by any node on the LAN (every link is encrypted; --trust
    allowlist admits only the keys in trusted.keys)."""
    if name is not None and not 0 < len(name.encode()) <= MAX_TEXT_BYTES:
        raise click.BadParameter("must be 1 to 1024 bytes", param_hint="--name")
    app = make_app(ctx, port=port, name=name, downloads=downloads)
    shares = list(dirs) or list(app.cfg.shares) or [Path.cwd()]
    try:
        run(_serve(app, shares))
    except OSError as e:
        app.error(describe(e))
        ctx.exit(1)
    except KeyboardInterrupt:  # Windows has no SIGINT handler in asyncio
        app.info("stopped")


def _exposure(shares: list[Path]) -> str:
    """A warning when a share is, or holds, the user's home folder (or the filesystem root)."""
    home = Path.home().resolve()
    for share in shares:
        where = share.resolve()
        if where == home or home.is_relative_to(where):
            return (
                f"sharing {where}, which holds your whole home folder, with everyone on this LAN:"
                " in open trust mode any node on the network can search and fetch these files."
                " To share less, name a folder: zwalk serve ~/Public"
            )
    return ""


async def _serve(app: App, shares: list[Path]) -> None:
    cfg = app.cfg
    warning = _exposure(shares)
    if warning:
        app.warn(warning)
    ident = identity.load_or_create(cfg.data_dir)
    node = Node(cfg, ident, shares=shares, discover=True, state_dir=cfg.data_dir)
    main = asyncio.current_task()
    ready = stopping = False

    def on_signal() -> None:
        # Before the node is up (the first scan can take long), stop at once; after, leave.
        nonlocal stopping
        if not ready and not stopping and main is not None:
            stopping = True
            main.cancel()

    with signals(on_signal) as stop:
        try:
            async with running(node):
                ready = True
                eps = ", ".join(e.zmq for e in node.local.endpoints)
                index = node.shares.index
                app.info(
                    f"[bold]{node.local.name}[/] ({ident.short}) sharing {len(index)} files, "
                    f"{index.total_bytes:,} bytes, from {', '.join(str(s) for s in shares)}"
                )
                mdns = ", ".join(node.local.mdns_addresses)
                app.info(f"listening on {eps}; announced over mDNS on {mdns}; Ctrl-C to leave")
                await stop.wait()
        except asyncio.CancelledError:
            # Only our own cancel ends here (asyncio.timeout's rule): any other goes on.
            if not stopping or main is None or main.uncancel() > 0:
                raise
            app.info("stopped while starting")
            return
    app.info("left cleanly")
