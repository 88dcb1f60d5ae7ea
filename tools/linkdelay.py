#!/usr/bin/env python3
"""Delay what reaches a host, in user space: a link emulator for kernels without netem.

An iptables rule in the host's network namespace hands every packet arriving on `eth0` to an
NFQUEUE; this process holds each one for `--delay` (plus or minus `--jitter`, uniformly, never
reordering: a packet goes on no earlier than the one before it) and then lets it through. It
speaks nfnetlink_queue (linux/netfilter/nfnetlink_queue.h) over a plain netlink socket, asking
only for each packet's metadata, so it needs no C library and no copy of the payload.

Why arriving packets: a packet held on its way out still belongs to the sending socket, and
TCP's small-queue limit then lets only a couple of packets per socket be "in the device" --
the delay would cap a flow at a few packets per delay. Once a packet has crossed the veth it is
no socket's, and holding it costs the sender nothing but the round trip.

Run it inside the namespace (netlab.py does, and removes the rule before it stops this):

    ip netns exec HOST python tools/linkdelay.py --queue 7 --delay 50 --jitter 10
    ip netns exec HOST iptables -A INPUT -i eth0 -j NFQUEUE --queue-num 7

It prints "ready" on stdout once bound, and runs until SIGTERM or SIGINT. Linux only, root.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NETLINK_NO_ENOBUFS = 5
SOL_NETLINK = 270
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_CONFIG, NFQNL_MSG_VERDICT_BATCH = 0, 2, 3
NFQNL_CFG_CMD_BIND, NFQNL_CFG_CMD_UNBIND = 1, 2
NFQNL_COPY_META = 1
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN, NFQA_CFG_MASK, NFQA_CFG_FLAGS = 1, 2, 3, 4, 5
NFQA_CFG_F_GSO = 4  # hand over GSO packets whole, unsegmented
NF_ACCEPT = 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
AF_INET = 2
MAX_QUEUED = 8192  # packets the kernel may hold for us before it drops new ones

_NLMSGHDR = struct.Struct("=IHHII")
_NFGENMSG = struct.Struct("!BBH")
_NLATTR = struct.Struct("=HH")


def _attr(kind: int, payload: bytes) -> bytes:
    data = _NLATTR.pack(_NLATTR.size + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


class Queue:
    """One bound NFQUEUE, speaking nfnetlink_queue."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
        self.sock.bind((0, 0))
        self._seq = 0
        self._config(_attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, AF_INET)))
        self._config(
            _attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))
            + _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", MAX_QUEUED))
            + _attr(NFQA_CFG_MASK, struct.pack("!I", NFQA_CFG_F_GSO))
            + _attr(NFQA_CFG_FLAGS, struct.pack("!I", NFQA_CFG_F_GSO))
        )

    def _send(self, msg_type: int, attrs: bytes, flags: int = NLM_F_REQUEST) -> int:
        self._seq += 1
        body = _NFGENMSG.pack(AF_INET, 0, self.number) + attrs
        kind = (NFNL_SUBSYS_QUEUE << 8) | msg_type
        self.sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, self._seq, 0) + body)
        return self._seq

    def _config(self, attrs: bytes) -> None:
        """Send a config message and wait for the kernel's answer to it."""
        seq = self._send(NFQNL_MSG_CONFIG, attrs, NLM_F_REQUEST | NLM_F_ACK)
        while True:
            data = self.sock.recv(65536)
            for kind, got_seq, payload in _messages(data):
                if kind == NLMSG_ERROR and got_seq == seq:
                    (errno,) = struct.unpack_from("=i", payload)
                    if errno:
                        raise OSError(-errno, f"nfqueue config: {os.strerror(-errno)}")
                    return

    def packets(self) -> list[int]:
        """Ids of the packets waiting on the socket now (it must be readable)."""
        ids = []
        data = self.sock.recv(1 << 20)
        for kind, _, payload in _messages(data):
            if kind & 0xFF != NFQNL_MSG_PACKET or kind >> 8 != NFNL_SUBSYS_QUEUE:
                continue
            pos = _NFGENMSG.size
            while pos + _NLATTR.size <= len(payload):
                length, atype = _NLATTR.unpack_from(payload, pos)
                if length < _NLATTR.size:
                    break
                if atype & 0x7FFF == NFQA_PACKET_HDR:
                    (packet_id,) = struct.unpack_from("!I", payload, pos + _NLATTR.size)
                    ids.append(packet_id)
                    break
                pos += (length + 3) & ~3
        return ids

    def accept_through(self, packet_id: int) -> None:
        """Let go every queued packet up to and including `packet_id`."""
        self._send(
            NFQNL_MSG_VERDICT_BATCH,
            _attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet_id)),
        )

    def close(self) -> None:
        try:
            self._send(
                NFQNL_MSG_CONFIG, _attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_UNBIND, 0))
            )
        finally:
            self.sock.close()


def _messages(data: bytes) -> list[tuple[int, int, bytes]]:
    out = []
    pos = 0
    while pos + _NLMSGHDR.size <= len(data):
        length, kind, _flags, seq, _pid = _NLMSGHDR.unpack_from(data, pos)
        if length < _NLMSGHDR.size:
            break
        out.append((kind, seq, data[pos + _NLMSGHDR.size : pos + length]))
        pos += (length + 3) & ~3
    return out


def run(queue: Queue, delay: float, jitter: float, rng: random.Random) -> None:
    held: collections.deque[tuple[float, int]] = collections.deque()  # (release at, packet id)
    last = 0.0
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop:
        now = time.monotonic()
        wait = max(0.0, held[0][0] - now) if held else 0.5
        try:
            ready, _, _ = select.select([queue.sock], [], [], wait)
        except InterruptedError:
            continue
        now = time.monotonic()
        if ready:
            for packet_id in queue.packets():
                hold = delay + (rng.uniform(-jitter, jitter) if jitter else 0.0)
                last = max(last, now + max(0.0, hold))  # never overtakes the one before
                held.append((last, packet_id))
        through = None
        while held and held[0][0] <= now:
            through = held.popleft()[1]
        if through is not None:
            queue.accept_through(through)
    if held:  # let what we hold go, rather than strand it
        queue.accept_through(held[-1][1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queue", type=int, required=True, help="NFQUEUE number (0-65535)")
    parser.add_argument("--delay", type=float, required=True, help="milliseconds")
    parser.add_argument("--jitter", type=float, default=0.0, help="milliseconds, +/- uniform")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    if sys.platform != "linux":
        print("linkdelay: needs Linux", file=sys.stderr)
        return 2
    try:
        queue = Queue(args.queue)
    except OSError as e:
        print(f"linkdelay: cannot bind NFQUEUE {args.queue}: {e}", file=sys.stderr)
        return 1
    print("ready", flush=True)
    try:
        run(queue, args.delay / 1000, args.jitter / 1000, random.Random(args.seed))
    finally:
        queue.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
