# What every command shares: the resolved configuration, the consoles, and running a node.
from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from rich.console import Console

from zwalk import control, identity
from zwalk.config import Config, Endpoint
from zwalk.node import Node

T = TypeVar("T")


@dataclass(slots=True)
class App:
    cfg: Config
    verbose: int = 0
    out: Console = field(default_factory=lambda: Console(soft_wrap=True))  # data
    err: Console = field(default_factory=lambda: Console(stderr=True, soft_wrap=True))  # messages

    def info(self, text: str) -> None:
        self.err.print(text, highlight=False)

    def warn(self, text: str) -> None:
        self.err.print(f"[yellow]warning:[/] {text}", highlight=False)

    def error(self, text: str) -> None:
        self.err.print(f"[bold red]error:[/] {text}", highlight=False)


def setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@contextlib.asynccontextmanager
async def running(node: Node) -> AsyncIterator[Node]:
    """Run a node for the duration of the block; bind errors are raised here."""
    ready: asyncio.Future[Node] = asyncio.get_running_loop().create_future()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(node.run(ready))
        await ready
        try:
            yield node
        finally:
            task.cancel()


async def peer_source(app: App) -> tuple[Node, str]:
    """A temporary, non-listening node for a client command, and how it learns its peers:
    from the running local node's live table when there is one ("local-node"), else by
    browsing mDNS for a short while ("discovery"). Static peers are added either way."""
    cfg = app.cfg
    local = control.read_state(cfg.data_dir)
    status = await control.status(local) if local is not None else None
    if status is not None:
        live = tuple(
            Endpoint(m.host, m.port) for m in status.members if m.state == "alive" and m.port
        )
        node_cfg = replace(cfg, peers=tuple(dict.fromkeys(live + cfg.peers)))
        return Node(node_cfg, identity.ephemeral(), listen=False, discover=False), "local-node"
    return Node(cfg, identity.ephemeral(), listen=False, discover=True), "discovery"


def first_error(e: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups."""
    while isinstance(e, BaseExceptionGroup):
        inner = [x for x in e.exceptions if not isinstance(x, asyncio.CancelledError)]
        e = (inner or list(e.exceptions))[0]
    return e


def run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except BaseExceptionGroup as eg:
        raise first_error(eg) from None


@contextlib.contextmanager
def signals(extra: Callable[[], None] | None = None) -> Iterator[asyncio.Event]:
    """An event set by SIGINT or SIGTERM while the block runs (Ctrl-C on Windows arrives as
    KeyboardInterrupt instead); `extra` is called on each signal too."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def handler() -> None:
        stop.set()
        if extra is not None:
            extra()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, handler)
    try:
        yield stop
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
