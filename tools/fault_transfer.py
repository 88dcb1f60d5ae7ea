"""Transfers under faults: lossy and slow links, a source or the downloader killed mid-transfer,
power loss (simulated by SIGKILL right after writes) and a disk that fills up.

Each scenario builds its own lab (tools/netlab.py), runs `zwalk serve` on every host and real
`zwalk find` commands on them, and returns its figures with `ok` (did it meet its target). The
payloads are seeded, so a run is repeatable up to timing. Run through tools/faultlab.py:

    python tools/faultlab.py run lossy slow kill-source --scale full
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import blake3
from fault_transfer_sync import sync_order
from faultlab import Scale
from labnodes import LabNode, short_tmp, wait_until
from netlab import Lab

from zwalk.core import protocol as p
from zwalk.store import resume

MIB = 1 << 20
Figures = dict[str, Any]


# --- the pieces every scenario uses --------------------------------------------------------------
def payload(size: int, seed: int) -> bytes:
    rng = random.Random(seed)  # in pieces: randbytes takes at most 256 MiB at once
    return b"".join(rng.randbytes(min(16 * MIB, size - i)) for i in range(0, size, 16 * MIB))


def file_info(data: bytes, chunk_size: int = MIB) -> p.FileInfo:
    """The file-info a holder sends for `data` (its chunk hashes): what a claim is checked by."""
    n = p.chunk_count(len(data), chunk_size)
    hashes = b"".join(
        blake3.blake3(data[i * chunk_size : (i + 1) * chunk_size]).digest() for i in range(n)
    )
    return p.FileInfo(
        req=0, cid=blake3.blake3(data).digest(), size=len(data), chunk_size=chunk_size,
        hashes=hashes,
    )  # fmt: skip


@contextlib.contextmanager
def lab_and_base(n: int) -> Iterator[tuple[Lab, Path]]:
    with Lab(n) as lab, contextlib.contextmanager(short_tmp)() as base:
        yield lab, base


def swarm(lab: Lab, base: Path, shares: list[dict[str, bytes]], chunk: int = MIB) -> list[LabNode]:
    """`zwalk serve` on host i sharing shares[i] (in chunks of `chunk`), all seeing each other."""
    nodes = [LabNode(lab, i, base, files=files) for i, files in enumerate(shares)]
    for node in nodes:
        node.home.mkdir(parents=True, exist_ok=True)
        ini = node.home / "share.ini"
        ini.write_text(f"[share]\nchunk_size = {chunk}\n")
        node.start(wait=False, extra=("--config", str(ini)))
    for node in nodes:
        node.wait_ready()
    for node in nodes:
        wait_until(lambda node=node: len(node.alive_peers()) == len(nodes) - 1, timeout=30)
    return nodes


def find(
    node: LabNode, name: str, out: Path, *, timeout: float = 120, under: list[str] | None = None
) -> Figures:
    """One `zwalk find NAME --json --out OUT` on the node's host: exit status, JSON, seconds."""
    args = ("find", name, "--json", "--out", str(out))
    started = time.monotonic()
    try:
        r = node.zwalk_under(under or [], *args, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"rc": None, "doc": {}, "wall": timeout, "err": f"no end within {timeout} s"}
    return _result(r.returncode, r.stdout, r.stderr, time.monotonic() - started)


def _result(rc: int | None, out: str, err: str, wall: float) -> Figures:
    try:
        doc = json.loads(out) if out.strip() else {}
    except ValueError:
        doc = {}
    return {"rc": rc, "doc": doc, "wall": wall, "err": err[-1500:]}


def finish(proc: subprocess.Popen[str], started: float, timeout: float = 120) -> Figures:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
    return _result(proc.returncode, out, err, time.monotonic() - started)


