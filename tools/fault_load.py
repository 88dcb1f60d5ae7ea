"""Load and a soak: one node under 1,000 concurrent walks and 4 downloads, and one node under
mixed traffic for 10 minutes, its memory and descriptors sampled from /proc meanwhile.

`load`: the node on h0 shares four large files and 20 small ones; h1-h4 run `zwalk serve` and,
through it, `zwalk find` of one large file each. h5 runs tools/fault_load_peers.py: ten protocol
peers (real searchers the node reports to) that keep 1,000 walks going, sent at once and each
sent again after `busy` until the node takes it, and a quiet peer that only pings. Two downloads
are under way when the walks come; two more, and six searches, start once the node says busy.

`soak`: the node on h0 serves finds (names, globs, content ids), downloads and `zwalk ls` from
h1 and h2, pings and searches from protocol peers on h4, and a peer on h3 that comes and goes,
while files in its share are added, changed and removed.

The memory bound of `load` (`rss_bound`) follows from the node's limits: its idle RSS, plus what
the downloaders may have on their way (the reference downloader asks one source for at most
max_window, 64 MiB: the node has no cap of its own on queued chunk data), the buffers the pool
keeps (2 x MAX_CONCURRENT_READS frames), MAX_RELAYS relays (each its walk and at most this
share's hits: 64 KiB is generous) and 64 MiB of interpreter slack.
"""

from __future__ import annotations

import contextlib
import filecmp
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import blake3
from faultlab import Scale
from labnodes import LabNode, short_tmp, wait_until
from netlab import Lab

from zwalk.core import protocol as p
from zwalk.core.sources import DEFAULTS as TRANSFER
from zwalk.net.router import MAX_CONCURRENT_READS
from zwalk.net.walks import MAX_RELAYS

MIB = 1 << 20
TOOLS = Path(__file__).resolve().parent
PEERS = TOOLS / "fault_load_peers.py"


_base = contextlib.contextmanager(short_tmp)


def usage(pid: int) -> tuple[int, int] | None:
    """A process's resident memory (KiB, VmRSS) and open descriptors, from /proc."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rss = next(int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS:"))
        return rss, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return None  # gone, or being torn down


class Sampler:
    """RSS and open descriptors of one process, every `every` seconds, in a thread."""

    def __init__(self, pid: int, every: float) -> None:
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, int, int]] = []  # (seconds, RSS KiB, descriptors)
        self._stop = threading.Event()
        self.t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            if (now := usage(self.pid)) is not None:
                self.samples.append((time.monotonic() - self.t0, *now))
            self._stop.wait(self.every)

    def peak_mib(self) -> float:
        return max((s[1] for s in self.samples), default=0) / 1024

    def around(self, start: float, end: float) -> tuple[float, float]:
        """Median RSS (MiB) and descriptors of the samples taken from `start` to `end` s."""
        near = [s for s in self.samples if start <= s[0] <= end]
        if not near:
            raise AssertionError(f"no sample from {start:.0f} to {end:.0f} s")
        return statistics.median(s[1] for s in near) / 1024, statistics.median(s[2] for s in near)


def write_random(path: Path, size: int) -> None:
    with path.open("wb") as f:
        for left in range(size, 0, -4 * MIB):
            f.write(os.urandom(min(left, 4 * MIB)))


def readline(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None  # noqa: S101 -- piped by the caller
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError(f"no line from pid {proc.pid} within {timeout} s")
    return proc.stdout.readline().strip()


def start_nodes(nodes: list[LabNode], extra: tuple[str, ...] = ()) -> None:
    for node in nodes:
        node.start(wait=False, extra=extra)
    for node in nodes:
        node.wait_ready(120)


def load_peers(lab: Lab, host: int, target: LabNode, *args: str) -> subprocess.Popen[str]:
    """tools/fault_load_peers.py on a host, aimed at `target`; returns once it is ready."""
    gen = lab.spawn(
        host,
        [sys.executable, str(PEERS), "--target", f"{target.address}:{target.port}",
         "--key", (target.data / "node.pub").read_text().strip(), "--node", target.node,
         "--host", lab.hosts[host].address, *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    if readline(gen, 60) != "ready":  # type: ignore[arg-type]
        raise RuntimeError("the load peers did not start")
    return gen  # type: ignore[return-value]


def go(gen: subprocess.Popen[str]) -> None:
    assert gen.stdin is not None  # noqa: S101 -- piped by load_peers
    gen.stdin.write("go\n")
    gen.stdin.flush()


def result(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    """A `zwalk ... --json` run's document, or what went wrong."""
    out, err = proc.communicate(timeout=timeout)
    try:
        return json.loads(out)  # type: ignore[no-any-return]
    except ValueError:
        return {"status": f"exit {proc.returncode}", "error": err[-400:]}


