"""How `zwalk serve` ends: Ctrl-C while the first scan still runs stops it at once (the only
cancellation serve absorbs is the one it asked for), and after start-up it leaves cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from procs import LOOPBACK, start_serve, zwalk_cmd

# Windows has no SIGINT to send to a process (send_signal raises), and its SIGTERM is
# TerminateProcess, which no program can answer by leaving cleanly.
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def test_ctrl_c_during_the_first_scan_stops_at_once(tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    with (share / "huge.img").open("wb") as f:  # sparse: hashing its 64 GiB takes minutes
        f.truncate(64 << 30)
    proc = subprocess.Popen(
        zwalk_cmd(
            "serve", str(share), "--port", "0", "--interface", LOOPBACK,
            "--data-dir", str(tmp_path / "data"),
        ),
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(1.5)  # it is hashing now
        assert proc.poll() is None
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        assert time.monotonic() - started < 10, "the scan held the node up"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    assert proc.returncode == 0, err
    assert "stopped while starting" in err and "Traceback" not in err
    assert not (tmp_path / "data" / "node.json").exists()


def test_sigterm_after_start_up_leaves_cleanly(tmp_path: Path) -> None:
    node = start_serve(tmp_path, "a", {"a.txt": b"a"})
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(timeout=10) == 0
    log = node.log.read_text()
    assert "left cleanly" in log and "Traceback" not in log
    assert not (node.data_dir / "node.json").exists()
    assert os.path.exists(node.data_dir)  # its keys stay
