#!/usr/bin/env python3
"""Discovery benchmark: how fast peers notice a node that starts, leaves, or crashes.

In a lab of N hosts (network namespaces on one bridge, see netlab.py), N-1 observers run
`zwalk serve`; the subject node on host 0 is started, stopped with SIGTERM, started again and
killed with SIGKILL, RUNS times. The observers' membership tables are read through their control
endpoints every few milliseconds. Reported, as median and 90th percentile over the runs:

  visible   from the `zwalk serve` command's start until every observer holds it alive
  sigterm   from SIGTERM until no observer holds it
  sigkill   from SIGKILL until no observer holds it

Targets (issue 3): visible <= 0.5 s, sigterm <= 0.5 s, sigkill <= 5 s (medians).

    sudo python tools/discovery_bench.py --hosts 4 --runs 10 [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
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

POLL = 0.005  # seconds between looks at the observers' tables
LIMIT = 30.0  # give up on one measurement after this long


def serve_cmd(lab: netlab.Lab, host: int, base: Path) -> list[str]:
    share = base / f"h{host}" / "share"
    share.mkdir(parents=True, exist_ok=True)
    (share / f"h{host}.txt").write_text(f"h{host}\n")
    return lab.serve_cmd(host, share, base / f"h{host}" / "data")


async def alive_at(observers: list[state.LocalNode], node: bytes) -> list[bool]:
    out = []
    for local in observers:
        st = await control.status(local, timeout=1.0)
        out.append(
            st is not None and any(m.node == node and m.state == "alive" for m in st.members)
        )
    return out


async def wait_for(
    observers: list[state.LocalNode], node: bytes, present: bool, since: float
) -> float:
    while True:
        seen = await alive_at(observers, node)
        if all(seen) if present else not any(seen):
            return time.monotonic() - since
        if time.monotonic() - since > LIMIT:
            raise TimeoutError(f"observers did not {'see' if present else 'drop'} the node")
        await asyncio.sleep(POLL)


def wait_state(data: Path, pid: int) -> state.LocalNode:
    deadline = time.monotonic() + LIMIT
    while time.monotonic() < deadline:
        local = state.read_state(data)
        if local is not None and local.pid == pid:
            return local
        time.sleep(0.005)
    raise TimeoutError(f"no node.json in {data}")


async def bench(hosts: int, runs: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"visible": [], "sigterm": [], "sigkill": []}
    with tempfile.TemporaryDirectory(prefix="zwb", dir="/tmp") as tmp, netlab.Lab(hosts) as lab:  # noqa: S108
        base = Path(tmp)
        observers = []
        for h in range(1, hosts):
            proc = lab.spawn(h, serve_cmd(lab, h, base), stderr=subprocess.DEVNULL)
            observers.append(wait_state(base / f"h{h}" / "data", proc.pid))
        subject_data = base / "h0" / "data"
        node: bytes | None = None
        for run in range(runs):
            for how in ("sigterm", "sigkill"):
                start = time.monotonic()
                proc = lab.spawn(0, serve_cmd(lab, 0, base), stderr=subprocess.DEVNULL)
                if node is None:
                    node = wait_state(subject_data, proc.pid).node
                visible = await wait_for(observers, node, True, start)
                results["visible"].append(visible)
                await asyncio.sleep(0.3)  # let the hellos settle before the next event
                sig = signal.SIGTERM if how == "sigterm" else signal.SIGKILL
                t0 = time.monotonic()
                proc.send_signal(sig)
                results[how].append(await wait_for(observers, node, False, t0))
                proc.wait(timeout=10)
                print(
                    f"run {run + 1}/{runs} {how}: visible {visible * 1000:.0f} ms, gone "
                    f"{results[how][-1] * 1000:.0f} ms",
                    file=sys.stderr,
                )
    return results


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return {
        "median_ms": round(statistics.median(values) * 1000, 1),
        "p90_ms": round(p90 * 1000, 1),
        "min_ms": round(ordered[0] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
        "n": len(values),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description="zwalk discovery benchmark (Linux, root)")
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    why = netlab.available()
    if why:
        print(f"discovery_bench: {why}", file=sys.stderr)
        return 2
    results = asyncio.run(bench(args.hosts, args.runs))
    doc = {k: summary(v) for k, v in results.items()}
    targets = {"visible": 500, "sigterm": 500, "sigkill": 5000}
    if args.json:
        print(
            json.dumps(
                {"hosts": args.hosts, "runs": args.runs, "results": doc, "targets_ms": targets},
                indent=2,
            )
        )
    else:
        print(f"{'event':<9} {'median':>9} {'p90':>9} {'min':>9} {'max':>9} {'target':>9}")
        for k, s in doc.items():
            print(
                f"{k:<9} {s['median_ms']:>7.1f}ms {s['p90_ms']:>7.1f}ms {s['min_ms']:>7.1f}ms "
                f"{s['max_ms']:>7.1f}ms {targets[k]:>7}ms"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