def got(r: Figures, data: bytes, view: Callable[[Path], Path] = Path) -> bool:
    """Whether a find ended with `data`, byte for byte, where its JSON says it saved it (seen
    through `view` when that is in another mount namespace)."""
    d = r["doc"].get("download") or {}
    return r["rc"] == 0 and bool(d) and view(Path(d["path"])).read_bytes() == data


def why(r: Figures) -> str:
    errors = r["doc"].get("errors") or [r["err"].strip()[-300:]]
    return f"rc {r['rc']}: {'; '.join(str(e) for e in errors)[:300]}"


def part_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.part")) if folder.is_dir() else []


def part_state(folder: Path, info: p.FileInfo) -> tuple[set[int], set[int], bool]:
    """(chunks the .part's record claims, chunks on disk with their right hash, whether the
    record was unreadable) for the one .part in `folder`: what a crash left there."""
    parts = part_files(folder)
    if not parts:
        return set(), set(), False
    record = parts[0].with_name(parts[0].name + ".progress")
    raw = record.read_bytes() if record.exists() else b""
    try:
        claimed = resume.decode(raw, info) if raw else set()
        bad = False
    except resume.BadRecord:
        claimed, bad = set(), True
    data = parts[0].read_bytes()
    cs = info.chunk_size
    on_disk = {
        i
        for i in range(p.chunk_count(info.size, cs))
        if blake3.blake3(data[i * cs : (i + 1) * cs]).digest() == info.chunk_hash(i)
    }
    return claimed, on_disk, bad


def claimed_now(folder: Path, info: p.FileInfo) -> int:
    """Chunks the record in `folder` claims at this moment (0 while there is none)."""
    for record in folder.glob("*.part.progress") if folder.is_dir() else ():
        with contextlib.suppress(OSError, resume.BadRecord):
            return len(resume.decode(record.read_bytes(), info))
    return 0


def nbytes(info: p.FileInfo, chunks: set[int]) -> int:
    return sum(min(info.chunk_size, info.size - i * info.chunk_size) for i in chunks)


# --- lossy and slow links ------------------------------------------------------------------------
def _links(
    scale: Scale, impair: Callable[[Lab, int], None], clear: Callable[[Lab, int], int]
) -> Figures:
    """Rounds of finds from every host, each for a file two other hosts hold, alternately on clean
    links and with the impaired hosts' links impaired; the same finds both ways. `clear` lifts
    the impairment and says how many packets it dropped or held: that it was there."""
    n = 6 if scale.full else 4
    bad = (1, 4) if scale.full else (1,)
    size = (3 if scale.full else 2) * MIB
    rounds = 4 if scale.full else 2
    files = {f"f{j}.bin": payload(size, seed=j) for j in range(n)}  # f<j> on hosts j and j+1
    with lab_and_base(n) as (lab, base):
        nodes = swarm(lab, base, [{f"f{j}.bin": files[f"f{j}.bin"] for j in (i, (i - 1) % n)}
                                  for i in range(n)])  # fmt: skip
        for h in bad:
            clear(lab, h)
        runs: dict[str, list[Figures]] = {"clean": [], "impaired": []}
        packets = 0
        for r in range(rounds):
            order = ("clean", "impaired") if r % 2 == 0 else ("impaired", "clean")
            for cond in order:
                for h in bad:
                    packets += clear(lab, h)
                    if cond == "impaired":
                        impair(lab, h)
                jobs = []
                for i in range(n):
                    j = (i + 2 + r % (n - 3)) % n
                    touched = i in bad or j in bad or (j + 1) % n in bad
                    jobs.append((nodes[i], f"f{j}.bin", base / f"out-{cond}-{r}-{i}", touched))
                with ThreadPoolExecutor(2) as pool:  # two finds at a time
                    done = list(pool.map(lambda job: (job, find(*job[:3])), jobs))
                for (node, name, _, touched), res in done:
                    res.update(host=node.host, name=name, touched=touched,
                               ok=got(res, files[name]))  # fmt: skip
                    runs[cond].append(res)
        packets += sum(clear(lab, h) for h in bad)
    return {**_slowdown(runs), "impaired_packets": packets}


