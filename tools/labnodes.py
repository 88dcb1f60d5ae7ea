# zwalk nodes on lab hosts, and reading their view of the world through the control endpoint
# (tests and the tools in this folder use it; tests/conftest.py puts tools/ on the path).
from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from netlab import Lab

from zwalk.core import protocol as p
from zwalk.net import control
from zwalk.store import state


def short_tmp() -> Iterator[Path]:
    """A short base path: ipc socket paths must stay under ~100 bytes."""
    d = Path(tempfile.mkdtemp(prefix="zwl", dir="/tmp"))  # noqa: S108 -- ours, removed after
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


# A `serve` whose interpreter start and imports are done before it is told to go (a line on
# stdin): what a start storm costs once the CPU of starting 30 interpreters is out of the way.
HELD = (
    "import sys, watchfiles, zeroconf.asyncio, zwalk.net.discovery, zwalk.cli.main as m;"
    " sys.stdin.readline(); sys.argv[0] = 'zwalk'; m.main()"
)


@dataclass
class LabNode:
    lab: Lab
    host: int
    base: Path
    proc: subprocess.Popen[bytes] | None = None
    node: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    _interface_args: list[str] | None = None

    @property
    def address(self) -> str:
        return self.lab.hosts[self.host].address

    @property
    def port(self) -> int:
        """The port its node listens on (once started)."""
        local = state.read_state(self.data)
        if local is None:
            raise AssertionError(f"h{self.host} is not running")
        return int(local.endpoints[0].rsplit(":", 1)[1])

    @property
    def data(self) -> Path:
        return self.base / f"h{self.host}" / "data"

    @property
    def share(self) -> Path:
        return self.base / f"h{self.host}" / "share"

    @property
    def home(self) -> Path:
        """The folder commands run in (downloads land in its `downloaded/`)."""
        return self.base / f"h{self.host}"

    def _cmd(self, args: tuple[str, ...]) -> list[str]:
        self.home.mkdir(parents=True, exist_ok=True)
        return [
            sys.executable,
            "-m",
            "zwalk",
            *args,
            "--interface",
            self.address,
            "--data-dir",
            str(self.data),
        ]

    def zwalk(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a zwalk command on this host, on its address and with its data dir."""
        return self.lab.run(self.host, self._cmd(args), timeout=timeout, cwd=self.home)

    def zwalk_bg(self, *args: str) -> subprocess.Popen[str]:
        """Start a zwalk command on this host without waiting (stdout and stderr piped)."""
        return self.lab.spawn(  # type: ignore[return-value]
            self.host,
            self._cmd(args),
            cwd=self.home,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def zwalk_under(
        self, prefix: Sequence[str], *args: str, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """`zwalk` run through another program on this host (strace, nsenter into a mount
        namespace of the caller's: that resets the working folder, so `prefix` says it)."""
        cmd = [*prefix, *self._cmd(args)]
        return self.lab.run(self.host, cmd, timeout=timeout, cwd=self.home)

    def zwalk_bg_under(self, prefix: Sequence[str], *args: str) -> subprocess.Popen[str]:
        """`zwalk_bg` through another program, as `zwalk_under` runs it."""
        return self.lab.spawn(  # type: ignore[return-value]
            self.host,
            [*prefix, *self._cmd(args)],
            cwd=self.home,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def start_with(self, interface_args: list[str]) -> LabNode:
        """Start with other interface arguments than the host's LAN address."""
        self._interface_args = interface_args
        return self.start()

    def start(self, wait: bool = True, extra: tuple[str, ...] = (), held: bool = False) -> LabNode:
        """Start `zwalk serve` on this host (`extra`: more options; a later one wins). `held`:
        the interpreter loads zwalk and its libraries, then waits for `release()` to serve."""
        self.share.mkdir(parents=True, exist_ok=True)
        for name, data in self.files.items():
            (self.share / name).write_bytes(data)
        log = (self.base / f"h{self.host}" / "serve.log").open("ab")  # the child keeps a copy
        self.proc = self.lab.spawn(
            self.host,
            [
                sys.executable,
                *(["-c", HELD] if held else ["-m", "zwalk"]),
                "serve",
                str(self.share),
                "--name",
                f"h{self.host}",
                "--port",
                "0",
                *(self._interface_args or ["--interface", self.address]),
                "--data-dir",
                str(self.data),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
            stdin=subprocess.PIPE if held else None,
            cwd=self.home,  # its download folder is home/downloaded, where finds save
        )
        log.close()
        if wait and not held:
            self.wait_ready()
        return self

    def release(self) -> None:
        """Let a node started `held` go on to serve."""
        if self.proc is None or self.proc.stdin is None:
            raise RuntimeError(f"h{self.host} was not started held")
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.close()

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while True:
            local = state.read_state(self.data)
            if local is not None and self.proc is not None and local.pid == self.proc.pid:
                st = self.status()  # and its files indexed
                if st is not None and st.files >= len(self.files):
                    self.node = local.node.hex()
                    return
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"h{self.host}: serve exited: {self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"h{self.host}: serve not ready: {self.log()}")
            time.sleep(0.02)

    def log(self) -> str:
        path = self.base / f"h{self.host}" / "serve.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            self.lab.stop(self.proc, sig)
            self.proc = None

    def freeze(self) -> None:
        """Stop the node's process where it is, as a laptop's closing lid does (SIGSTOP)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def status(self) -> p.StatusOk | None:
        local = state.read_state(self.data)
        return asyncio.run(control.status(local)) if local is not None else None

    def members(self) -> list[p.MemberInfo]:
        """The node's membership table, or an error if its control endpoint does not answer."""
        st = self.status()
        if st is None:
            raise AssertionError(f"h{self.host}: control endpoint does not answer: {self.log()}")
        return list(st.members)

    def alive_peers(self) -> list[str]:
        """Node ids (hex) this node holds alive, as its control endpoint reports them."""
        st = self.status()
        if st is None:
            return []
        return sorted(m.node.hex() for m in st.members if m.state == "alive" and m.node)


def wait_until(check: object, timeout: float, step: float = 0.02) -> float:
    """Poll `check()` until true; returns the seconds it took. Fails after `timeout`."""
    start = time.monotonic()
    while not check():  # type: ignore[operator]
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not true within {timeout} s")
        time.sleep(step)
    return time.monotonic() - start


def cli_json(result: subprocess.CompletedProcess[str]) -> dict:  # type: ignore[type-arg]
    if result.returncode not in (0, 1):
        raise AssertionError((result.returncode, result.stderr, result.stdout[-3000:]))
    return json.loads(result.stdout)  # type: ignore[no-any-return]
