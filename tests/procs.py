# Real zwalk processes on 127.0.0.1, for end-to-end tests.
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"


def zwalk_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "zwalk", *args]


@dataclass
class ServeProcess:
    proc: subprocess.Popen[bytes]
    data_dir: Path
    share: Path
    endpoint: str
    node: str
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start_serve(
    base: Path,
    name: str,
    files: dict[str, bytes],
    *extra: str,
    mtimes: dict[str, float] | None = None,
) -> ServeProcess:
    """Start `zwalk serve` on 127.0.0.1, any free port, and wait until it is listening and has
    indexed its files (`mtimes`: modification times to give some of them first). Started again
    with the same name, it keeps its share, data dir and log."""
    share, data = base / name / "share", base / name / "data"
    share.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        (share / rel).parent.mkdir(parents=True, exist_ok=True)
        (share / rel).write_bytes(content)
    for rel, when in (mtimes or {}).items():
        os.utime(share / rel, (when, when))
    log = base / name / "serve.log"
    proc = subprocess.Popen(
        zwalk_cmd(
            "serve",
            str(share),
            "--name",
            name,
            "--port",
            "0",
            "--interface",
            LOOPBACK,
            "--data-dir",
            str(data),
            "--downloads",
            str(base / name / "downloaded"),
            *extra,
        ),
        stdout=subprocess.DEVNULL,
        stderr=(handle := log.open("ab")),
        cwd=base,
    )
    handle.close()  # the child has its own
    state = data / "node.json"
    deadline = time.monotonic() + 30
    while not _indexed(state, len(files)):  # listening, and its files hashed
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited with {proc.returncode}: {log.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait(timeout=10)
            raise RuntimeError(f"serve did not start: {log.read_text()}")
        time.sleep(0.02)
    st = json.loads(state.read_text())
    return ServeProcess(proc, data, share, st["endpoints"][0], st["node"], log)


def _indexed(state: Path, files: int) -> bool:
    try:
        return int(json.loads(state.read_text())["files"]) >= files
    except (OSError, ValueError, KeyError):
        return False  # not there yet, or being replaced


def run_zwalk(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a zwalk command restricted to 127.0.0.1 (unless it names its own interface; the
    demo keeps to 127.0.0.1 by itself and refuses the option)."""
    if "--interface" not in args and (not args or args[0] != "demo"):
        args = ("--interface", LOOPBACK, *args)
    return subprocess.run(
        zwalk_cmd(*args), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


async def find_async(cwd: Path, *args: str) -> tuple[int, str, str]:
    """`zwalk find ARGS` on 127.0.0.1 from a coroutine (nodes of the test may run in this
    process's event loop meanwhile): exit status, stdout, stderr."""
    import asyncio

    proc = await asyncio.create_subprocess_exec(
        *zwalk_cmd("--interface", LOOPBACK, "find", *args),
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


def rss_mib(pid: int) -> float:
    """A process's resident memory (Linux: /proc), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def public_key(data_dir: Path) -> bytes:
    """A node's public key (Z85), from its data dir."""
    return (data_dir / "node.pub").read_bytes().strip()


def curve_dealer(ctx: Any, endpoint: str, server_key: bytes, **options: int | bytes) -> Any:
    """A DEALER that passes a node's CurveZMQ handshake with a throw-away key of its own."""
    import zmq

    public, secret = zmq.curve_keypair()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    for name, value in options.items():
        sock.setsockopt(getattr(zmq, name), value)
    sock.curve_secretkey, sock.curve_publickey, sock.curve_serverkey = secret, public, server_key
    sock.connect(endpoint if "://" in endpoint else f"tcp://{endpoint}")
    return sock