def _slowdown(runs: dict[str, list[Figures]]) -> Figures:
    def total(cond: str, touched_only: bool = False) -> float:
        return sum(r["wall"] for r in runs[cond] if r["touched"] or not touched_only)

    pairs = [b["wall"] / a["wall"] for a, b in zip(runs["clean"], runs["impaired"], strict=True)]
    failed = [
        f"{c} h{r['host']} {r['name']}: {why(r)}" for c in runs for r in runs[c] if not r["ok"]
    ]
    d_secs = {
        c: sum((r["doc"].get("download") or {}).get("seconds", 0) for r in runs[c]) for c in runs
    }
    return {
        "ok": not failed,
        "finds": {c: len(runs[c]) for c in runs},
        "succeeded": {c: sum(r["ok"] for r in runs[c]) for c in runs},
        "seconds_total": {c: round(total(c), 2) for c in runs},
        "download_seconds_total": {c: round(s, 2) for c, s in d_secs.items()},
        "slowdown": round(total("impaired") / total("clean"), 2),
        "slowdown_touching_impaired_hosts": round(
            total("impaired", True) / max(total("clean", True), 1e-9), 2
        ),
        "slowdown_median_per_find": round(statistics.median(pairs), 2),
        "slowest_find_s": round(max(r["wall"] for c in runs for r in runs[c]), 2),
        "failures": failed[:5],
    }


def _lossy_on(lab: Lab, h: int) -> None:
    lab.shape(h, loss="5%")


def _lossy_off(lab: Lab, h: int) -> int:
    dropped = _rule_packets(lab, h, "statistic")
    lab.shape(h, loss="0%")  # no rule; every host keeps MTU-sized segments either way
    return dropped


def lossy(scale: Scale) -> Figures:
    """5% loss on some hosts during finds and downloads: all succeed, intact; how much slower."""
    return _links(scale, _lossy_on, _lossy_off)


def _slow_on(lab: Lab, h: int) -> None:
    lab.shape(h, delay="50ms", jitter="10ms")


def _slow_off(lab: Lab, h: int) -> int:
    held = _rule_packets(lab, h, "NFQUEUE")
    lab._stop_delay(h)  # netlab has no public way to lift a delay; this is how close() does it
    return held


def _rule_packets(lab: Lab, h: int, marker: str) -> int:
    """Packets the host's INPUT rule that mentions `marker` has matched (0 if there is none)."""
    out = lab.run(h, ["iptables", "-w", "-L", "INPUT", "-n", "-v", "-x"]).stdout
    return sum(int(line.split()[0]) for line in out.splitlines()[2:] if marker in line)


def slow(scale: Scale) -> Figures:
    """50 +-10 ms delay on some hosts during finds and downloads: all succeed; how much slower."""
    return _links(scale, _slow_on, _slow_off)


