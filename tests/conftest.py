# Test-wide setup. Network safety first: when the suite runs as root on Linux it moves itself into
# a private network namespace before anything opens a socket, so that no test can reach a real
# interface; only a fresh loopback exists there. Without root, every node is bound to 127.0.0.1 by
# the tests themselves.
from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from procs import ServeProcess, start_serve

CLONE_NEWNET = 0x40000000


def _isolate_network() -> tuple[str, str | None]:
    """Where the suite's traffic goes, and why the lab is unavailable (None if it is not)."""
    if sys.platform != "linux" or os.geteuid() != 0:
        return "not isolated (not root on Linux): nodes are bound to 127.0.0.1", None
    if os.environ.get("ZWALK_TEST_NETNS") == str(os.getpid()):
        return "isolated", None
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        # Root without CAP_SYS_ADMIN (root in an ordinary container): no namespace of our own,
        # so no lab either; every node is still bound to 127.0.0.1, never a real interface.
        why = f"cannot make network namespaces ({os.strerror(ctypes.get_errno())})"
        return f"not isolated ({why}): nodes are bound to 127.0.0.1, lab tests skipped", why
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    os.environ["ZWALK_TEST_NETNS"] = str(os.getpid())
    return "isolated in a private network namespace", None


NETWORK, NO_LAB = _isolate_network()


CHECKOUT = Path(__file__).resolve().parent.parent


def _run_this_tree() -> None:
    """Every zwalk process a test starts (`python -m zwalk`, in a lab host too) imports the
    package from this checkout, not an installed copy that may be older."""
    paths = [str(CHECKOUT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))


_run_this_tree()


def _isolate_user_dirs() -> None:
    """zwalk commands run by tests must never find the developer's own node or config."""
    import tempfile

    home = tempfile.mkdtemp(prefix="zwalk-test-home-")
    for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        os.environ[var] = os.path.join(home, var.lower())


_isolate_user_dirs()


def _no_outer_settings() -> None:
    """A ZWALK_ setting in the developer's environment must not change what a test, or any
    node or command it starts, sees (the suite's own ZWALK_TEST_ and ZWALK_FUZZ_ stay)."""
    from zwalk.store.config import ENV_NOT_SETTINGS

    for var in list(os.environ):
        if var.startswith("ZWALK_") and not var.startswith(ENV_NOT_SETTINGS):
            del os.environ[var]


_no_outer_settings()


@pytest.fixture(autouse=True)
def _own_user_data(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test's commands get a user data folder of their own: keys pinned on first use
    (known_peers) by one test must not meet another test's node on a reused port."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))


def pytest_report_header() -> str:
    return f"zwalk network: {NETWORK}"


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    started: list[ServeProcess] = []

    def factory(
        name: str, files: dict[str, bytes], *extra: str, mtimes: dict[str, float] | None = None
    ) -> ServeProcess:
        node = start_serve(tmp_path, name, files, *extra, mtimes=mtimes)
        started.append(node)
        return node

    try:
        yield factory
    finally:
        for node in started:
            node.stop()


# --- the multi-host lab -----------------------------------------------------------------------
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import netlab  # noqa: E402


@pytest.fixture
def lab() -> Iterator[Callable[[int], netlab.Lab]]:
    """Build a lab of N hosts (network namespaces on one bridge); torn down after the test."""
    why = NO_LAB or netlab.available()
    if why is not None:
        pytest.skip(f"multi-host lab unavailable: {why}")
    made: list[netlab.Lab] = []

    def factory(n: int) -> netlab.Lab:
        made.append(netlab.Lab(n))
        made[-1].__enter__()
        return made[-1]

    try:
        yield factory
    finally:
        for one in made:
            one.close()
