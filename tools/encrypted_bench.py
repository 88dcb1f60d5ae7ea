#!/usr/bin/env python3
"""Encrypted transfer benchmark: one file through zwalk (CurveZMQ on every link), through zwalk
before encryption (the tree of an older commit, plaintext), and through `scp` (OpenSSH, cipher
aes128-gcm@openssh.com), side by side in one run on 127.0.0.1.

Each round runs every method once, each round starting one method later than the last, and
deletes what it wrote; one warm-up round is not counted. Figures are medians over the rounds:

- zwalk, zwalk-plain: `zwalk find b3:<cid> --json` through a running local node, from a serving
  node, as a user runs it; throughput of the download phase the command reports
  (`downloads[0].seconds`: file-info, chunks, per-chunk and whole-file BLAKE3, the rename) and
  of the whole command (exec to a verified file under its final name). The plaintext tree is
  `git archive <commit>` unpacked into a temporary folder and put first on PYTHONPATH for its
  processes (checked through `zwalk --version`);
- scp: a private sshd on 127.0.0.1 (its own host key, client key and config), `scp -c
  aes128-gcm@openssh.com` of the same file to the same tmpfs; its wall time.

CPU is core-seconds per GiB over each timed run, from /proc/stat: the whole machine's busy time
(user, nice, system, irq, softirq, steal), so the sender, the receiver and the kernel's TCP work
count alike for every method. Source and destination share one tmpfs (default /dev/shm).

    sudo python tools/encrypted_bench.py --size 2G --rounds 3 [--plain-commit 1142b0d] [--json]

Target (issue 13): zwalk >= 1.0x scp (goal 1.5x).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
CHECKOUT = TOOLS.parent
sys.path.insert(0, str(TOOLS))

from transfer_bench import (  # noqa: E402
    LOOPBACK,
    file_args,
    file_cid,
    free_port,
    make_file,
    parse_size,
    process,
    wait_until,
)

CIPHER = "aes128-gcm@openssh.com"
METHODS = ("zwalk", "zwalk-plain", "scp")
GIB = 1 << 30


def busy_seconds() -> float:
    """CPU time the whole machine has been busy, in core-seconds (Linux /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class Stack:
    """A serving source node and a local node of one zwalk tree, on 127.0.0.1."""

    def __init__(self, name: str, tree: Path, base: Path, src: Path) -> None:
        self.name, self.tree, self.base, self.src = name, tree, base / name, src
        self.base.mkdir()
        home = self.base / "home"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(tree),
            "XDG_DATA_HOME": str(home / "data"),
            "XDG_CONFIG_HOME": str(home / "config"),
        }
        self.source_data, self.local_data = self.base / "source-data", self.base / "local-data"

    def zwalk(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "zwalk", *args]

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A zwalk command of this tree, its output captured."""
        return subprocess.run(
            self.zwalk(*args),
            env=self.env,
            cwd=self.base,  # `python -m` puts the cwd first on sys.path, before PYTHONPATH
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def check_tree(self) -> None:
        r = self.run("--version")
        out = r.stdout + r.stderr
        if f"({self.tree / 'zwalk'})" not in out:
            raise RuntimeError(f"{self.name}: runs another zwalk than {self.tree}: {out}")

    def start(self, stack: ExitStack) -> None:
        empty = self.base / "empty"
        empty.mkdir()
        for role, share, data in (
            ("source", self.src, self.source_data),
            ("local", empty, self.local_data),
        ):
            cmd = self.zwalk(
                "serve",
                str(share),
                "--port",
                "0",
                "--name",
                f"{self.name}-{role}",
                "--interface",
                LOOPBACK,
                "--data-dir",
                str(data),
            )
            log = self.base / f"{role}.log"
            stack.enter_context(process(cmd, log, env=self.env, cwd=self.base))  # cwd: see run
        wait_until(lambda: _files(self.source_data) == 1, 180, f"{self.name}: source indexed")
        wait_until(self._sees_source, 60, f"{self.name}: the local node to see the source")

    # Through the tree's own commands, not transfer_bench's control client: that speaks this
    # checkout's control protocol, which an older tree's node need not.
    def _sees_source(self) -> bool:
        r = self.run("peers", "--json", "--data-dir", str(self.local_data), timeout=30)
        try:
            return any(p["files"] for p in json.loads(r.stdout)["peers"])
        except (ValueError, KeyError):
            return False

    def fetch(self, cid: bytes, dest: Path) -> tuple[float, float]:
        """(download-phase seconds, whole-command seconds)."""
        find = ("find", f"b3:{cid.hex()}", "--json", "--out", str(dest))
        where = ("--data-dir", str(self.local_data), "--interface", LOOPBACK)
        t0 = time.perf_counter()
        r = self.run(*find, *where, timeout=600)
        wall = time.perf_counter() - t0
        doc = json.loads(r.stdout) if r.stdout else {}
        if doc.get("status") != "downloaded":
            raise RuntimeError(f"{self.name} find: {doc.get('errors')} {r.stderr[-2000:]}")
        got = doc["downloads"][0]
        if [s.split(" ")[0] for s in got["sources"]] != [f"{self.name}-source"]:
            # Two trees of one protocol version meet on mDNS and share sources: not a
            # one-source figure (--plain-commit must name a version 1 tree).
            raise RuntimeError(f"{self.name}: delivered by {got['sources']}, not its own source")
        return float(got["seconds"]), wall


def _files(data_dir: Path) -> int:
    try:
        return int(json.loads((data_dir / "node.json").read_text())["files"])
    except (OSError, ValueError, KeyError):
        return -1


class Sshd:
    """A private OpenSSH server on 127.0.0.1 with throw-away keys."""

    def __init__(self, base: Path) -> None:
        self.dir = base / "ssh"
        self.dir.mkdir(mode=0o700)
        self.port = free_port()
        for key in ("host", "client"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.dir / key)],
                check=True,
                timeout=30,
            )
        shutil.copy(self.dir / "client.pub", self.dir / "authorized_keys")
        (self.dir / "sshd_config").write_text(
            f"ListenAddress {LOOPBACK}\nPort {self.port}\nHostKey {self.dir / 'host'}\n"
            f"AuthorizedKeysFile {self.dir / 'authorized_keys'}\nPidFile {self.dir / 'pid'}\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "StrictModes no\nPermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n"
        )
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation folder

    def start(self, stack: ExitStack) -> None:
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        cmd = [sshd, "-D", "-e", "-f", str(self.dir / "sshd_config")]
        stack.enter_context(process(cmd, self.dir / "sshd.log"))
        wait_until(self._answers, 20, "sshd")

    def _answers(self) -> bool:
        return (
            subprocess.run(
                [*self._ssh(), f"root@{LOOPBACK}", "true"],
                timeout=20,
                capture_output=True,
                check=False,
            ).returncode
            == 0
        )

    def _ssh(self, scp: bool = False) -> list[str]:
        return [
            "scp" if scp else "ssh",
            "-q",
            "-c",
            CIPHER,
            "-i",
            str(self.dir / "client"),
            "-P" if scp else "-p",
            str(self.port),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ]

    def fetch(self, src: Path, dest: Path) -> float:
        t0 = time.perf_counter()
        subprocess.run(
            [*self._ssh(scp=True), f"root@{LOOPBACK}:{src}", str(dest)], check=True, timeout=600
        )
        return time.perf_counter() - t0


def main(argv: Sequence[str] | None = None) -> int:
    ap = file_args(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    ap.add_argument("--plain-commit", default="1142b0d", help="the tree before encryption")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = ap.parse_args(argv)
    size = parse_size(args.size)
    for tool in ("scp", "ssh-keygen"):
        if not shutil.which(tool):
            ap.error(f"{tool} is not installed (apt-get install openssh-client openssh-server)")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    base = Path(tempfile.mkdtemp(prefix="zwalk-encrypted-", dir=args.dir))
    snap = Path(tempfile.mkdtemp(prefix="zwalk-plain-tree-"))
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
    try:
        archive = subprocess.run(
            ["git", "-C", str(CHECKOUT), "archive", args.plain_commit],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(snap)], input=archive, check=True, timeout=60)
        src, dest = base / "src", base / "dest"
        src.mkdir()
        dest.mkdir()
        f = src / "payload.bin"
        log(f"writing {size:,} random bytes to {f}")
        make_file(f, size)
        cid = file_cid(f)
        stacks = {
            "zwalk": Stack("zwalk", CHECKOUT, base, src),
            "zwalk-plain": Stack("zwalk-plain", snap, base, src),
        }
        sshd = Sshd(base)
        with ExitStack() as stack:
            for s in stacks.values():
                s.check_tree()
                s.start(stack)
            sshd.start(stack)
            for r in range(args.rounds + 1):
                shift = r % len(METHODS)
                for m in METHODS[shift:] + METHODS[:shift]:
                    out = dest / f.name
                    cpu0 = busy_seconds()
                    if m == "scp":
                        phase = wall = sshd.fetch(f, out)
                    else:
                        phase, wall = stacks[m].fetch(cid, dest)
                    cpu = busy_seconds() - cpu0
                    if file_cid(out) != cid:
                        raise RuntimeError(f"{m}: the copy differs from the source")
                    for leftover in dest.iterdir():
                        leftover.unlink()
                    run = {"phase_s": phase, "wall_s": wall, "cpu_s_per_gib": cpu / (size / GIB)}
                    if r:
                        runs[m].append(run)
                    log(
                        f"round {r or 'warm-up'} {m:11} {size / phase / GIB:6.3f} GiB/s "
                        f"(wall {wall:.2f} s), {run['cpu_s_per_gib']:.2f} core-s/GiB"
                    )
    finally:
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(snap, ignore_errors=True)
    report = _report(runs, size, args)
    print(json.dumps(report, indent=2) if args.json else _table(report))
    return 0


def _report(runs: dict[str, list[dict[str, float]]], size: int, args: argparse.Namespace) -> dict:  # type: ignore[type-arg]
    med = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in runs.items()}
    gibs = {m: size / GIB / v["phase_s"] for m, v in med.items()}
    whole = {m: size / GIB / v["wall_s"] for m, v in med.items()}
    return {
        "size": size,
        "rounds": args.rounds,
        "plain_commit": args.plain_commit,
        "cipher": CIPHER,
        "median": med,
        "gib_per_s": gibs,
        "gib_per_s_whole_command": whole,
        "zwalk_per_scp": gibs["zwalk"] / gibs["scp"],
        "zwalk_whole_per_scp": whole["zwalk"] / whole["scp"],
        "zwalk_per_plain": gibs["zwalk"] / gibs["zwalk-plain"],
        "runs": runs,
    }


def _table(report: dict) -> str:  # type: ignore[type-arg]
    lines = [f"{'method':12} {'GiB/s':>7} {'whole':>7} {'core-s/GiB':>11}"]
    for m, v in report["median"].items():
        lines.append(
            f"{m:12} {report['gib_per_s'][m]:7.3f} "
            f"{report['gib_per_s_whole_command'][m]:7.3f} {v['cpu_s_per_gib']:11.2f}"
        )
    lines.append(
        f"zwalk / scp {report['zwalk_per_scp']:.2f}x (whole command "
        f"{report['zwalk_whole_per_scp']:.2f}x); zwalk / plaintext "
        f"{report['zwalk_per_plain']:.2f}x"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