# --- a source killed -----------------------------------------------------------------------------
def kill_source(scale: Scale) -> Figures:
    """A source SIGKILLed mid-transfer: the others finish the download; time vs undisturbed."""
    holders, rounds = 3, (3 if scale.full else 1)
    size = (32 if scale.full else 16) * MIB
    data = payload(size, seed=100)
    info = file_info(data)
    n = p.chunk_count(size, info.chunk_size)
    rng = random.Random(1)
    rows = []
    with lab_and_base(holders + 1) as (lab, base):
        nodes = swarm(lab, base, [{}] + [{"payload.bin": data}] * holders)
        for h in range(1, holders + 1):
            lab.shape(h, rate="24mbit")  # 3 MB/s each
        for r in range(rounds):
            calm = find(nodes[0], "payload.bin", base / f"calm{r}")
            out = base / f"killed{r}"
            started = time.monotonic()
            proc = nodes[0].zwalk_bg("find", "payload.bin", "--json", "--out", str(out))
            share = rng.uniform(0.2, 0.6)
            wait_until(lambda out=out, share=share, proc=proc: claimed_now(out, info) >= share * n
                       or proc.poll() is not None, timeout=60)  # fmt: skip
            victim = nodes[1 + r % holders]
            done = claimed_now(out, info) / n
            old_id = victim.node
            victim.stop(signal.SIGKILL)
            res = finish(proc, started)
            victim.start()  # the same data dir: the same identity comes back
            for node in nodes:
                wait_until(lambda node=node: len(node.alive_peers()) == holders, timeout=30)
            rows.append(_killed_row(calm, res, data, done, holders, victim, old_id))
    ratios = [row["killed_s"] / row["calm_s"] for row in rows if row["ok"]]
    return {
        "ok": all(row["ok"] for row in rows),
        "rounds": len(rows),
        "completed": sum(row["ok"] for row in rows),
        "slowdown_mean": round(statistics.mean(ratios), 2) if ratios else None,
        "overhead_s_max": max((row["overhead_s"] for row in rows), default=None),
        "per_round": rows,
    }


def _killed_row(calm: Figures, res: Figures, data: bytes, done: float, holders: int,
                victim: LabNode, old_id: str) -> Figures:  # fmt: skip
    d, c = res["doc"].get("download") or {}, calm["doc"].get("download") or {}
    calm_s, killed_s = c.get("seconds", 0.0), d.get("seconds", 0.0)
    # the others taking over at once: the rest at (holders - 1) / holders of the rate
    ideal = calm_s * (done + (1 - done) * holders / (holders - 1))
    by_host = {label.split()[0]: n for label, n in d.get("bytes_by_source", {}).items()}
    return {
        "ok": got(res, data) and got(calm, data) and victim.node == old_id,
        "calm_s": round(calm_s, 2),
        "killed_s": round(killed_s, 2),
        "ideal_s": round(ideal, 2),
        "overhead_s": round(killed_s - ideal, 2),
        "killed_at_share": round(done, 2),
        "victim": f"h{victim.host}",
        "victim_bytes": by_host.get(f"h{victim.host}", 0),
        "excluded": d.get("excluded", {}),
        "error": "" if got(res, data) else why(res),
        "same_identity_after_restart": victim.node == old_id,
    }


