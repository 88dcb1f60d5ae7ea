#!/usr/bin/env python3
"""A lab of N hosts on one machine: network namespaces on one bridge with no uplink.

Each host is a network namespace with a veth `eth0` on a private bridge and an address in
198.18.0.0/15 (RFC 2544's benchmarking range, never a real LAN's), and runs whatever you start
in it, typically one `zwalk serve`. Nothing is routed anywhere: the bridge has no uplink and no
address. Everything is removed on close, also when a test fails or the script is interrupted.

A host's link can be shaped on kernels without netem (`Lab.shape`, or the flags below):
  --rate    what the host sends, with tc tbf on its eth0;
  --loss    what reaches the host, dropped at random by iptables (`-m statistic`) in its
            namespace; every host then sends plain MTU-sized packets (gso_max_segs 1), so that
            one drop loses one packet, not a 64 KiB TCP burst;
  --delay   what reaches the host, held in user space (tools/linkdelay.py, through NFQUEUE),
  --jitter  plus or minus this much, uniformly, without reordering.
Loss and delay apply where a packet arrives because a packet held or dropped on its way out
still belongs to the sending socket, which TCP then treats as a local queue, not as the network.

As a library (tests/conftest.py's `lab` fixture uses it):

    with Lab(4) as lab:
        proc = lab.spawn(0, ["zwalk", "serve", ...])
        lab.run(1, ["ip", "addr"])

As a script (Linux, root):

    python tools/netlab.py up 4 [--serve DIR] [--rate 16mbit] [--loss 5%] [--delay 50ms]
    python tools/netlab.py down                  # remove any lab left behind by a crash
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import ipaddress
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "zwl"  # every namespace, bridge and veth this tool makes starts with it
PR_SET_PDEATHSIG = 1
SUBNET = ipaddress.IPv4Network("198.18.0.0/16")
LINKDELAY = Path(__file__).resolve().parent / "linkdelay.py"
CUT = "zwalk-cut"  # the comment on the rules of Lab.cut


def ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=30)


def available() -> str | None:
    """Why a lab cannot be built here, or None if it can."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root"
    try:
        subprocess.run(["ip", "-V"], capture_output=True, check=True, timeout=10)
        subprocess.run(["tc", "-V"], capture_output=True, check=True, timeout=10)
    except (OSError, subprocess.CalledProcessError):
        return "the ip and tc commands (iproute2) are needed"
    return None


@dataclass
class Host:
    index: int
    ns: str
    veth: str  # the bridge-side end; the host-side end is eth0 inside ns
    address: str