def log_problems(text: str) -> dict[str, int]:
    lines = text.splitlines()
    return {
        "errors": sum(" ERROR " in line or line.startswith("error:") for line in lines),
        "tracebacks": text.count("Traceback"),
        "warnings": sum(" WARNING " in line or line.startswith("warning:") for line in lines),
    }


# --- load -------------------------------------------------------------------------------------


def load(scale: Scale) -> dict[str, Any]:
    """One node under 1,000 concurrent walks from 10 protocol peers and 4 downloads at once."""
    size = (256 if scale.full else 48) * MIB
    bursts, hold = (2, 30) if scale.full else (1, 8)
    started = time.monotonic()
    with _base() as base, Lab(6) as lab:
        target = LabNode(lab, 0, base)
        target.share.mkdir(parents=True)
        for i in range(1, 5):
            write_random(target.share / f"big-{i}.bin", size)
        small = [f"small-{i}.txt" for i in range(20)]
        for name in small:
            (target.share / name).write_text(name)
        start_nodes([target])
        wait_until(lambda: (st := target.status()) is not None and st.files == 24, 120, 0.2)
        hosts = [LabNode(lab, i, base, files={f"h{i}.txt": b"x"}) for i in range(1, 5)]
        start_nodes(hosts)
        wait_until(lambda: len(target.alive_peers()) >= 4, 30, 0.1)
        pid = target.proc.pid  # type: ignore[union-attr]
        idle = statistics.median((usage(pid) or (0, 0))[0] for _ in range(3)) / 1024
        with Sampler(pid, 0.2) as sampler:
            storms = [_storm(lab, target, hosts, small, hold) for _ in range(bursts)]
        problems = log_problems(target.log())
        me = bytes.fromhex(target.node)  # a peer that dropped it lists it under failed
        lost_by = [n.host for n in hosts if any(f.node == me for f in n.status().failed)]  # type: ignore[union-attr]
    bound = idle + _allowance()
    sent = sum(sum(s["requests"].values()) for s in storms)
    replies = sum(sum(s["replies"].values()) for s in storms)
    lost = sum(sum(s["unanswered"].values()) for s in storms)
    no_end = sum(s["walks_without_end"] + s["walks_never_accepted"] for s in storms)
    intact, found = (sum(s[k] for s in storms) for k in ("intact", "found"))
    first = min(s["burst_accepted_first_try"] for s in storms)
    ok = (
        lost == 0
        and first >= MAX_RELAYS
        and sent == replies
        and no_end == 0
        and intact == 4 * bursts
        and found == 6 * bursts
        and sampler.peak_mib() <= bound
        and problems["tracebacks"] == problems["errors"] == 0
    )
    return {
        "ok": ok,
        "walks": sum(s["walks"] for s in storms),
        "requests_sent": sent,
        "replies": replies,
        "unanswered": lost,
        "walks_without_end": no_end,
        "burst_accepted_first_try": first,
        "downloads_intact": f"{intact}/{4 * bursts} of {size // MIB} MiB",
        "searches_found_during_storm": f"{found}/{6 * bursts}",
        "rss_idle_mib": round(idle, 1),
        "rss_peak_mib": round(sampler.peak_mib(), 1),
        "rss_bound_mib": round(bound, 1),
        "peers_that_lost_it": lost_by,  # dropped it for missed pings at some point
        **problems,
        "storms": storms,
        "seconds": round(time.monotonic() - started, 1),
    }