# --- the downloader killed -----------------------------------------------------------------------
def scheduler_window(rate: float, chunk: int = MIB) -> int:
    """The window the chunk scheduler keeps toward one source delivering `rate` bytes/s with a
    LAN's round trip (as core/sources.py fits it), and at least the one it starts with."""
    from zwalk.core.sources import DEFAULTS, SourceState

    st = SourceState(window=DEFAULTS.window, frame_chunks=1, rate=rate, rtt=0.001)
    st.fit(chunk, DEFAULTS.frame_bytes // chunk, DEFAULTS.max_window, DEFAULTS.queue_target)
    return max(st.window, DEFAULTS.window)


def kill_downloader(scale: Scale) -> Figures:
    """The downloader SIGKILLed mid-transfer: the rerun resumes, re-fetching at most a window."""
    rounds = 8 if scale.full else 4
    size = (48 if scale.full else 32) * MIB
    data = payload(size, seed=200)
    info = file_info(data)
    n = p.chunk_count(size, info.chunk_size)
    window = scheduler_window(10e6)  # 80 Mbit/s
    rng = random.Random(2)
    rows = []
    with lab_and_base(2) as (lab, base):
        nodes = swarm(lab, base, [{}, {"payload.bin": data}])
        lab.shape(1, rate="80mbit")
        for r in range(rounds):
            out = base / f"out{r}"
            proc = nodes[0].zwalk_bg("find", "payload.bin", "--json", "--out", str(out))
            at = rng.uniform(0.1, 0.6)
            wait_until(lambda out=out, at=at, proc=proc: claimed_now(out, info) >= at * n
                       or proc.poll() is not None, timeout=60)  # fmt: skip
            worst = r % 2 == 1  # every other kill when the record is oldest: the worst moment
            if worst:
                _record_gone_stale(out, proc)
            else:
                time.sleep(rng.uniform(0, 0.5))  # anywhere between two records
            if proc.poll() is not None:
                proc.communicate()
                rows.append({"ok": False, "error": "finished before the kill"})
                continue
            proc.kill()
            proc.communicate(timeout=10)
            rows.append(_resumed_row(nodes[0], out, data, info, window, worst))
    refetched = max((row.get("refetched_bytes", 0) for row in rows), default=0)
    return {
        "ok": all(row["ok"] for row in rows),
        "rounds": len(rows),
        "window_bytes": window,
        "refetched_bytes_max": refetched,
        "refetched_over_window_max": round(refetched / window, 2),
        "per_round": rows,
    }


def _record_gone_stale(out: Path, proc: subprocess.Popen[str], stale: float = 0.45) -> None:
    """Wait until the progress record has gone `stale` seconds without a rewrite (just before a
    record every SAVE_EVERY = 0.5 s would be due), or 1.5 s if it never does."""
    started = changed = time.monotonic()
    last = _record_stamp(out)
    while time.monotonic() - started < 1.5 and proc.poll() is None:
        if (now := _record_stamp(out)) != last:
            last, changed = now, time.monotonic()
        elif time.monotonic() - changed >= stale:
            return
        time.sleep(0.005)


def _resumed_row(node: LabNode, out: Path, data: bytes, info: p.FileInfo, window: int,
                 worst: bool) -> Figures:  # fmt: skip
    """What a kill left in `out`, and what the same find did with it."""
    claimed, on_disk, torn = part_state(out, info)
    rerun = find(node, "payload.bin", out)
    d = rerun["doc"].get("download") or {}
    refetched = nbytes(info, on_disk - claimed)  # verified, written, not yet recorded
    row = {
        "kill": "record stalest" if worst else "random",
        "claimed_bytes": nbytes(info, claimed),
        "refetched_bytes": refetched,
        "resumed_bytes": d.get("resumed_bytes"),
        "fetched_bytes": d.get("fetched_bytes"),
        "record_true": claimed <= on_disk and not torn,
        "identical": got(rerun, data),
    }
    row["ok"] = (
        row["record_true"]
        and row["identical"]
        and d.get("resumed_bytes") == nbytes(info, claimed)
        and d.get("fetched_bytes") == len(data) - nbytes(info, claimed)
        and refetched <= window
    )
    if not row["identical"]:
        row["error"] = why(rerun)
    return row


# --- power loss, simulated by kills --------------------------------------------------------------
def power_loss(scale: Scale) -> Figures:
    """Kills while chunks are written: no record claims a chunk not on disk; the resume is exact."""
    kills = 30 if scale.full else 6
    size, chunk = (128 if scale.full else 24) * MIB, 256 << 10
    data, small = payload(size, seed=300), payload(8 * MIB, seed=301)
    info = file_info(data, chunk)
    rng = random.Random(3)
    untrue: list[str] = []
    claims, torn = [], 0
    with lab_and_base(2) as (lab, base):
        nodes = swarm(lab, base, [{}, {"payload.bin": data, "small.bin": small}], chunk)
        lab.shape(1, rate="40mbit")
        sync = _traced_download(nodes[0], base, small, chunk)
        out = base / "out"
        for k in range(kills):
            before = _record_stamp(out)
            proc = nodes[0].zwalk_bg("find", "payload.bin", "--json", "--out", str(out))
            # the first record this run writes: it is past the resume check, writing chunks
            wait_until(lambda before=before, proc=proc: _record_stamp(out) != before
                       or proc.poll() is not None, timeout=60)  # fmt: skip
            time.sleep(rng.uniform(0, 0.8))
            if proc.poll() is not None:
                proc.communicate()
                break
            proc.kill()
            proc.communicate(timeout=10)
            claimed, on_disk, bad = part_state(out, info)
            torn += bad
            claims.append(len(claimed))
            if not claimed <= on_disk:
                untrue.append(
                    f"kill {k}: chunks {sorted(claimed - on_disk)[:5]} claimed, not on disk"
                )
        # One claimed chunk goes bad on disk (a torn sector): the resume must not take it.
        claimed, _, _ = part_state(out, info)
        spoiled = rng.choice(sorted(claimed)) if claimed else None
        if spoiled is not None:
            with open(part_files(out)[0], "r+b") as f:
                f.seek(spoiled * chunk + 17)
                byte = f.read(1)
                f.seek(spoiled * chunk + 17)
                f.write(bytes([byte[0] ^ 0xFF]))
        last = find(nodes[0], "payload.bin", out)
        identical = got(last, data)
    d = last["doc"].get("download") or {}
    trusted = nbytes(info, claimed - {spoiled} if spoiled is not None else claimed)
    return {
        "ok": not untrue
        and not torn
        and len(claims) == kills
        and identical
        and d.get("resumed_bytes") == trusted
        and sync["ok"],
        "kills": len(claims),
        "chunks": p.chunk_count(size, chunk),
        "claimed_chunks_after_each_kill": claims,
        "records_claiming_missing_chunks": untrue[:5],
        "unreadable_records": torn,
        "spoiled_chunk_refetched": d.get("resumed_bytes") == trusted,
        "final_identical": identical,
        "final_error": "" if identical else why(last),
        "sync_order": sync,
    }


def _record_stamp(out: Path) -> tuple[int, int] | None:
    """When the progress record in `out` was last written (None while there is none)."""
    for record in out.glob("*.part.progress") if out.is_dir() else ():
        with contextlib.suppress(OSError):
            st = record.stat()
            return (st.st_mtime_ns, st.st_ino) if st.st_size else None
    return None


def _traced_download(node: LabNode, base: Path, data: bytes, chunk: int) -> Figures:
    """One download under strace: does every progress record follow an fdatasync of the .part
    that began after every chunk it claims was written? (What a real power loss relies on.)"""
    trace, out = base / "strace.txt", base / "traced"
    strace = ["strace", "-f", "-qq", "-s", "65536", "-xx", "-o", str(trace),
              "-e", "trace=openat,close,pwrite64,fdatasync,fsync"]  # fmt: skip
    try:
        r = find(node, "small.bin", out, under=strace)
    except OSError as e:
        return {"ok": False, "error": f"strace: {e}"}
    if not got(r, data) or not trace.exists():
        return {"ok": False, "error": why(r)}
    writes, problems = sync_order(trace.read_text(), file_info(data, chunk))
    return {"ok": writes > 0 and not problems, "record_writes": writes, "problems": problems[:5]}


# --- a full disk ---------------------------------------------------------------------------------
class Mounts:
    """Small file systems mounted in a mount namespace of their own (a `sleep` on host 0 holds it;
    when it ends, they go), seen from here through /proc/<pid>/root."""

    def __init__(self, lab: Lab) -> None:
        self.holder = lab.spawn(
            0, ["unshare", "--mount", "--propagation", "private", "sleep", "900"]
        )
        # `ip netns exec` makes a mount namespace of its own before it runs unshare, which makes
        # ours: mounts go in once `sleep` runs, or they land in the one unshare copies too soon.
        comm = Path(f"/proc/{self.holder.pid}/comm")
        wait_until(lambda: comm.read_text().strip() == "sleep", timeout=10)
        self.enter = ["nsenter", f"--mount=/proc/{self.holder.pid}/ns/mnt"]
        self.points: list[Path] = []

    def view(self, path: Path) -> Path:
        return Path(f"/proc/{self.holder.pid}/root") / path.relative_to("/")

    def _mount(self, args: list[str], at: Path) -> None:
        at.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([*self.enter, "mount", *args, str(at)], capture_output=True,
                           text=True, timeout=30, check=False)  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"mount {' '.join(args)}: {r.stderr.strip()}")
        self.points.append(at)
        if self.view(at).stat().st_dev == at.stat().st_dev:  # not in the namespace we use
            raise RuntimeError(f"{at} is not mounted where the downloads run")

    def tmpfs(self, at: Path, size: int) -> Path:
        """A tmpfs of `size` bytes: it allocates a file's blocks up front (fallocate)."""
        self._mount(["-t", "tmpfs", "-o", f"size={size}", "zwalk-fault"], at)
        return at

    def ext2(self, at: Path, size: int) -> Path:
        """An ext2 file system of `size` bytes on a loop device: no fallocate, so a .part stays
        sparse and a write can find the disk full."""
        image = at.with_name(at.name + ".img")
        with open(image, "wb") as f:
            f.truncate(size)
        subprocess.run(["mkfs.ext2", "-q", "-F", "-m", "0", "-b", "1024", str(image)],
                       check=True, capture_output=True, timeout=60)  # fmt: skip
        self._mount(["-o", "loop", str(image)], at)
        return at

    def close(self) -> None:
        for at in reversed(self.points):  # the loop device goes with its mount (autoclear)
            subprocess.run([*self.enter, "umount", str(at)], capture_output=True, timeout=30,
                           check=False)  # fmt: skip
        self.points.clear()


