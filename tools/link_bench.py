#!/usr/bin/env python3
"""Link utilisation of one download: zwalk against plain TCP, on lab links capped by tc.

Host 1 holds a file and its link is capped at each `--rates` value in turn (tbf, what host 1
sends); host 0 runs a local node and fetches the file, in alternating rounds:

  tcp    the whole file over one TCP connection (sendfile, read into memory and dropped): what
         the capped link carries for one flow, the baseline;
  zwalk  `zwalk find <cid>` through host 0's node: verified, written, renamed.

Each figure is payload bytes over wall time, as a share of the tbf rate (so TCP/IP headers
count against both); the ratio zwalk/tcp is from the same run. zwalk's time is the download
phase that `find --json` reports. CPU: core-seconds per GiB of the find process (user +
system, from its rusage) and of the serving node (from /proc), for the zwalk rounds.

    sudo unshare --net sh -c 'ip link set lo up; python tools/link_bench.py'

Target (issue 11): zwalk >= 90% of the link at 2, 16, 100 and 1000 Mbit/s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import netlab  # noqa: E402
from transfer_lab_bench import serve, wait_for_holders  # noqa: E402

from zwalk.store.hashing import file_blake3  # noqa: E402

MIB = 1 << 20
TCP_PORT = 5001
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def seconds_of_data(rate_mbit: float) -> float:
    return 20.0 if rate_mbit < 1000 else 12.0


def tcp_serve(port: int, path: str) -> int:
    """One file to each connection, with sendfile, until killed."""
    srv = socket.create_server(("0.0.0.0", port), reuse_port=False)  # noqa: S104 -- lab host
    while True:
        conn, _ = srv.accept()
        with conn, open(path, "rb") as f:
            conn.sendfile(f)


def tcp_fetch(host: str, port: int) -> int:
    """Read what the server sends until it closes; print bytes and seconds."""
    started = time.monotonic()
    n = 0
    with socket.create_connection((host, port), timeout=600) as s:
        while chunk := s.recv(4 * MIB):
            n += len(chunk)
    print(json.dumps({"bytes": n, "seconds": time.monotonic() - started}))
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def run_tcp(lab: netlab.Lab, size: int) -> float:
    me = Path(__file__).resolve()
    cmd = [sys.executable, str(me), "--tcp-fetch", lab.hosts[1].address]
    r = lab.run(0, cmd, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"tcp fetch failed: {r.stderr}")
    doc = json.loads(r.stdout)
    if doc["bytes"] != size:
        raise RuntimeError(f"tcp fetch got {doc['bytes']} of {size} bytes")
    return float(doc["seconds"])


def run_zwalk(lab: netlab.Lab, base: Path, cid: str) -> tuple[float, float]:
    """Seconds of the download phase, and CPU seconds of the find process."""
    home = base / "h0"
    out = home / "downloaded"
    cmd = [sys.executable, "-m", "zwalk", "find", cid, "--json", "--out", str(out)]
    cmd += ["--interface", lab.hosts[0].address, "--data-dir", str(home / "data")]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = lab.run(0, cmd, timeout=900, cwd=home)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise RuntimeError(f"find failed ({r.returncode}): {r.stdout[-2000:]} {r.stderr[-2000:]}")
    doc = json.loads(r.stdout)
    shutil.rmtree(out)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return float(doc["download"]["seconds"]), cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="2,16,100,1000", help="Mbit/s, comma-separated")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of each method per rate")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    ap.add_argument("--tcp-serve", nargs=2, metavar=("PORT", "FILE"), help=argparse.SUPPRESS)
    ap.add_argument("--tcp-fetch", metavar="HOST", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.tcp_serve:
        return tcp_serve(int(args.tcp_serve[0]), args.tcp_serve[1])
    if args.tcp_fetch:
        return tcp_fetch(args.tcp_fetch, TCP_PORT)
    why = netlab.available()
    if why:
        print(f"lab unavailable: {why}", file=sys.stderr)
        return 2
    rates = [float(x) for x in args.rates.split(",")]
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="ztl", dir="/tmp") as tmp,  # noqa: S108
        netlab.Lab(2) as lab,
    ):
        base = Path(tmp)
        serve(lab, 0, base)
        for mbit in rates:
            size = max(4, int(mbit * 1e6 / 8 * seconds_of_data(mbit)) // MIB) * MIB
            share = base / "h1" / "share"
            shutil.rmtree(base / "h1", ignore_errors=True)
            share.mkdir(parents=True)
            payload = share / "payload.bin"
            with open(payload, "wb") as f:
                for _ in range(size // MIB):
                    f.write(os.urandom(MIB))
            cid = "b3:" + file_blake3(payload).hex()
            lab.shape(1, rate=f"{mbit:g}mbit")
            node = serve(lab, 1, base)
            me = Path(__file__).resolve()
            tcp = lab.spawn(
                1, [sys.executable, str(me), "--tcp-serve", str(TCP_PORT), str(payload)]
            )
            wait_for_holders(lab, base, 1)
            time.sleep(1)
            link = mbit * 1e6 / 8
            row: dict[str, object] = {"mbit": mbit, "mib": size // MIB, "tcp": [], "zwalk": []}
            cpu_find = cpu_serve = 0.0
            for r in range(args.rounds):
                order = ("tcp", "zwalk") if r % 2 == 0 else ("zwalk", "tcp")
                for method in order:
                    if method == "tcp":
                        secs = run_tcp(lab, size)
                    else:
                        served = cpu_seconds(node.pid)
                        secs, cpu = run_zwalk(lab, base, cid)
                        cpu_find += cpu
                        cpu_serve += cpu_seconds(node.pid) - served
                    share_of_link = size / secs / link
                    row[method].append(round(share_of_link, 4))  # type: ignore[attr-defined]
                    print(
                        f"{mbit:g} Mbit/s round {r + 1} {method:>5}: {share_of_link:6.1%} of the "
                        f"link ({secs:.2f} s for {size // MIB} MiB)",
                        file=sys.stderr,
                    )
            gib = args.rounds * size / (1 << 30)
            row["tcp_median"] = statistics.median(row["tcp"])  # type: ignore[arg-type]
            row["zwalk_median"] = statistics.median(row["zwalk"])  # type: ignore[arg-type]
            row["zwalk_per_tcp"] = round(row["zwalk_median"] / row["tcp_median"], 3)  # type: ignore[operator]
            row["cpu_s_per_gib_find"] = round(cpu_find / gib, 2)
            row["cpu_s_per_gib_serve"] = round(cpu_serve / gib, 2)
            results.append(row)
            lab.stop(tcp)  # type: ignore[arg-type]
            lab.stop(node)
    if args.json:
        print(json.dumps({"rounds": args.rounds, "results": results}, indent=2))
        return 0
    print("link Mbit/s | MiB | TCP, of the link | zwalk, of the link | zwalk/TCP | CPU s/GiB")
    for row in results:
        print(
            f"{row['mbit']:>11g} | {row['mib']:>4} | {row['tcp_median']:>16.1%} | "
            f"{row['zwalk_median']:>18.1%} | {row['zwalk_per_tcp']:>9.3f} | "
            f"find {row['cpu_s_per_gib_find']:.2f}, serve {row['cpu_s_per_gib_serve']:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
