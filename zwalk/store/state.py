# The files a serving node keeps in its data dir: node.json (how local commands reach it) and
# the lock that allows one serving node per data dir.
#
# node.json (owner-only) holds the node's pid, endpoints, the control endpoint and a random token;
# a control request must carry the token, which only a process that can read the file (the same
# user) has.
from __future__ import annotations

import contextlib
import ctypes
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zwalk.store.locking import try_lock, unlock

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


def write_state(data_dir: Path, state: dict[str, Any]) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / STATE_FILE
    tmp = path.with_name(f"{STATE_FILE}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # O_EXCL below: a leftover must not keep wider permissions
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # the token is in it
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=2)
    replace_file(tmp, path)


def replace_file(src: Path, dst: Path, *, retry: bool = sys.platform == "win32") -> None:
    """os.replace. On Windows it fails while another process has `dst` open (files are opened
    there without FILE_SHARE_DELETE): a command reading node.json at that moment must not make
    the node's update fail, so try again for up to 0.1 s."""
    for attempt in range(20):
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            if not retry or attempt == 19:
                raise
            time.sleep(0.005)


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
        fd, self._fd = self._fd, -1  # once: the number may belong to another file afterwards
        if fd < 0:
            return
        with contextlib.suppress(OSError):
            unlock(fd)
        with contextlib.suppress(OSError):
            os.close(fd)  # closing drops the lock


def _pid_alive(pid: int) -> bool:
    if sys.platform == "win32":  # os.kill(pid, 0) would terminate the process there
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        return windows_pid_alive(pid, kernel32, ctypes.get_last_error)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


PROCESS_QUERY_LIMITED_INFORMATION = 0x1000  # Windows API constants (processthreadsapi.h)
STILL_ACTIVE = 259
ERROR_INVALID_PARAMETER = 87  # what OpenProcess says of a pid no process has


def windows_pid_alive(pid: int, kernel32: Any, last_error: Callable[[], int]) -> bool:
    """Whether a process runs, by the Windows API (kernel32 passed in, so that this is
    testable anywhere). A pid we may not open (another user's process) counts as alive."""
    kernel32.OpenProcess.restype = ctypes.c_void_p
    kernel32.OpenProcess.argtypes = [ctypes.c_uint32, ctypes.c_int, ctypes.c_uint32]
    handle = kernel32.OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
    if not handle:
        return last_error() != ERROR_INVALID_PARAMETER
    try:
        code = ctypes.c_uint32()
        kernel32.GetExitCodeProcess.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]
        if not kernel32.GetExitCodeProcess(handle, ctypes.pointer(code)):
            return True  # cannot tell: a node that is gone does not answer either
        return code.value == STILL_ACTIVE
    finally:
        kernel32.CloseHandle.argtypes = [ctypes.c_void_p]
        kernel32.CloseHandle(handle)


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
