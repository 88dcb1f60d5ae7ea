"""`zwalk peers` as a person sees it: the table through the running node, and --watch on a
terminal (a pseudo-terminal here) until Ctrl-C."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from procs import ServeProcess, run_zwalk, zwalk_cmd

Serve = Callable[..., ServeProcess]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _pair(serve: Serve) -> tuple[ServeProcess, ServeProcess]:
    a = serve("a", {"a.txt": b"from a", "a2.txt": b"also a"})
    b = serve("b", {"b.txt": b"from b"}, "--peer", a.endpoint)
    return a, b


def _wait_alive(b: ServeProcess, tmp: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = run_zwalk("peers", "--data-dir", str(b.data_dir), "--json", cwd=tmp)
        if '"state": "alive"' in r.stdout:
            return
        time.sleep(0.2)
    raise AssertionError("b never saw a alive")


def test_peers_prints_a_table_of_the_live_peers(serve: Serve, tmp_path: Path) -> None:
    a, b = _pair(serve)
    _wait_alive(b, tmp_path)
    r = run_zwalk("peers", "--data-dir", str(b.data_dir), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].strip() == "1 peer (via the local node)", r.stdout
    header = lines[1].split()
    assert header == ["node", "name", "address", "v", "learned", "age", "seen", "rtt", "files"]
    row = lines[2].split()  # a's row (its "learned" cell may wrap onto the next lines)
    assert row[:4] == [a.node[:12], "a", a.endpoint, "2"], r.stdout
    assert row[-1] == "2" and row[-2] == "ms", r.stdout  # a shares two files; rtt "0.3 ms"
    assert "static" in " ".join(lines[2:])  # how b learned of a: a static peer of its own
    assert a.node[:12] not in " ".join(lines[3:])  # one row per peer


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_peers_watch_refreshes_a_live_table_until_ctrl_c(serve: Serve, tmp_path: Path) -> None:
    import pty

    a, b = _pair(serve)
    _wait_alive(b, tmp_path)
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "LINES": "40", "TERM": "xterm"}
    proc = subprocess.Popen(
        zwalk_cmd("peers", "--watch", "--data-dir", str(b.data_dir)),
        stdin=follower,
        stdout=follower,
        stderr=follower,
        cwd=tmp_path,
        env=env,
    )
    os.close(follower)
    seen = b""
    try:
        deadline = time.monotonic() + 15
        # Two refreshes (one a second) that each show a's row: the table is live.
        while seen.count(a.node[:12].encode()) < 2 and time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(leader, 65536)
                except OSError:
                    break
        text = ANSI.sub("", seen.decode(errors="replace"))
        assert text.count(a.node[:12]) >= 2, text
        assert "1 peer (via the local node)" in text
        proc.send_signal(signal.SIGINT)  # Ctrl-C: how --watch ends, and not a failure
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        os.close(leader)


def test_watch_and_json_together_is_a_usage_error(tmp_path: Path) -> None:
    r = run_zwalk("peers", "--watch", "--json", cwd=tmp_path)
    assert r.returncode == 2 and "--watch shows a live table" in r.stderr
