# Watching a lab's nodes from outside while faults happen: every node's membership table sampled
# at once through its control endpoint (an ipc socket in its data dir, so a cut link does not cut
# the watcher off), the first time a condition held, rows that name one node twice, and finds run
# in the background with their time taken. tools/fault_membership.py builds on it.
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from labnodes import LabNode, short_tmp
from netlab import Lab

from zwalk.core import protocol as p
from zwalk.net import control
from zwalk.store import state

Tables = dict[int, p.StatusOk]  # host -> its node's status, for the nodes that answered
NO_HOSTS: frozenset[int] = frozenset()


@contextlib.contextmanager
def tmp_base() -> Iterator[Path]:
    yield from short_tmp()


def start_all(lab: Lab, base: Path, files: dict[int, dict[str, bytes]]) -> list[LabNode]:
    """`zwalk serve` on every host (sharing `files[host]`), started together, all ready."""
    nodes = [LabNode(lab, i, base, files=dict(files.get(i, {}))) for i in range(lab.n)]
    for n in nodes:
        n.start(wait=False)
    for n in nodes:
        n.wait_ready(timeout=60)
    return nodes


def alive(st: p.StatusOk) -> set[str]:
    """The node ids (hex) a table holds alive."""
    return {m.node.hex() for m in st.members if m.state == "alive" and m.node}


def sees(o: LabNode, f: LabNode, yes: bool = True) -> Callable[[Tables], bool]:
    """`o` answers and holds `f` alive (or, with yes=False, does not)."""
    return lambda t: o.host in t and (f.node in alive(t[o.host])) == yes


def hears_again(f: LabNode, others: list[LabNode], unix: float) -> Callable[[Tables], bool]:
    """`f` holds every one of `others` alive and heard from it after `unix` (time.time()): not
    a row left over from before a fault."""

    def check(t: Tables) -> bool:
        if f.host not in t:
            return False
        rows = {m.node.hex(): m for m in t[f.host].members if m.state == "alive" and m.node}
        return all(o.node in rows and rows[o.node].last_seen_ms >= unix * 1000 for o in others)

    return check


def all_see_all(nodes: list[LabNode]) -> Callable[[Tables], bool]:
    def check(t: Tables) -> bool:
        ids = {n.node for n in nodes}
        return all(n.host in t and alive(t[n.host]) >= ids - {n.node} for n in nodes)

    return check


class Watch:
    """Samples the tables of nodes (all at once), noting rows that name one node twice."""

    def __init__(self, nodes: list[LabNode]) -> None:
        self.nodes = nodes
        self.samples = 0
        self.duplicates: list[str] = []

    def sample(self, skip: frozenset[int] = NO_HOSTS) -> Tables:
        asked = [n for n in self.nodes if n.host not in skip and n.proc is not None]
        got = asyncio.run(_statuses(asked))
        tables = {n.host: st for n, st in zip(asked, got, strict=True) if st is not None}
        self.samples += 1
        for host, st in tables.items():
            for node, k in Counter(m.node.hex() for m in st.members if m.node).items():
                if k > 1:
                    self.duplicates.append(f"h{host} lists {node[:12]} {k} times")
        return tables

    def firsts(
        self,
        checks: dict[str, Callable[[Tables], bool]],
        t0: float,
        limit: float,
        skip: frozenset[int] = NO_HOSTS,
        step: float = 0.05,
    ) -> dict[str, float | None]:
        """Seconds from `t0` (monotonic) until each check first held; None: not by t0+limit."""
        got: dict[str, float | None] = dict.fromkeys(checks)
        while None in got.values() and time.monotonic() - t0 < limit:
            tables = self.sample(skip)
            now = round(time.monotonic() - t0, 2)  # taken after the sample: never early
            for name, check in checks.items():
                if got[name] is None and check(tables):
                    got[name] = now
            time.sleep(step)
        return got

    def hold(self, until: float, skip: frozenset[int] = NO_HOSTS) -> None:
        """Keep sampling (for duplicates) until `until` (monotonic)."""
        while time.monotonic() < until:
            self.sample(skip)
            time.sleep(0.1)

    def until_set(self, stop: threading.Event, every: float) -> None:
        """Sample every `every` seconds until `stop` is set (run it in a thread)."""
        while not stop.wait(every):
            self.sample()


async def _statuses(nodes: list[LabNode], timeout: float = 1.0) -> list[p.StatusOk | None]:
    async def one(n: LabNode) -> p.StatusOk | None:
        local = state.read_state(n.data)
        if local is None or n.proc is None or local.pid != n.proc.pid:
            return None  # not (yet) listening, or a file a killed run left
        return await control.status(local, timeout=timeout)

    return list(await asyncio.gather(*(one(n) for n in nodes)))


class BgFind:
    """`zwalk find NAME --json --timeout T` run in the background: how long it took (None if it
    was still running after `limit` seconds, and was killed) and what it said."""

    def __init__(self, node: LabNode, name: str, timeout: float, limit: float = 60) -> None:
        self.started = time.monotonic()
        self.proc = node.zwalk_bg("find", name, "--json", "--timeout", f"{timeout:g}")
        self.took: float | None = None
        self.out = ""
        self._thread = threading.Thread(target=self._wait, args=(limit,), daemon=True)
        self._thread.start()

    def _wait(self, limit: float) -> None:
        try:
            self.out, _ = self.proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            return
        self.took = round(time.monotonic() - self.started, 2)

    def wait(self) -> dict[str, Any]:
        self._thread.join()
        status = ""
        with contextlib.suppress(ValueError):
            status = json.loads(self.out).get("status", "")
        return {"exit": self.proc.returncode, "status": status, "seconds": self.took}


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user and system) a process has used so far; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


def spread(values: Iterable[float | None]) -> dict[str, float] | None:
    """Least, median and most of the values that are there."""
    v = sorted(x for x in values if x is not None)
    return {"min": v[0], "median": v[len(v) // 2], "max": v[-1]} if v else None


def worst(times: dict[str, float | None]) -> float | None:
    """The longest of the times, or None if one never came."""
    if not times or None in times.values():
        return None
    return max(t for t in times.values() if t is not None)
