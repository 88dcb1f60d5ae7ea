# The local control endpoint: how `zwalk peers` and `find` use a running `serve` node.
#
# The node writes node.json (owner-only) in its data dir with its pid, endpoints, the control
# endpoint and a random token. The control endpoint is a ZeroMQ ipc socket inside the data dir
# where ipc exists and the path is short enough, otherwise a loopback TCP port; either way a
# request must carry the token, which only a process that can read node.json (the same user) has.
from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from zwalk.core import protocol as p
from zwalk.store.locking import try_lock

STATE_FILE = "node.json"
LOCK_FILE = "serve.lock"
CONTROL_DIR = "control"  # owner-only folder holding the ipc socket
SOCKET_FILE = "control.ipc"
MAX_IPC_PATH = 100  # sun_path holds 104-108 bytes depending on the platform


@dataclass(frozen=True, slots=True)
class LocalNode:
    """What node.json says about a running node."""

    pid: int
    node: bytes
    name: str
    endpoints: list[str]
    control: str
    token: bytes
    downloads: Path | None = None  # where the node's own finds save (absolute)
    shares: tuple[Path, ...] = ()


def socket_path(data_dir: Path) -> Path:
    return (data_dir / CONTROL_DIR / SOCKET_FILE).absolute()


def control_endpoint(data_dir: Path) -> str | None:
    """The ipc endpoint to bind, or None when ipc is not usable here (then: loopback TCP).

    Creates the socket's folder owner-only: only the same user can reach the socket."""
    path = socket_path(data_dir)
    if not zmq.has("ipc") or len(str(path).encode()) > MAX_IPC_PATH:
        return None
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)  # our own folder: also if an older run left it wider
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a crashed run's leftover
    return f"ipc://{path}"


def write_state(data_dir: Path, state: dict[str, Any]) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / STATE_FILE
    tmp = path.with_name(f"{STATE_FILE}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # O_EXCL below: a leftover must not keep wider permissions
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # the token is in it
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=2)
    os.replace(tmp, path)


def remove_state(data_dir: Path) -> None:
    """Remove node.json and the socket, if they are this process's (never another node's)."""
    try:
        pid = json.loads((data_dir / STATE_FILE).read_text()).get("pid")
    except (OSError, ValueError, AttributeError):
        pid = None
    if pid != os.getpid():
        return
    with contextlib.suppress(OSError):
        (data_dir / STATE_FILE).unlink()
    with contextlib.suppress(OSError):
        socket_path(data_dir).unlink()


class DataDirLock:
    """One serving node per data dir: a lock file held for the node's lifetime."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / LOCK_FILE
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try_lock(self._fd)
        except OSError:
            os.close(self._fd)
            other = read_state(data_dir)
            who = f" (pid {other.pid})" if other is not None else ""
            raise OSError(
                f"another zwalk serve is running with the data dir {data_dir}{who}: stop it, or "
                "give this one its own --data-dir"
            ) from None

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)  # closing drops the lock


def _pid_alive(pid: int) -> bool:
    if sys.platform == "win32":
        return True  # no cheap check; a dead node simply does not answer
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_state(data_dir: Path) -> LocalNode | None:
    """The running node for this data dir, if node.json names a live process."""
    try:
        raw = json.loads((data_dir / STATE_FILE).read_text())
        local = LocalNode(
            pid=int(raw["pid"]),
            node=bytes.fromhex(raw["node"]),
            name=str(raw["name"]),
            endpoints=[str(e) for e in raw["endpoints"]],
            control=str(raw["control"]),
            token=bytes.fromhex(raw["token"]),
            downloads=Path(raw["downloads"]) if raw.get("downloads") else None,
            shares=tuple(Path(x) for x in raw.get("shares", ())),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return local if _pid_alive(local.pid) else None


async def status(
    local: LocalNode, timeout: float = 2.0, peers: tuple[p.Address, ...] = ()
) -> p.StatusOk | None:
    """Ask the running node for its state (once it has said hello to `peers`); None if it
    does not answer in time."""
    reply = await request(local, p.Status(req=1, token=local.token, peers=peers), timeout)
    return reply if isinstance(reply, p.StatusOk) else None


async def request(local: LocalNode, msg: p.Message, timeout: float) -> p.Message | None:
    """One request to the running node's control endpoint; None if it does not answer."""
    ctx = zmq.asyncio.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, p.MAX_FRAME)
    try:
        sock.connect(local.control)
        await sock.send_multipart(p.encode(msg))
        if not await sock.poll(int(timeout * 1000)):
            return None
        return p.decode(await sock.recv_multipart())
    except (zmq.ZMQError, p.ProtocolError):
        return None
    finally:
        sock.close(linger=0)