@dataclass
class Lab:
    n: int
    lab_id: str = field(default_factory=lambda: secrets.token_hex(2))
    hosts: list[Host] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    delays: dict[int, subprocess.Popen[str]] = field(default_factory=dict)  # host -> linkdelay

    @property
    def bridge(self) -> str:
        return f"{PREFIX}{self.lab_id}br"

    def __enter__(self) -> Lab:
        try:
            self.up()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def up(self) -> None:
        if not 1 <= self.n <= 250:
            raise ValueError("a lab has 1 to 250 hosts")
        # Every host must see every mDNS packet; IGMP snooping would filter multicast.
        ip("link", "add", self.bridge, "type", "bridge", "mcast_snooping", "0")
        ip("link", "set", self.bridge, "up")
        third = int(self.lab_id, 16) % 256
        for i in range(self.n):
            ns = f"{PREFIX}{self.lab_id}h{i}"
            veth = f"{PREFIX}{self.lab_id}v{i}"
            addr = str(SUBNET.network_address + third * 256 + i + 1)
            ip("netns", "add", ns)
            self.hosts.append(Host(i, ns, veth, addr))
            ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            ip("link", "set", veth, "master", self.bridge, "up")
            ip("addr", "add", f"{addr}/16", "dev", "eth0", ns=ns)
            ip("link", "set", "eth0", "up", ns=ns)
            ip("link", "set", "lo", "up", ns=ns)
        self._wait_links_up()

    def _wait_links_up(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        for h in self.hosts:
            while "state UP" not in ip("link", "show", "eth0", ns=h.ns).stdout:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{h.ns}: eth0 did not come up")
                time.sleep(0.02)

    # --- using hosts ----------------------------------------------------------------------
    def exec_prefix(self, host: int) -> list[str]:
        return ["ip", "netns", "exec", self.hosts[host].ns]

    def serve_cmd(self, host: int, share: Path, data_dir: Path) -> list[str]:
        """`zwalk serve` for a host: named h<i>, on its lab address, any free port."""
        return [
            sys.executable,
            "-m",
            "zwalk",
            "serve",
            str(share),
            "--port",
            "0",
            "--name",
            f"h{host}",
            "--interface",
            self.hosts[host].address,
            "--data-dir",
            str(data_dir),
        ]

    def spawn(self, host: int, cmd: Sequence[str], **kw: object) -> subprocess.Popen[bytes]:
        """Start a process on a host; it is stopped when the lab closes, and gets SIGTERM if
        the process that made the lab dies without closing it."""
        proc = subprocess.Popen(  # type: ignore[call-overload]
            [*self.exec_prefix(host), *cmd], preexec_fn=_die_with_parent, **kw
        )
        self.procs.append(proc)
        return proc

    def run(
        self, host: int, cmd: Sequence[str], timeout: float = 60, **kw: object
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.exec_prefix(host), *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kw,
        )  # type: ignore[call-overload]

    def shape(
        self,
        host: int,
        *,
        rate: str | None = None,
        delay: str | None = None,
        jitter: str | None = None,
        loss: str | None = None,
    ) -> None:
        """Shape a host's link: `rate` ('16mbit') caps what it sends; `loss` ('5%') drops
        that share of what reaches it; `delay` ('50ms', with `jitter` '10ms') holds what
        reaches it. Each call replaces what an earlier one set for the same aspects."""
        if not (rate or delay or loss):
            raise ValueError("shape needs rate, delay or loss")
        if rate:
            self._tc(host, ["tbf", "rate", rate, "burst", "64kb", "latency", "50ms"])
        if loss:
            self._loss(host, _fraction(loss))
        if delay:
            self._delay(host, _millis(delay), _millis(jitter) if jitter else 0.0)

    def cut(self, host: int) -> None:
        """Cut a host off the LAN as a pulled cable or a lost Wi-Fi does: every packet into or
        out of its eth0 is dropped without a word, so its connections time out rather than
        fail. `mend` puts it back."""
        for chain, way in (("INPUT", "-i"), ("OUTPUT", "-o")):
            self._iptables(host, "-I", chain, "1", way, "eth0", "-m", "comment", "--comment",
                           CUT, "-j", "DROP")  # fmt: skip

    def mend(self, host: int) -> None:
        """Undo `cut`."""
        for chain in ("INPUT", "OUTPUT"):
            for rule in self._rules(host, CUT, chain):
                self._iptables(host, "-D", chain, *rule)

    def _tc(self, host: int, args: list[str]) -> None:
        r = self.run(host, ["tc", "qdisc", "replace", "dev", "eth0", "root", *args], timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"tc {' '.join(args)} failed on h{host}: {r.stderr.strip()}")

    def _iptables(self, host: int, *args: str) -> None:
        if shutil.which("iptables") is None:
            raise RuntimeError("loss and delay need iptables (apt-get install iptables)")
        r = self.run(host, ["iptables", "-w", *args], timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"iptables {' '.join(args)} on h{host}: {r.stderr.strip()}")

    def _loss(self, host: int, fraction: float) -> None:
        for h in self.hosts:  # one drop, one packet: no GSO bursts toward a lossy host
            ip("link", "set", "dev", "eth0", "gso_max_segs", "1", ns=h.ns)
        for rule in self._rules(host, "statistic"):
            self._iptables(host, "-D", "INPUT", *rule)
        if fraction > 0:
            self._iptables(
                host, "-I", "INPUT", "1", "-i", "eth0", "-m", "statistic", "--mode", "random",
                "--probability", f"{fraction:.6f}", "-j", "DROP",
            )  # fmt: skip

    def _delay(self, host: int, delay_ms: float, jitter_ms: float) -> None:
        self._stop_delay(host)
        queue = 1000 + host
        proc = subprocess.Popen(  # one per host; stopped in close()
            [*self.exec_prefix(host), sys.executable, str(LINKDELAY), "--queue", str(queue),
             "--delay", f"{delay_ms:g}", "--jitter", f"{jitter_ms:g}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
        assert proc.stdout is not None  # noqa: S101 -- piped above
        if proc.stdout.readline().strip() != "ready":
            proc.kill()
            _, err = proc.communicate(timeout=10)
            raise RuntimeError(f"linkdelay did not start on h{host}: {err.strip()}")
        self.delays[host] = proc
        self._iptables(
            host, "-A", "INPUT", "-i", "eth0", "-j", "NFQUEUE", "--queue-num", str(queue)
        )

    def _stop_delay(self, host: int) -> None:
        for rule in self._rules(host, "NFQUEUE"):
            self._iptables(host, "-D", "INPUT", *rule)  # first: with no reader, packets drop
        proc = self.delays.pop(host, None)
        if proc is not None:
            self.stop(proc)  # type: ignore[arg-type]

    def _rules(self, host: int, marker: str, chain: str = "INPUT") -> list[list[str]]:
        """This tool's rules of a chain on a host that mention `marker`, as arguments to -D."""
        r = self.run(host, ["iptables", "-w", "-S", chain], timeout=30)
        return [
            shlex.split(line)[2:]
            for line in r.stdout.splitlines()
            if line.startswith(f"-A {chain}") and marker in line
        ]

    def stop(
        self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 5.0
    ) -> None:
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)

    def close(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(Exception):
                self.stop(proc)
        self.procs.clear()
        for host in list(self.delays):
            with contextlib.suppress(Exception):
                self._stop_delay(host)
        for h in self.hosts:  # anything else started in a host (ip netns exec by hand)
            for pid in ip("netns", "pids", h.ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for h in self.hosts:
            ip("link", "del", h.veth, check=False)  # at once; a namespace's own cleanup lags
            ip("netns", "del", h.ns, check=False)
        self.hosts.clear()
        ip("link", "del", self.bridge, check=False)


def _fraction(text: str) -> float:
    """'5%' or '0.05' as a fraction in [0, 1]."""
    value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    if not 0 <= value <= 1:
        raise ValueError(f"loss must be 0..100%, got {text!r}")
    return value


def _millis(text: str) -> float:
    """'50ms', '0.05s' or '50' (milliseconds) as milliseconds."""
    if text.endswith("ms"):
        return float(text[:-2])
    if text.endswith("s"):
        return float(text[:-1]) * 1000
    return float(text)


def _die_with_parent() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def remove_leftovers(force: bool = False) -> list[str]:
    """Delete the namespaces and links this tool made that nothing runs in any more (after a
    crash); with force, also those that still run processes, which are killed first."""
    removed = []
    for line in ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if not name.startswith(PREFIX):
            continue
        pids = ip("netns", "pids", name, check=False).stdout.split()
        if pids and not force:
            continue  # a lab still in use (perhaps someone else's)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        ip("netns", "del", name, check=False)
        removed.append(name)
    live = {
        n.split()[0][len(PREFIX) : len(PREFIX) + 4]
        for n in ip("netns", "list", check=False).stdout.splitlines()
        if n.startswith(PREFIX)
    }
    for line in ip("-o", "link", "show", check=False).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(PREFIX) and name[len(PREFIX) : len(PREFIX) + 4] not in live:
            ip("link", "del", name, check=False)
            removed.append(name)
    return removed


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start a lab and keep it until Ctrl-C")
    up.add_argument("hosts", type=int)
    up.add_argument(
        "--serve",
        type=Path,
        help="run `zwalk serve` on every host, sharing DIR/h<i> (created, with a sample file) ",
    )
    up.add_argument("--rate", help="cap what every host sends, e.g. 200mbit")
    up.add_argument("--loss", help="drop this share of what reaches every host, e.g. 5%%")
    up.add_argument("--delay", help="hold what reaches every host this long, e.g. 50ms")
    up.add_argument("--jitter", help="plus or minus this much delay, e.g. 10ms")
    down = sub.add_parser("down", help="remove what a crashed lab left behind")
    down.add_argument(
        "--force", action="store_true", help="also labs that still run processes (they are killed)"
    )
    args = parser.parse_args(argv)
    why = available()
    if why:
        print(f"netlab: {why}", file=sys.stderr)
        return 2
    if args.cmd == "down":
        removed = remove_leftovers(force=args.force)
        print("removed: " + (", ".join(removed) or "nothing"))
        return 0
    signal.signal(signal.SIGTERM, _interrupt)
    with Lab(args.hosts) as lab:
        for h in lab.hosts:
            if args.rate or args.delay or args.loss:
                lab.shape(
                    h.index, rate=args.rate, delay=args.delay, jitter=args.jitter, loss=args.loss
                )
            if args.serve:
                share = args.serve / f"h{h.index}"
                share.mkdir(parents=True, exist_ok=True)
                (share / f"hello-from-h{h.index}.txt").write_text(f"host {h.index}\n")
                lab.spawn(h.index, lab.serve_cmd(h.index, share, share / ".zwalk"))
            print(f"h{h.index}  {h.address:<15}  {shlex.join(lab.exec_prefix(h.index))} ...")
        print(f"lab {lab.lab_id} up with {len(lab.hosts)} hosts; Ctrl-C removes it")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    print("lab removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
