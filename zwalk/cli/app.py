# What every command shares: the resolved configuration, the consoles, and running a node.
from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console

from zwalk.core import protocol as p
from zwalk.core.addresses import Endpoint
from zwalk.net.diagnosis import hello_wait
from zwalk.net.node import Node
from zwalk.store import identity
from zwalk.store.config import Config, ConfigError

T = TypeVar("T")


@dataclass(slots=True)
class App:
    cfg: Config
    verbose: int = 0
    named_peers: tuple[Endpoint, ...] = ()  # given with --peer to this command
    out: Console = field(default_factory=lambda: Console(soft_wrap=True))  # data
    err: Console = field(default_factory=lambda: Console(stderr=True, soft_wrap=True))  # messages

    def info(self, text: str) -> None:
        self.err.print(text, highlight=False)

    def warn(self, text: str) -> None:
        self.err.print(f"[yellow]warning:[/] {text}", highlight=False)

    def error(self, text: str) -> None:
        self.err.print(f"[bold red]error:[/] {text}", highlight=False)

    @property
    def named(self) -> tuple[p.Address, ...]:
        """The --peer endpoints of this command, for a control request."""
        keys = self.cfg.keys
        return tuple(
            p.Address(host=e.host, port=e.port, key=keys.get(e, b"")) for e in self.named_peers
        )

    @property
    def status_timeout(self) -> float:
        """How long a status request may take: a named peer gets its hello first."""
        return 2.0 + (hello_wait(self.cfg) if self.named_peers else 0.0)


def plural(n: int, word: str, words: str | None = None) -> str:
    """'1 peer', '3 peers'."""
    return f"{n} {word if n == 1 else (words or word + 's')}"


def describe(e: OSError) -> str:
    """An OSError as a sentence: its message and file, without the '[Errno 98]' prefix."""
    text = e.strerror or str(e)
    if e.filename is not None and str(e.filename) not in text:
        text = f"{e.filename}: {text}"
    return text


def setup_logging(verbose: int, log_file: Path | None = None) -> None:
    """Quiet by default: a warning reads like the command's own ('warning: ...'); -v adds what
    each step does, with times and where it comes from, and -vv every message. A log file gets
    the same records, appended, with times and the process id (several zwalk commands may share
    one): at least -v's, so that a quiet command still leaves a useful log."""
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(level)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        if verbose > 0
        else _PlainFormatter()
    )
    handlers: list[logging.Handler] = [handler]
    if log_file is not None:
        try:
            to_file = logging.FileHandler(log_file, mode="a", encoding="utf-8")
        except OSError as e:
            raise ConfigError(
                f"--log-file: cannot write to {log_file}: {e.strerror or e}"
            ) from None
        to_file.setLevel(min(level, logging.INFO))
        to_file.setFormatter(
            logging.Formatter("%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s")
        )
        handlers.append(to_file)
    logging.basicConfig(level=min(h.level for h in handlers), handlers=handlers, force=True)


class _PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


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


def client_node(app: App, *, listen: bool = False, discover: bool = True) -> Node:
    """A temporary node for a client command that runs without a local node: it browses mDNS
    (unless told not to) and knows the configured static peers. The command's --peer ones
    are met with `meet_named`, so that a failure names them as such."""
    cfg = replace(app.cfg, peers=tuple(e for e in app.cfg.peers if e not in app.named_peers))
    if listen:  # walkers report hits to it; it does not announce itself
        cfg = replace(cfg, port=0)
    return Node(cfg, client_identity(cfg), listen=listen, discover=discover, announce=False)


def client_identity(cfg: Config) -> identity.Identity:
    """Whom a command's temporary node proves to be: a throw-away key in open mode (so it is
    never mistaken for the serving node); in allowlist mode the node's own key, the one its
    peers have listed."""
    if cfg.trust == "allowlist":
        return identity.load_or_create(cfg.data_dir)
    return identity.ephemeral()


async def meet_named(app: App, node: Node) -> None:
    """Say hello to the command's --peer peers and wait until each answered or failed."""
    await node.peers.meet(app.named_peers, timeout=hello_wait(app.cfg))


def first_error(e: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups."""
    while isinstance(e, BaseExceptionGroup):
        inner = [x for x in e.exceptions if not isinstance(x, asyncio.CancelledError)]
        e = (inner or list(e.exceptions))[0]
    return e


class WakingSelectorLoop(asyncio.SelectorEventLoop):
    """A SelectorEventLoop that a signal wakes at once. On Windows select() is not interrupted
    by Ctrl-C, so the handler that stops the command would wait for the next timer or packet;
    as the ProactorEventLoop does, the signal module writes a byte to the loop's self-pipe
    socket instead (set_wakeup_fd), and select() returns."""

    def run_forever(self) -> None:
        sock = getattr(self, "_csock", None)  # the self-pipe's write end
        if sock is None or threading.current_thread() is not threading.main_thread():
            super().run_forever()
            return
        old = signal.set_wakeup_fd(sock.fileno())
        try:
            super().run_forever()
        finally:
            signal.set_wakeup_fd(old)


def loop_factory(platform: str | None = None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop a command runs on (None: asyncio's default). On Windows the default is
    the ProactorEventLoop, which has no add_reader: pyzmq's asyncio sockets would poll through
    a selector thread of their own, with a warning. zwalk asks the loop for no subprocesses or
    pipes, so there it runs on a SelectorEventLoop, chosen per run rather than by a global
    policy (policies are deprecated from Python 3.14)."""
    if (platform or sys.platform) == "win32":
        return WakingSelectorLoop
    return None


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine to the end on a new event loop (as asyncio.run does)."""
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(coro)
    except BaseExceptionGroup as eg:
        raise first_error(eg) from None


@contextlib.contextmanager
def signals(extra: Callable[[], None] | None = None) -> Iterator[asyncio.Event]:
    """An event set by SIGINT or SIGTERM (Ctrl-C or Ctrl-Break on Windows) while the block runs;
    `extra` is called on each signal too."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def handler() -> None:
        stop.set()
        if extra is not None:
            extra()

    # Windows has no loop signal handlers: a plain handler hands the signal to the loop.
    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, handler)
        except NotImplementedError:
            previous[sig] = signal.getsignal(sig)
        except RuntimeError:
            pass
    if previous:
        extra_sigs: list[int] = [signal.SIGBREAK] if hasattr(signal, "SIGBREAK") else []
        for num in [*previous, *extra_sigs]:
            previous.setdefault(num, signal.getsignal(num))
            signal.signal(num, lambda *_: loop.call_soon_threadsafe(handler))
    try:
        yield stop
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        for num, old in previous.items():
            signal.signal(num, old)
