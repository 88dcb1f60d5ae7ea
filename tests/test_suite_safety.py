# The suite's own safety rules: as root without CAP_SYS_ADMIN (root in an ordinary container)
# it cannot make a network namespace of its own; it must then run on loopback, skip the lab
# tests and say so, never fall back to a real interface or fail at start.
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(
    sys.platform != "linux" or os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root on Linux and setpriv (util-linux) to drop CAP_SYS_ADMIN",
)
def test_as_root_without_cap_sys_admin_the_lab_is_skipped_and_said_so() -> None:
    r = subprocess.run(
        [
            "setpriv", "--bounding-set", "-sys_admin", "--inh-caps", "-sys_admin", "--",
            sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider",
            "tests/test_query.py",
            "tests/test_lab_links.py::test_a_lab_host_runs_the_code_of_this_checkout",
        ],
        cwd=CHECKOUT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "zwalk network: not isolated (cannot make network namespaces" in out
    assert "1 skipped" in out and "multi-host lab unavailable" in out, out