def _storm(
    lab: Lab, target: LabNode, hosts: list[LabNode], small: list[str], hold: float
) -> dict[str, Any]:
    """1,000 concurrent walks for `hold` seconds with two downloads under way, and two more
    downloads and six searches started once the node refuses walks as busy."""
    gen = load_peers(lab, 5, target, "--peers", "10", "--walks", "1000", "--hold", str(hold),
                     "--names", ",".join(small[:5]), "--deadline", str(hold + 90))  # fmt: skip
    for node in hosts:  # every burst fetches the files again
        for old in (node.home / "downloaded").glob("big-*"):
            old.unlink()
    wait = str(hold + 30)  # a find's timeout: it may have to outlast the storm
    early = [_download(node, wait) for node in hosts[:2]]
    wait_until(lambda: all(_fetching(node) for node in hosts[:2]), 60, 0.02)
    go(gen)
    line = readline(gen, 60)
    saturated = line == "busy"  # relaying MAX_RELAYS walks: what comes now may be refused
    late = [_download(node, wait) for node in hosts[2:]]
    late += [hosts[k % 4].zwalk_bg("find", small[10 + k], "--no-download", "--json",
                                   "--timeout", wait) for k in range(6)]  # fmt: skip
    figures: dict[str, Any] = json.loads(readline(gen, hold + 120) if saturated else line)
    gen.wait(timeout=30)
    docs = [result(proc, 300) for proc in early + late]
    intact = sum(
        d.get("status") == "downloaded"
        and filecmp.cmp(d["download"]["path"], target.share / d["query"]["text"], shallow=False)
        for d in docs[:4]
    )
    found = sum(d.get("status") == "found" for d in docs[4:])
    failed = [_why(d) for d in docs if d.get("status") not in ("found", "downloaded")]
    return {"saturated": saturated, "intact": intact, "found": found, "failed": failed,
            **figures}  # fmt: skip


def _download(node: LabNode, wait: str) -> subprocess.Popen[str]:
    return node.zwalk_bg("find", f"big-{node.host}.bin", "--json", "--timeout", wait)


def _fetching(node: LabNode) -> bool:  # its download has begun (a .part file) or is over
    got = node.home / "downloaded"
    return got.exists() and any(got.glob(f"big-{node.host}.bin*"))


def _allowance() -> float:
    """MiB the node may add to its idle RSS under this load (the module docstring says why)."""
    windows = 4 * TRANSFER.max_window
    pool = 2 * MAX_CONCURRENT_READS * TRANSFER.frame_bytes
    relays = MAX_RELAYS * 64 * 1024
    return (windows + pool + relays) / MIB + 64


def _why(d: dict[str, Any]) -> str:
    why = f"{d.get('query', {}).get('text')}: {d.get('status')} {d.get('error', '')} "
    return f"{why}{d.get('errors', '')} after {(d.get('walk') or {}).get('elapsed_ms')} ms"[:300]


# --- soak -------------------------------------------------------------------------------------


def soak(scale: Scale) -> dict[str, Any]:
    """Mixed traffic against one node for 10 minutes: RSS and descriptors at 1 minute and end."""
    duration, every = (600.0, 5.0) if scale.full else (60.0, 2.0)
    # "After one minute" and "at the end": the medians of the samples in these windows (the
    # quick run compares 10-20 s with its last 10 s).
    early = (45.0, 75.0) if scale.full else (10.0, 20.0)
    late = (duration - 30, duration) if scale.full else (duration - 10, duration)
    started = time.monotonic()
    with _base() as base, Lab(5) as lab:
        target = LabNode(lab, 0, base)
        target.share.mkdir(parents=True)
        media = {f"media-{i}.bin": os.urandom(2 * MIB + i) for i in range(4)}
        docs = {f"docs-{i}.txt": f"document {i}\n".encode() * 100 for i in range(20)}
        for name, data in (media | docs).items():
            (target.share / name).write_bytes(data)
        log = base / "h0" / "serve-v.log"
        start_nodes([target], ("-v", "--log-file", str(log)))
        wait_until(lambda: (st := target.status()) is not None and st.files == 24, 60, 0.2)
        users = [LabNode(lab, i, base, files={f"h{i}.txt": b"x"}) for i in (1, 2)]
        start_nodes(users)
        comer = LabNode(lab, 3, base, files={"comer.txt": b"c"})
        gen = load_peers(lab, 4, target, "--peers", "2", "--walks", "0", "--every", "0.5",
                         "--linger", str(duration), "--deadline", str(duration + 60))  # fmt: skip
        traffic = Traffic(target, users, comer, media)
        go(gen)
        with Sampler(target.proc.pid, every) as sampler:  # type: ignore[union-attr]
            while time.monotonic() - sampler.t0 < duration:
                began = time.monotonic()
                traffic.step()
                time.sleep(max(0.0, 0.5 - (time.monotonic() - began)))  # one action a 0.5 s
        pings = json.loads(readline(gen, 120))
        comer.stop()
        problems = log_problems(log.read_text(errors="replace"))
    rss0, fds0 = sampler.around(*early)
    rss1, fds1 = sampler.around(*late)
    t = duration / 10  # and the median of each tenth of the run: a trend, if there is one
    trend = [round(sampler.around(k * t, k * t + t)[0], 1) for k in range(10)]
    lost = sum(pings["unanswered"].values())
    ok = (
        rss1 <= 1.1 * rss0
        and fds1 <= 1.1 * fds0
        and problems["errors"] == problems["tracebacks"] == 0
        and not traffic.failed
        and lost == 0
    )
    return {
        "ok": ok,
        "rss_mib_early_late": [round(rss0, 1), round(rss1, 1)],
        "rss_growth": round(rss1 / rss0 - 1, 3),
        "fds_early_late": [fds0, fds1],
        "fds_growth": round(fds1 / fds0 - 1, 3),
        "rss_peak_mib": round(sampler.peak_mib(), 1),
        "rss_trend_mib": trend,
        "samples": len(sampler.samples),
        "actions": dict(traffic.done),
        "failed": traffic.failed[:10],
        "pings_sent": pings["requests"].get("ping", 0),
        "searches_sent": pings["requests"].get("search", 0),
        "unanswered": lost,
        **problems,
        "seconds": round(time.monotonic() - started, 1),
    }


