#!/usr/bin/env python3
"""Multi-source transfer benchmark in the lab: one file from 1 source, then from N sources,
each source's link capped by `tc` (tbf), through `zwalk find` and a running local node.

Host 0 runs the local node and the finds; hosts 1..N hold the same file. Rounds alternate: in
a 1-source round only host 1 serves it (the others are stopped, and leave), in an N-source
round every host does, and each round starts with the other kind than the one before. The
figure is the download phase `zwalk find --json` reports (`downloads[0].seconds`); the ratio
is the median of N sources against the median of 1, from the same run.

    sudo unshare --net sh -c 'ip link set lo up; python tools/transfer_lab_bench.py'

Target (issue 5): 3 sources at 200 Mbit/s each, >= 2.7x the throughput of one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import netlab  # noqa: E402

from zwalk.net import control  # noqa: E402
from zwalk.store import state  # noqa: E402
from zwalk.store.hashing import file_blake3  # noqa: E402


def serve(lab: netlab.Lab, host: int, base: Path) -> subprocess.Popen[bytes]:
    home = base / f"h{host}"
    (home / "share").mkdir(parents=True, exist_ok=True)
    log = (home / "serve.log").open("ab")
    cmd = lab.serve_cmd(host, home / "share", home / "data")
    proc = lab.spawn(host, cmd, stdout=subprocess.DEVNULL, stderr=log)
    log.close()
    deadline = time.monotonic() + 60
    while state.read_state(home / "data") is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"h{host}: serve did not start: {(home / 'serve.log').read_text()}")
        time.sleep(0.05)
    return proc


def find(lab: netlab.Lab, base: Path, cid: str) -> tuple[float, dict[str, object]]:
    home = base / "h0"
    out = home / "downloaded"
    cmd = [sys.executable, "-m", "zwalk", "find", cid, "--json", "--out", str(out)]
    cmd += ["--interface", lab.hosts[0].address, "--data-dir", str(home / "data")]
    r = lab.run(0, cmd, timeout=600, cwd=home)
    if r.returncode != 0:
        raise RuntimeError(f"find failed ({r.returncode}): {r.stdout[-2000:]} {r.stderr[-2000:]}")
    doc = json.loads(r.stdout)
    shutil.rmtree(out)
    d = doc["download"]
    return float(d["seconds"]), d


def wait_for_holders(lab: netlab.Lab, base: Path, holders: int, exactly: bool = False) -> None:
    """Until host 0's node holds every source alive, each with its file indexed (and, with
    `exactly`, no other)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        local = state.read_state(base / "h0" / "data")
        st = asyncio.run(control.status(local)) if local else None
        n = sum(1 for m in st.members if m.state == "alive" and m.files) if st else 0
        if n == holders or (n > holders and not exactly):
            return
        time.sleep(0.2)
    raise RuntimeError(f"host 0 does not see {holders} holders")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sources", type=int, default=3)
    ap.add_argument("--rate", default="200mbit", help="tc rate of each source's link")
    ap.add_argument("--size", type=int, default=256, help="file size in MiB (default 256)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = ap.parse_args()
    why = netlab.available()
    if why:
        print(f"lab unavailable: {why}", file=sys.stderr)
        return 2
    results: dict[int, list[float]] = {}  # sources -> seconds of each round
    with (
        tempfile.TemporaryDirectory(prefix="ztl", dir="/tmp") as tmp,  # noqa: S108
        netlab.Lab(args.sources + 1) as lab,
    ):
        base = Path(tmp)
        payload = base / "payload.bin"
        with open(payload, "wb") as f:
            for _ in range(args.size):
                f.write(os.urandom(1 << 20))
        for h in range(1, args.sources + 1):
            (base / f"h{h}" / "share").mkdir(parents=True)
            os.link(payload, base / f"h{h}" / "share" / "payload.bin")
        cid = "b3:" + file_blake3(payload).hex()
        serve(lab, 0, base)
        for h in range(1, args.sources + 1):
            lab.shape(h, rate=args.rate)
        serve(lab, 1, base)
        others: list[subprocess.Popen[bytes]] = []
        results.update({1: [], args.sources: []})
        for r in range(args.rounds):
            order = (1, args.sources) if r % 2 == 0 else (args.sources, 1)
            for phase in order:
                if phase == 1:
                    for proc in others:  # they leave (bye, mDNS goodbye)
                        lab.stop(proc)
                    others = []
                elif not others:
                    others = [serve(lab, h, base) for h in range(2, phase + 1)]
                wait_for_holders(lab, base, phase, exactly=True)
                time.sleep(1)  # let the holders' first pings settle
                seconds, d = find(lab, base, cid)
                rate = args.size * (1 << 20) / seconds / 1e6
                results[phase].append(seconds)
                used, dup = len(d["sources"]), d["end_game_requests"]  # type: ignore[arg-type]
                print(
                    f"round {r + 1}, {phase} source(s): {rate:7.1f} MB/s ({seconds:.2f} s), "
                    f"sources used {used}, end-game requests {dup}",
                    file=sys.stderr,
                )
    size = args.size * (1 << 20)
    rates = {k: size / statistics.median(v) / 1e6 for k, v in results.items()}
    if args.json:
        doc = {
            "mib": args.size,
            "rate": args.rate,
            "rounds": args.rounds,
            "mb_per_s": {str(k): round(v, 1) for k, v in rates.items()},
            "ratio": round(rates[args.sources] / rates[1], 3),
        }
        print(json.dumps(doc, indent=2))
        return 0
    print(f"{args.size} MiB, each source capped at {args.rate}, median of {args.rounds} rounds")
    for k, v in rates.items():
        print(f"  {k} source(s): {v:7.1f} MB/s")
    print(f"  {args.sources} sources / 1 source: {rates[args.sources] / rates[1]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
