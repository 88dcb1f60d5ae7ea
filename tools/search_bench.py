#!/usr/bin/env python3
"""Live search benchmark: kwalk vs flood vs probe on a lab LAN of N hosts.

Every host runs `zwalk serve` (tools/netlab.py builds the hosts); a target file is placed on 1
host, and in a second case on 4 hosts. Queries go through a running local node, as `zwalk find`
does: a `find` request on the control endpoint of a random non-holding host. Per strategy and
case it reports success rate, find latency p50/p99 (control request to answer) and query
messages per query, counted by every node of the lab (walk copies, check-backs, probe
searches) and summed, so all strategies are counted alike.

Targets (issue 4, 32 hosts, 100% success everywhere): file on 4 hosts: p50 <= 30 ms,
p99 <= 150 ms, kwalk messages <= 1/3 of flood's; file on 1 host: p50 <= 60 ms, kwalk messages
<= 2/3 of flood's.

    sudo unshare --net sh -c 'ip link set lo up; python tools/search_bench.py --hosts 32'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import netlab  # noqa: E402

from zwalk.core import protocol as p  # noqa: E402
from zwalk.net import control  # noqa: E402
from zwalk.store import state  # noqa: E402

STRATEGIES = {  # strategy -> (walkers, initial, ttl)
    "kwalk": (16, 1, 64),
    "flood": (1, 1, 1),  # TTL 1 reaches every host of one LAN segment, each once
    "probe": (1, 1, 1),
}


def serve_cmd(lab: netlab.Lab, host: int, base: Path) -> list[str]:
    return lab.serve_cmd(host, base / f"h{host}" / "share", base / f"h{host}" / "data")


async def sent_total(locals_: list[state.LocalNode]) -> int:
    total = 0
    for local in locals_:
        st = await control.status(local, timeout=5)
        if st is None:
            raise RuntimeError("a node stopped answering its control endpoint")
        total += st.sent
    return total


async def run_case(
    locals_: list[state.LocalNode],
    holders: set[int],
    strategy: str,
    queries: int,
    rng: random.Random,
    name: str,
) -> dict[str, float]:
    walkers, initial, ttl = STRATEGIES[strategy]
    latencies, ok, messages = [], 0, []
    askers = [i for i in range(len(locals_)) if i not in holders]
    for _ in range(queries):
        asker = locals_[rng.choice(askers)]
        before = await sent_total(locals_)
        msg = p.Find(
            req=1,
            token=asker.token,
            kind=p.QueryKind.NAME,
            pattern=name,
            icase=False,
            strategy=p.Strategy(strategy),
            walkers=walkers,
            initial=initial,
            ttl=ttl,
            check_every=8,
            timeout_ms=5000,
            want=1,
        )
        t0 = time.perf_counter()
        reply = await control.request(asker, msg, 10)
        latencies.append(time.perf_counter() - t0)
        if isinstance(reply, p.FindOk) and reply.found:
            ok += 1
        await asyncio.sleep(0.05)  # let walkers that were told to stop report in
        messages.append(await sent_total(locals_) - before)
    lat = sorted(latencies)
    return {
        "success_rate": ok / queries,
        "p50_ms": round(statistics.median(lat) * 1000, 2),
        "p99_ms": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000, 2),
        "messages_per_query": round(statistics.mean(messages), 2),
    }


async def bench(hosts: int, queries: int, seed: int) -> dict[str, dict[str, dict[str, float]]]:
    rng = random.Random(seed)
    out: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="zsb", dir="/tmp") as tmp, netlab.Lab(hosts) as lab:  # noqa: S108
        base = Path(tmp)
        one = {rng.randrange(hosts)}
        four = set(rng.sample(range(hosts), 4))
        for h in range(hosts):
            share = base / f"h{h}" / "share"
            share.mkdir(parents=True)
            (share / f"h{h}.txt").write_text(f"h{h}\n")
            if h in one:
                (share / "on-one-host.bin").write_bytes(b"1" * 4096)
            if h in four:
                (share / "on-four-hosts.bin").write_bytes(b"4" * 4096)
            lab.spawn(h, serve_cmd(lab, h, base), stderr=subprocess.DEVNULL)
        locals_ = []
        for h in range(hosts):
            deadline = time.monotonic() + 60
            while (local := state.read_state(base / f"h{h}" / "data")) is None:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"h{h} did not start")
                await asyncio.sleep(0.05)
            locals_.append(local)
        # Wait until everyone sees everyone.
        deadline = time.monotonic() + 60
        while True:
            views = [await control.status(loc) for loc in locals_]
            if all(
                v is not None and sum(m.state == "alive" for m in v.members) == hosts - 1
                for v in views
            ):
                break
            if time.monotonic() > deadline:
                raise TimeoutError("the lab did not converge")
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)  # let indexes and first pings settle
        for case, holders, name in (
            ("file on 4 hosts", four, "on-four-hosts.bin"),
            ("file on 1 host", one, "on-one-host.bin"),
        ):
            out[case] = {}
            for strategy in STRATEGIES:
                res = await run_case(locals_, holders, strategy, queries, rng, name)
                out[case][strategy] = res
                print(f"{case:<16} {strategy:<6} {res}", file=sys.stderr)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description="zwalk live search benchmark (Linux, root)")
    ap.add_argument("--hosts", type=int, default=32)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    why = netlab.available()
    if why:
        print(f"search_bench: {why}", file=sys.stderr)
        return 2
    out = asyncio.run(bench(args.hosts, args.queries, args.seed))
    if args.json:
        print(json.dumps({"hosts": args.hosts, "queries": args.queries, "results": out}, indent=2))
        return 0
    for case, rows in out.items():
        flood = rows["flood"]["messages_per_query"]
        print(f"\n{case} ({args.hosts} hosts, {args.queries} queries per strategy)")
        print(
            f"{'strategy':<8} {'success':>8} {'p50':>9} {'p99':>9} {'msgs/query':>11} "
            f"{'vs flood':>9}"
        )
        for strategy, r in rows.items():
            ratio = r["messages_per_query"] / flood if flood else float("nan")
            print(
                f"{strategy:<8} {r['success_rate']:>8.1%} {r['p50_ms']:>7.2f}ms "
                f"{r['p99_ms']:>7.2f}ms {r['messages_per_query']:>11.2f} {ratio:>9.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