class Traffic:
    """The soak's actions, one per step in turn, each checked: what a user would notice."""

    def __init__(
        self, target: LabNode, users: list[LabNode], comer: LabNode, media: dict[str, bytes]
    ) -> None:
        self.target, self.users, self.comer, self.media = target, users, comer, media
        self.done: Counter[str] = Counter()
        self.failed: list[str] = []
        self.n = 0
        self.actions = [self.find_name, self.find_glob, self.fetch_by_cid, self.listing,
                        self.change_share, self.find_name, self.peer]  # fmt: skip

    def step(self) -> None:
        action = self.actions[self.n % len(self.actions)]
        user = self.users[self.n % len(self.users)]
        self.n += 1
        try:
            why = action(user)
        except (subprocess.TimeoutExpired, OSError, ValueError, KeyError) as e:
            why = f"{type(e).__name__}: {e}"
        self.done[action.__name__] += 1
        if why:
            self.failed.append(f"{action.__name__} #{self.n}: {why}"[:300])

    def _find(self, user: LabNode, *args: str) -> dict[str, Any]:
        r = user.zwalk("find", *args, "--json", "--timeout", "20", timeout=60)
        return json.loads(r.stdout)  # type: ignore[no-any-return]

    def find_name(self, user: LabNode) -> str:
        doc = self._find(user, f"docs-{self.n % 20}.txt", "--no-download")
        return "" if doc["status"] == "found" else f"{doc['status']}"

    def find_glob(self, user: LabNode) -> str:
        doc = self._find(user, f"docs-{self.n % 2}*.txt", "--no-download")
        return "" if doc["status"] == "found" and doc["hits"] else f"{doc['status']}"

    def fetch_by_cid(self, user: LabNode) -> str:
        name, data = list(self.media.items())[self.n % len(self.media)]
        out = user.home / "soak-fetch"
        doc = self._find(user, p.cid_to_text(blake3.blake3(data).digest()), "--out", str(out))
        got = Path(doc["download"]["path"]) if doc.get("download") else None
        intact = got is not None and got.read_bytes() == data
        shutil.rmtree(out, ignore_errors=True)
        return "" if intact else f"{name}: {doc['status']} {doc.get('errors')}"

    def listing(self, user: LabNode) -> str:
        r = user.zwalk("ls", "h0", "--json", timeout=60)
        doc = json.loads(r.stdout)
        names = {f["name"] for f in doc["files"]}
        missing = {f"docs-{i}.txt" for i in range(20)} | set(self.media)
        return "" if missing <= names else f"ls misses {sorted(missing - names)[:3]}"

    def change_share(self, user: LabNode) -> str:
        """The file added last time is found; one is added, the one before rewritten, an
        older one removed: at most three churn files at a time."""
        k, share = self.done["change_share"], self.target.share
        why = ""
        if k:
            doc = self._find(user, f"churn-{k - 1}.txt", "--no-download")
            why = "" if doc["status"] == "found" else f"new churn-{k - 1}.txt: {doc['status']}"
        (share / f"churn-{k}.txt").write_text(f"new {k}\n")
        if k >= 1:
            (share / f"churn-{k - 1}.txt").write_text(f"changed {k - 1}\n" * 3)
        if k >= 3:
            (share / f"churn-{k - 3}.txt").unlink()
        return why

    def peer(self, user: LabNode) -> str:
        """A peer comes, or goes: by SIGTERM and by SIGKILL in turn."""
        if self.comer.proc is None:
            self.comer.start(wait=False)
        else:
            self.comer.stop(signal.SIGKILL if self.done["peer"] % 4 == 3 else signal.SIGTERM)
        return ""


SCENARIOS = {"load": load, "soak": soak}
