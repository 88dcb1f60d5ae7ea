# What zwalk does differently on Windows and macOS, exercised here on any system: the event loop
# a command runs on, whether a node's pid is alive, and the file locks of a .part and a data dir.
# The Windows-only calls are reached through small seams (a platform argument, a kernel32 passed
# in), so that Linux CI runs the logic and Windows CI runs the real thing.
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import blake3
import pytest

from zwalk.cli import app
from zwalk.core import protocol as p
from zwalk.store import state
from zwalk.store.partfile import PartFile, progress_path

CS = p.MIN_CHUNK_SIZE


# --- the event loop ----------------------------------------------------------------------------
@pytest.mark.parametrize("platform", ["win32"])
def test_windows_runs_commands_on_a_selector_loop(platform: str) -> None:
    # pyzmq's asyncio sockets need add_reader, which the ProactorEventLoop (Windows' default)
    # does not have.
    factory = app.loop_factory(platform)
    assert factory is app.WakingSelectorLoop
    assert issubclass(factory, asyncio.SelectorEventLoop)


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_elsewhere_commands_run_on_the_default_loop(platform: str) -> None:
    assert app.loop_factory(platform) is None


def test_run_uses_the_loop_factory_and_wakes_on_signals(monkeypatch: pytest.MonkeyPatch) -> None:
    windows = app.loop_factory("win32")
    monkeypatch.setattr(app, "loop_factory", lambda platform=None: windows)
    before = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(before)

    async def inside() -> tuple[type, int, int]:
        loop = asyncio.get_running_loop()
        fd = signal.set_wakeup_fd(-1)  # read it back: a signal writes to the self-pipe
        signal.set_wakeup_fd(fd)
        return type(loop), fd, loop._csock.fileno()  # type: ignore[attr-defined]

    kind, wakeup, csock = app.run(inside())
    assert kind is app.WakingSelectorLoop
    assert wakeup == csock
    after = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(after)
    assert after == before  # given back when the loop stopped


def test_ctrl_c_stops_a_command_on_that_loop_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    windows = app.loop_factory("win32")
    monkeypatch.setattr(app, "loop_factory", lambda platform=None: windows)

    async def wait_long() -> None:
        asyncio.get_running_loop().call_later(0.1, signal.raise_signal, signal.SIGINT)
        await asyncio.sleep(30)

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        app.run(wait_long())
    assert time.monotonic() - started < 5


# --- is the node in node.json still running? --------------------------------------------------
class FakeKernel32:
    """OpenProcess, GetExitCodeProcess and CloseHandle as the Windows API answers them."""

    def __init__(self, handle: int, exit_code: int = 0, query_ok: bool = True) -> None:
        self.handle, self.exit_code, self.query_ok = handle, exit_code, query_ok
        self.closed: list[int] = []

        def open_process(access: int, inherit: bool, pid: int) -> int:
            assert access == state.PROCESS_QUERY_LIMITED_INFORMATION and not inherit
            return self.handle

        def get_exit_code(handle: int, code: Any) -> int:
            code.contents.value = self.exit_code
            return int(self.query_ok)

        def close_handle(handle: int) -> int:
            self.closed.append(handle)
            return 1

        self.OpenProcess = open_process
        self.GetExitCodeProcess = get_exit_code
        self.CloseHandle = close_handle


@pytest.mark.parametrize(
    ("kernel32", "last_error", "alive"),
    [
        (FakeKernel32(handle=44, exit_code=state.STILL_ACTIVE), 0, True),
        (FakeKernel32(handle=44, exit_code=0), 0, False),  # exited, handle still held somewhere
        (FakeKernel32(handle=44, query_ok=False), 0, True),  # cannot tell: as before
        (FakeKernel32(handle=0), state.ERROR_INVALID_PARAMETER, False),  # no such process
        (FakeKernel32(handle=0), 5, True),  # access denied: another user's, running
    ],
)
def test_a_node_pid_on_windows(kernel32: FakeKernel32, last_error: int, alive: bool) -> None:
    assert state.windows_pid_alive(1234, kernel32, lambda: last_error) is alive
    assert kernel32.closed == ([kernel32.handle] if kernel32.handle else [])


@pytest.mark.skipif(sys.platform == "win32", reason="os.kill(pid, 0) is the POSIX check")
def test_a_node_pid_elsewhere() -> None:
    assert state._pid_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: the pid names no process now
    assert not state._pid_alive(child.pid)


# --- locks ---------------------------------------------------------------------------------------
TRY_LOCK = (
    "import os, sys\n"
    "from zwalk.store.locking import try_lock\n"
    "fd = os.open(sys.argv[1], os.O_RDWR | getattr(os, 'O_BINARY', 0))\n"
    "try:\n"
    "    try_lock(fd)\n"
    "except OSError:\n"
    "    sys.exit(3)\n"
)


def _info(data: bytes) -> p.FileInfo:
    n = p.chunk_count(len(data), CS)
    hashes = b"".join(blake3.blake3(data[i * CS : (i + 1) * CS]).digest() for i in range(n))
    return p.FileInfo(
        req=0, cid=blake3.blake3(data).digest(), size=len(data), chunk_size=CS, hashes=hashes
    )


def _other_process_locks(path: Path) -> int:
    return subprocess.run([sys.executable, "-c", TRY_LOCK, str(path)], timeout=60).returncode


def test_a_part_file_is_locked_against_other_processes_until_closed(tmp_path: Path) -> None:
    # zwalk's own lock (flock on POSIX, msvcrt on Windows), from another process
    part = PartFile(tmp_path / "f.part", _info(os.urandom(2 * CS)))
    assert _other_process_locks(progress_path(part.path)) == 3
    part.close()
    assert _other_process_locks(progress_path(part.path)) == 0
    part.close()  # again: harmless


def test_discarding_a_part_file_removes_it_and_its_record(tmp_path: Path) -> None:
    part = PartFile(tmp_path / "f.part", _info(os.urandom(2 * CS)))
    part.discard()  # on Windows the files are closed first: an open file cannot be removed
    assert not part.path.exists() and not progress_path(part.path).exists()


def test_one_serving_node_per_data_dir(tmp_path: Path) -> None:
    first = state.DataDirLock(tmp_path)
    with pytest.raises(OSError, match="another zwalk serve is running"):
        state.DataDirLock(tmp_path)
    assert _other_process_locks(tmp_path / state.LOCK_FILE) == 3
    first.release()
    first.release()  # again: harmless, and never another file's fd
    second = state.DataDirLock(tmp_path)
    second.release()


# --- node.json, replaced while a command reads it --------------------------------------------
@pytest.mark.parametrize("retry", [True, False])
def test_node_json_is_replaced_even_while_a_reader_has_it_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, retry: bool
) -> None:
    # What os.replace does on Windows while another process has the target open.
    real, calls = os.replace, []

    def busy_twice(src: Any, dst: Any) -> None:
        calls.append(dst)
        if len(calls) <= 2:
            raise PermissionError(13, "the file is in use")
        real(src, dst)

    (tmp_path / "new").write_text("new")
    (tmp_path / "node.json").write_text("old")
    monkeypatch.setattr(os, "replace", busy_twice)
    if retry:  # Windows' default
        state.replace_file(tmp_path / "new", tmp_path / "node.json", retry=True)
        assert (tmp_path / "node.json").read_text() == "new" and len(calls) == 3
    else:  # elsewhere a PermissionError means what it says
        with pytest.raises(PermissionError):
            state.replace_file(tmp_path / "new", tmp_path / "node.json", retry=False)
        assert len(calls) == 1
