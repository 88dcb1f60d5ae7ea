#!/usr/bin/env python3
"""Transfer benchmark: one file through zwalk, `python -m http.server` + curl, and raw TCP
sendfile, side by side in one run on 127.0.0.1.

Each round runs every method once, in turn (each round starting one method later than the
last), and deletes what it wrote; the figures are the median over the rounds and the ratios
are zwalk against the others from the same run:

- sendfile: a server process `socket.sendfile`s the file to a reader process that writes it out
  with `readinto` + `write` (no verification: the floor of what a copy over TCP costs here);
- curl: `python -m http.server` serving the folder, `curl -o` writing the file;
- zwalk download: `zwalk find b3:<cid> --json` through a running local node, as a user runs it;
  the download phase (file-info, chunks, per-chunk and whole-file BLAKE3, the final rename) as
  the command reports it in `downloads[0].seconds`;
- zwalk find: the same command's wall time, from exec to a verified file under its final name.

It also reports each client's peak RSS (ru_maxrss from wait4). Source and destination belong
on tmpfs (the default is /dev/shm) so that the disk does not set the pace.

    python tools/transfer_bench.py --size 2G --rounds 3
    python tools/transfer_bench.py --size 2G --rounds 5 --settle 5     # equal memory for all
    python tools/transfer_bench.py --size 2G --rounds 5 --preallocate  # the transfers alone
    python tools/transfer_bench.py --size 4G --rounds 1 --only zwalk   # the memory bound

In a VM that hands freed memory back to its host, writing into pages the host must back again
is slow, and a run that starts right after the previous round deleted its output gets pages
that are still backed; `--settle` waits before every run so that all methods start alike
(docs/BENCHMARKS.md). `--preallocate` takes the VM's page allocation out altogether: before each
run the destination (zwalk: its .part) is written in full, untimed, and the run writes into it
(curl through its stdout, the raw reader with "r+b"; the result is checked against the content
id), which leaves the cost of the transfers themselves.

Targets (issue 5): zwalk download >= 1.0x curl and >= 0.7x sendfile; whole find >= 0.85x curl.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zwalk.core import protocol as p  # noqa: E402
from zwalk.net import control  # noqa: E402
from zwalk.store import state  # noqa: E402
from zwalk.store.downloads import part_path  # noqa: E402

LOOPBACK = "127.0.0.1"
METHODS = ("sendfile", "curl", "zwalk")


def parse_size(text: str) -> int:
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


@dataclass(slots=True)
class Run:
    seconds: float  # the phase that moves the bytes
    wall: float  # the whole client command
    rss_mb: float  # the client's peak RSS


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def timed(cmd: Sequence[str], into: Path | None = None) -> tuple[float, float, bytes]:
    """Run a command to its end; (wall seconds, peak RSS in MB, stdout). With `into`, its
    stdout goes into that existing file, from the start, without truncating it.

    The RSS comes from GNU time when it is installed: a child spawned straight from this
    process inherits this process's peak in its own figure, as Linux records it at exec."""
    gnu_time = shutil.which("time") if Path("/usr/bin/time").exists() else None
    with tempfile.NamedTemporaryFile("r") as rss_file:
        full = [gnu_time, "-f", "%M", "-o", rss_file.name, *cmd] if gnu_time else list(cmd)
        with open(into, "r+b") if into else contextlib.nullcontext() as sink:
            t0 = time.perf_counter()
            proc = subprocess.run(full, stdout=sink or subprocess.PIPE, check=False)
            wall = time.perf_counter() - t0
        rss = float(rss_file.read().strip().splitlines()[-1]) / 1024 if gnu_time else math.nan
    if proc.returncode != 0:
        said = (proc.stdout or b"")[-2000:]  # nothing here when stdout went into a file
        raise RuntimeError(f"{cmd[0]} ... exited with {proc.returncode}: {said!r}")
    return wall, rss, proc.stdout


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextmanager
def process(
    cmd: Sequence[str],
    log: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """A process for the length of a `with`: SIGTERM at the end, then kill."""
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if log:
            out.close()  # type: ignore[union-attr]


SENDFILE_SERVER = textwrap.dedent(
    """
    import socket, sys
    path, port = sys.argv[1], int(sys.argv[2])
    srv = socket.create_server(("127.0.0.1", port))
    while True:
        conn, _ = srv.accept()
        try:
            with conn, open(path, "rb") as f:
                conn.sendfile(f)
        except OSError:
            pass  # a reader that went away (or the readiness probe)
    """
)

SENDFILE_READER = textwrap.dedent(
    """
    import socket, sys, time
    port, dest, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    buf = bytearray(4 << 20)
    view = memoryview(buf)
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s, open(dest, mode) as f:
        while n := s.recv_into(buf):
            f.write(view[:n])
    print(time.perf_counter() - t0)
    """
)


HASH_CODE = (
    "import sys; from pathlib import Path; from zwalk.store.hashing import file_blake3; "
    "print(file_blake3(Path(sys.argv[1])).hex())"
)


def file_cid(path: Path) -> bytes:
    # Hashed in a child: clients are spawned from this process, and on Linux a child's peak
    # RSS starts from what its parent had touched.
    code = [sys.executable, "-c", HASH_CODE, str(path)]
    return bytes.fromhex(subprocess.check_output(code, text=True).strip())


def preallocate(path: Path, size: int) -> None:
    """Write the destination in full beforehand (zeros), so that the timed run writes into
    memory the VM has backed already, whatever the order of the runs."""
    block = bytes(min(size, 4 << 20))
    with open(path, "wb") as f:
        for offset in range(0, size, len(block)):
            f.write(block[: size - offset])


def make_file(path: Path, size: int) -> None:
    block = 64 << 20
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(block, left)
            f.write(os.urandom(n))
            left -= n


def file_args(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--size, --rounds and --dir: one file, copied a number of times, on one tmpfs."""
    ap.add_argument("--size", default="2G", help="file size, e.g. 512M, 2G (default 2G)")
    ap.add_argument("--rounds", type=int, default=3, help="counted rounds, after one warm-up")
    tmpfs = Path("/dev/shm")  # noqa: S108 - a private folder is made inside it
    ap.add_argument("--dir", type=Path, default=tmpfs, help="tmpfs for both sides")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    ap = file_args(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    ap.add_argument("--only", choices=METHODS, action="append", help="run only these methods")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    ap.add_argument(
        "--settle",
        type=float,
        default=0.0,
        help="seconds to wait before each run, after the last output was deleted",
    )
    ap.add_argument(
        "--preallocate",
        action="store_true",
        help="write each destination in full before its run, and have the run write into it",
    )
    args = ap.parse_args(argv)
    size = parse_size(args.size)
    methods = args.only or list(METHODS)
    if "curl" in methods and not shutil.which("curl"):
        ap.error("curl is not installed")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    base = Path(tempfile.mkdtemp(prefix="zwalk-transfer-", dir=args.dir))
    try:
        src, dest, empty = base / "src", base / "dest", base / "empty"
        for d in (src, dest, empty):
            d.mkdir()
        f = src / "payload.bin"
        log(f"writing {size:,} random bytes to {f}")
        make_file(f, size)
        cid = file_cid(f)
        results: dict[str, list[Run]] = {m: [] for m in methods}
        zwalk = [sys.executable, "-m", "zwalk"]
        source_data, local_data = base / "source-data", base / "local-data"
        with (
            process(
                [*zwalk, "serve", str(src), "--port", "0", "--name", "source"]
                + ["--interface", LOOPBACK, "--data-dir", str(source_data)],
                base / "source.log",
            ),
            process(
                [*zwalk, "serve", str(empty), "--port", "0", "--name", "local"]
                + ["--interface", LOOPBACK, "--data-dir", str(local_data)],
                base / "local.log",
            ),
        ):
            http_port, raw_port = free_port(), free_port()
            with (
                process(
                    [sys.executable, "-m", "http.server", str(http_port)]
                    + ["--bind", LOOPBACK, "--directory", str(src)]
                ),
                process(
                    [sys.executable, "-c", SENDFILE_SERVER, str(f), str(raw_port)],
                ),
            ):
                _wait_for_nodes(source_data, local_data)
                _wait_for_port(http_port)
                _wait_for_port(raw_port)
                # Round 0 warms up and is not counted: in a VM, memory the guest has not touched
                # yet costs the host a fault per page, which would fall on whoever runs first.
                for r in range(args.rounds + 1):
                    # Each round starts one method later: in this VM a run's speed depends on
                    # what the run before it freed, so no method always follows the same one.
                    shift = r % len(methods)
                    for m in methods[shift:] + methods[:shift]:
                        out = dest / "payload.bin"
                        if args.preallocate:
                            zwalk_part = part_path(dest, out.name, cid)
                            preallocate(zwalk_part if m == "zwalk" else out, size)
                        time.sleep(args.settle)
                        run = _one(
                            m, out, http_port, raw_port, local_data, dest, cid, args.preallocate
                        )
                        got = out.stat().st_size
                        if got != size:
                            raise RuntimeError(f"{m} wrote {got} bytes, want {size}")
                        if args.preallocate and file_cid(out) != cid:  # not just the zeros
                            raise RuntimeError(f"{m} did not write the whole file")
                        out.unlink()
                        for leftover in dest.iterdir():
                            leftover.unlink()
                        if r:
                            results[m].append(run)
                        log(
                            f"round {r or 'warm-up'} {m:8} {size / run.seconds / 1e9:6.3f} GB/s"
                            f" ({run.seconds:.3f} s; wall {run.wall:.3f} s,"
                            f" RSS {run.rss_mb:.0f} MB)"
                        )
        conditions = {"settle_s": args.settle, "preallocate": args.preallocate}
        report = _report(results, size, args.rounds, conditions)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report)
    return 0


def _status(data_dir: Path) -> p.StatusOk | None:
    local = state.read_state(data_dir)
    return asyncio.run(control.status(local, timeout=2)) if local else None


def _wait_for_nodes(source_data: Path, local_data: Path) -> None:
    def indexed() -> bool:
        st = _status(source_data)
        return st is not None and st.files == 1

    def sees_source() -> bool:
        st = _status(local_data)
        return st is not None and any(m.state == "alive" and m.files for m in st.members)

    wait_until(indexed, 120, "the source node to index the file")
    wait_until(sees_source, 60, "the local node to see the source")


def _wait_for_port(port: int) -> None:
    def up() -> bool:
        try:
            socket.create_connection((LOOPBACK, port), timeout=1).close()
        except OSError:
            return False
        return True

    wait_until(up, 10, f"port {port}")


def _one(
    method: str,
    out: Path,
    http_port: int,
    raw_port: int,
    local_data: Path,
    dest: Path,
    cid: bytes,
    preallocated: bool = False,
) -> Run:
    if method == "sendfile":
        mode = "r+b" if preallocated else "wb"
        code = [sys.executable, "-c", SENDFILE_READER, str(raw_port), str(out), mode]
        wall, rss, stdout = timed(code)
        return Run(float(stdout), wall, rss)
    if method == "curl":
        url = f"http://{LOOPBACK}:{http_port}/payload.bin"
        if preallocated:  # curl -o would truncate the file: write through stdout instead
            wall, rss, _ = timed(["curl", "-sS", "--fail", url], into=out)
        else:
            wall, rss, _ = timed(["curl", "-sS", "--fail", "-o", str(out), url])
        return Run(wall, wall, rss)
    cmd = [sys.executable, "-m", "zwalk", "find", f"b3:{cid.hex()}", "--json"]
    cmd += ["--out", str(dest), "--data-dir", str(local_data), "--interface", LOOPBACK]
    wall, rss, stdout = timed(cmd)
    report = json.loads(stdout)
    if report["status"] != "downloaded":
        raise RuntimeError(f"zwalk find: {report['status']}: {report['errors']}")
    return Run(float(report["downloads"][0]["seconds"]), wall, rss)


def _report(
    results: dict[str, list[Run]], size: int, rounds: int, conditions: dict[str, object]
) -> dict[str, object]:
    def med(runs: list[Run], attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in runs)

    rate = {m: size / med(runs, "seconds") / 1e9 for m, runs in results.items() if runs}
    report: dict[str, object] = {
        "bytes": size,
        "rounds": rounds,
        "conditions": conditions,
        "per_round_gb_per_s": {
            m: [round(size / x.seconds / 1e9, 3) for x in r] for m, r in results.items()
        },
        "gb_per_s": {m: round(v, 3) for m, v in rate.items()},
        "seconds": {m: round(med(r, "seconds"), 3) for m, r in results.items() if r},
        "peak_rss_mb": {m: round(max(x.rss_mb for x in r), 1) for m, r in results.items() if r},
    }
    if "zwalk" in results:
        find_rate = size / med(results["zwalk"], "wall") / 1e9
        report["gb_per_s"]["zwalk find"] = round(find_rate, 3)  # type: ignore[index]
        ratios = {}
        for other in ("curl", "sendfile"):
            if other in rate:
                ratios[f"zwalk download / {other}"] = round(rate["zwalk"] / rate[other], 3)
        if "curl" in rate:
            ratios["zwalk find / curl"] = round(find_rate / rate["curl"], 3)
        report["ratios"] = ratios
    return report


def _print(report: dict[str, object]) -> None:
    print(f"{report['bytes']:,} bytes, median of {report['rounds']} rounds")
    for m, v in report["gb_per_s"].items():  # type: ignore[attr-defined]
        rss = report["peak_rss_mb"].get(m.split()[0], "")  # type: ignore[attr-defined]
        print(f"  {m:12} {v:6.3f} GB/s   peak RSS {rss} MB")
    for k, v in report.get("ratios", {}).items():  # type: ignore[attr-defined]
        print(f"  {k:26} {v:.3f}x")


if __name__ == "__main__":
    raise SystemExit(main())