def fill(folder: Path, limit: int) -> int:
    """Write a filler file into `folder` until the disk is full (at most `limit` bytes)."""
    written = 0
    with contextlib.suppress(OSError), open(folder / "filler.bin", "wb", buffering=0) as f:
        while written < limit:
            written += f.write(b"\xa5" * (64 << 10))
            os.fsync(f.fileno())
    return written


def sums(folder: Path) -> dict[str, str]:
    return {
        x.name: blake3.blake3(x.read_bytes()).hexdigest() for x in folder.iterdir() if x.is_file()
    }


def disk_full(scale: Scale) -> Figures:
    """A disk full at the start or mid-way: one clear error, a resumable .part, others untouched."""
    size = (16 if scale.full else 6) * MIB
    data, big = payload(size, seed=400), payload(size + 8 * MIB, seed=401)
    info = file_info(data)
    mine = {"notes.txt": b"keep me\n" * 100, "photo.jpg": payload(MIB, seed=402)}
    figures: Figures = {}
    with lab_and_base(2) as (lab, base):
        nodes = swarm(lab, base, [{}, {"mid.bin": data, "big.bin": big}])
        lab.shape(1, rate="24mbit")  # 3 MB/s: a few seconds to fill the disk in
        mounts = Mounts(lab)
        try:
            under = [*mounts.enter, f"--wd={nodes[0].home}"]
            # 1. A file larger than the free space, on a disk that reserves space up front.
            small = mounts.tmpfs(base / "small", size)
            for name, content in mine.items():
                (mounts.view(small) / name).write_bytes(content)
            before = sums(mounts.view(small))
            r = find(nodes[0], "big.bin", small, under=under)
            after = sums(mounts.view(small))
            figures["too_big"] = _refused(r, small, (len(big), len(big)), before, after)
            # 2. A disk that fills up mid-download (ext2: the .part is sparse).
            figures["fills_up"] = _fills_up(nodes[0], mounts, base, under, data, info, mine)
            # 3. The same on a disk that reserved the .part's space: the download goes on.
            roomy = mounts.tmpfs(base / "roomy", size + 2 * MIB)
            out = mounts.view(roomy)
            for name, content in mine.items():
                (out / name).write_bytes(content)
            started = time.monotonic()
            proc = nodes[0].zwalk_bg_under(under, "find", "mid.bin", "--json", "--out", str(roomy))
            wait_until(lambda: claimed_now(out, info) >= 2 or proc.poll() is not None, timeout=60)
            filled = fill(out, 4 * size)
            res = finish(proc, started)
            figures["fills_up_reserved"] = {
                "ok": got(res, data, mounts.view) and sums(out).keys() >= mine.keys(),
                "filler_bytes": filled,
                "error": "" if res["rc"] == 0 else why(res),
            }
        finally:
            mounts.close()
    figures["ok"] = all(f["ok"] for f in figures.values())
    return figures


def _refused(r: Figures, folder: Path, need: tuple[int, int], before: dict[str, str],
             after: dict[str, str]) -> Figures:  # fmt: skip
    """A download the disk had no room for: exit 3, one error naming the folder and the space
    the file needs (between need[0] and need[1] bytes), every other file as it was."""
    errors = r["doc"].get("errors") or []
    text = " ".join(errors)
    said = re.search(r"needs (\d+\.\d+) MiB", text)
    space = float(said[1]) * MIB if said else -1.0
    untouched = all(after.get(k) == v for k, v in before.items())
    return {
        "ok": r["rc"] == 3
        and len(errors) == 1
        and f"not enough space in {folder}:" in text
        and need[0] - MIB / 20 <= space <= need[1] + MIB / 20
        and untouched,
        "exit": r["rc"],
        "error": text,
        "others_untouched": untouched,
        "left_behind": sorted(set(after) - set(before)),
    }


def _fills_up(node: LabNode, mounts: Mounts, base: Path, under: list[str], data: bytes,
              info: p.FileInfo, mine: dict[str, bytes]) -> Figures:  # fmt: skip
    size = len(data)
    disk = mounts.ext2(base / "disk", size + 3 * MIB)
    out = mounts.view(disk)
    for name, content in mine.items():
        (out / name).write_bytes(content)
    before = sums(out)
    started = time.monotonic()
    proc = node.zwalk_bg_under(under, "find", "mid.bin", "--json", "--out", str(disk))
    third = p.chunk_count(size, info.chunk_size) // 3
    wait_until(lambda: claimed_now(out, info) >= third or proc.poll() is not None, timeout=60)
    filler = fill(out, 2 * size)
    res = finish(proc, started)
    claimed, on_disk, torn = part_state(out, info)
    missing = size - nbytes(info, claimed)
    figures = _refused(res, disk, (1, missing), before, sums(out))  # some of what is missing
    failed = (res["doc"].get("failed") or [{}])[0]
    figures.update(filler_bytes=filler, kept_bytes=nbytes(info, claimed),
                   record_true=claimed <= on_disk and not torn,
                   part_reported=bool(failed.get("part")) and failed.get("kept_bytes")
                   == nbytes(info, claimed))  # fmt: skip
    (out / "filler.bin").unlink()  # space freed: the same find again
    again = find(node, "mid.bin", disk, under=under)
    d = again["doc"].get("download") or {}
    files = sorted(x.name for x in out.iterdir() if x.is_file())
    figures.update(
        resumed_bytes=d.get("resumed_bytes"),
        fetched_bytes=d.get("fetched_bytes"),
        identical=got(again, data, mounts.view),
        files_after=files,
        others_untouched_after=all(sums(out).get(k) == v for k, v in before.items()),
    )
    figures["ok"] = bool(
        figures["ok"] and figures["record_true"] and figures["part_reported"]
        and figures["identical"] and d.get("resumed_bytes") == nbytes(info, claimed) and claimed
        and d.get("fetched_bytes") == missing and figures["others_untouched_after"]
        and files == sorted([*mine, "mid.bin"])
    )  # fmt: skip
    if not figures["identical"]:
        figures["error_after"] = why(again)
    return figures


SCENARIOS: dict[str, Callable[[Scale], Figures]] = {
    "lossy": lossy,
    "slow": slow,
    "kill-source": kill_source,
    "kill-downloader": kill_downloader,
    "power-loss": power_loss,
    "disk-full": disk_full,
}
