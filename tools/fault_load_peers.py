"""Protocol-speaking load peers for the `load` and `soak` scenarios (tools/fault_load.py), run on
a lab host.

Each peer is what a minimal zwalk node is to the target: a CurveZMQ key of its own, a ROUTER
that answers `hello`, `ping` and `walk-check` and takes `walk-hits` and `walk-end` (so it is a
real searcher the target reports to), and a DEALER to the target that said `hello` first (so
the target knows it as an alive peer, as it knows any searcher), then to the peers the target
named. It prints "ready"; on "go" (a line on stdin) every peer sends its share of the walks at
once, without reading any reply, then all ping (and one searches) every `--every` seconds while
the walks run and for at least `--linger` seconds; a walk answered `busy` is sent again after a
pause, as a searcher would offer it again. It prints "busy" when the first walk is refused as
busy, then one JSON line of counts: every request sent, every reply by kind, and for each walk
whether its end came back. A quiet extra peer only pings: what any other peer of the node sees.

    python tools/fault_load_peers.py --target HOST:PORT --key Z85 --node HEX --host ADDR \
        --peers 10 --walks 1000 --names a.txt,b.txt --deadline 60
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zmq  # noqa: E402
import zmq.asyncio  # noqa: E402
from zmq.utils import z85  # noqa: E402

from zwalk.core import protocol as p  # noqa: E402
from zwalk.core.keys import node_id_for  # noqa: E402

RETRY_AFTER = (0.1, 0.5)  # a walk answered busy is sent again after this long: spread out,
# so that a relay the node frees is taken at once, not by the next wave of retries
MAX_WALKS = 200_000  # walks in one run at most, whatever --hold says
MAX_TRIES = 300  # sends of one walk at most (90 s of busy answers: the node starves it)
CHECK_DELAY = (0.5, 1.5)  # a walk-check is answered this late (the relay's deadline: 2 s)
HWM = 100_000  # our own queues never drop: every loss counted is the target's


@dataclass
class Tally:
    sent: Counter[str] = field(default_factory=Counter)  # requests by type
    replies: Counter[str] = field(default_factory=Counter)  # replies by request:reply kind
    notes: Counter[str] = field(default_factory=Counter)  # what came to our ROUTERs
    pending: dict[int, tuple[str, bytes]] = field(default_factory=dict)  # req -> (type, qid)
    accepted: dict[bytes, float] = field(default_factory=dict)  # qid -> when walk-ok came
    ended: dict[bytes, str] = field(default_factory=dict)  # qid -> how it ended
    tries: Counter[bytes] = field(default_factory=Counter)
    hits: Counter[bytes] = field(default_factory=Counter)
    saturated: bool = False  # a walk was answered busy
    outstanding_peak: int = 0  # walks sent and not yet answered
    in_flight_peak: int = 0  # walks accepted and not yet ended
    ping_rtts: dict[str, list[float]] = field(default_factory=dict)  # by peer name
    ping_at: dict[int, float] = field(default_factory=dict)  # ping req -> when sent

    def in_flight(self) -> int:
        return sum(1 for q in self.accepted if q not in self.ended)


class Peer:
    def __init__(self, ctx: zmq.asyncio.Context, host: str, n: int, tally: Tally) -> None:
        public, secret = zmq.curve_keypair()
        self.key = z85.decode(public)
        self.node = node_id_for(self.key)
        self.name = f"load{n}" if n else "quiet"
        self.tally = tally
        self.inc = os.urandom(p.INC_BYTES)
        self.router = ctx.socket(zmq.ROUTER)
        self.router.curve_server = True
        self.router.curve_secretkey = secret
        for sock_opt in (zmq.SNDHWM, zmq.RCVHWM):
            self.router.setsockopt(sock_opt, HWM)
        self.port = self.router.bind_to_random_port(f"tcp://{host}")
        self.host = host
        self.ctx, self.secret, self.public = ctx, secret, public
        self.dealer = self.dealer_to(b"")
        self.gossip: tuple[p.PeerRef, ...] = ()  # the peers the target told us of
        self.greeted = asyncio.Event()  # the target said hello to our ROUTER
        self.hello_ok = asyncio.Event()
        self.ours: set[bytes] = set()  # node ids of every load peer (filled by the caller)
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def ref(self) -> p.PeerRef:
        return p.PeerRef(
            node=self.node, name=self.name, host=self.host, port=self.port, key=self.key
        )

    def dealer_to(self, endpoint: bytes, server_key: bytes = b"") -> zmq.asyncio.Socket:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.curve_secretkey, sock.curve_publickey = self.secret, self.public
        for sock_opt in (zmq.SNDHWM, zmq.RCVHWM):
            sock.setsockopt(sock_opt, HWM)
        if endpoint:
            sock.curve_serverkey = server_key
            sock.connect(f"tcp://{endpoint.decode()}")
        return sock

    def connect(self, endpoint: str, server_key: bytes) -> None:
        self.dealer.curve_serverkey = server_key
        self.dealer.connect(f"tcp://{endpoint}")

    async def request(
        self, msg: p.Message, qid: bytes = b"", sock: zmq.asyncio.Socket | None = None
    ) -> None:
        self.tally.sent[msg.TYPE] += 1
        self.tally.pending[msg.req] = (msg.TYPE, qid)
        await (sock or self.dealer).send_multipart(p.encode(msg))

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # --- replies from the target on our DEALER ---------------------------------------------
    async def take_replies(
        self, resend: asyncio.Queue[bytes], sock: zmq.asyncio.Socket | None = None
    ) -> None:
        t = self.tally
        while True:
            msg = p.decode(await (sock or self.dealer).recv_multipart())
            kind, qid = t.pending.pop(msg.req, ("unsolicited", b""))
            got = f"{msg.code} ({msg.reason})" if isinstance(msg, p.Error) else msg.TYPE
            t.replies[f"{kind}:{got}"] += 1
            if isinstance(msg, p.HelloOk) and sock is None:
                self.gossip = msg.peers
                self.hello_ok.set()
            elif isinstance(msg, p.Pong):
                rtt = time.monotonic() - t.ping_at.pop(msg.req, time.monotonic())
                t.ping_rtts.setdefault(self.name, []).append(rtt)
            elif kind == "walk" and isinstance(msg, p.WalkOk):
                t.accepted.setdefault(qid, time.monotonic())
                t.in_flight_peak = max(t.in_flight_peak, t.in_flight())
            elif kind == "walk" and isinstance(msg, p.Error) and msg.code is p.ErrorCode.BUSY:
                if not t.saturated:  # the target relays all it may: say so (once)
                    t.saturated = True
                    print("busy", flush=True)
                resend.put_nowait(qid)

    # --- what the target (or another node) sends our ROUTER ---------------------------------
    async def serve(self) -> None:
        while True:
            rid, frame = await self.router.recv_multipart()
            try:
                msg = p.decode([frame])
            except p.ProtocolError as e:
                self.tally.notes[f"malformed:{e.reason[:40]}"] += 1
                continue
            self.tally.notes[msg.TYPE] += 1
            match msg:
                case p.Hello():
                    self.greeted.set()
                    ok = p.HelloOk(req=msg.req, node=self.node, name=self.name, files=0,
                                   port=self.port, inc=self.inc)  # fmt: skip
                    await self.answer(rid, ok)
                case p.Ping():
                    await self.answer(rid, p.Pong(req=msg.req, files=0))
                case p.Walk() if msg.origin.node in self.ours:
                    # One of our walks handed on to us: our relay would end it here (ttl 0).
                    self.tally.ended.setdefault(msg.qid, f"handed-on:{msg.hops}")
                    await self.answer(rid, p.WalkOk(req=msg.req))
                case p.WalkCheck():
                    self.spawn(self.check(rid, msg))
                case p.WalkHits():
                    self.tally.hits[msg.qid] += len(msg.hits)
                case p.WalkEnd():
                    self.tally.ended.setdefault(msg.qid, str(msg.reason))
                case p.Bye():
                    pass
                case _ if msg.TYPE in ("walk", "search", "get-info", "get-chunks", "list"):
                    # Someone else's work: we do none (a walk goes to another neighbour).
                    await self.answer(
                        rid, p.Error(req=msg.req, code=p.ErrorCode.BUSY, reason="load")
                    )

    async def check(self, rid: bytes, msg: p.WalkCheck) -> None:
        await asyncio.sleep(random.uniform(*CHECK_DELAY))  # noqa: S311 -- not security
        await self.answer(rid, p.WalkGo(req=msg.req, go=True))

    async def answer(self, rid: bytes, msg: p.Message) -> None:
        await self.router.send_multipart([rid, *p.encode(msg)])


def make_walk(peer: Peer, target: bytes, req: int, n: int, names: list[str]) -> p.Walk:
    """Walk n: a name, a glob or a content id that may hit at the target. Three in four may go
    one hop further and check back first (answered late: the relay stays busy meanwhile)."""
    rng = random.Random(n)  # noqa: S311 -- not security
    kind, pattern = rng.choice(
        [(p.QueryKind.NAME, rng.choice(names)), (p.QueryKind.GLOB, "*.txt"),
         (p.QueryKind.GLOB, "nothing-*"), (p.QueryKind.NAME, f"absent-{n}.bin")]
    )  # fmt: skip
    return p.Walk(req=req, qid=os.urandom(p.ID_BYTES), walker=0, hops=1, path=(peer.node, target),
                  strategy=p.Strategy.KWALK, ttl=int(rng.random() < 0.75), check_every=1,
                  origin=peer.ref, kind=kind, pattern=pattern, icase=False,
                  stop_on_hit=rng.random() < 0.5, backtrack=False)  # fmt: skip


async def meet(peers: list[Peer], reqs: Iterator[int], resend: asyncio.Queue[bytes]) -> None:
    """Hello to the target both ways, as between nodes, then to the peers it names (as a node
    meets gossip), so that every relay can report to us."""
    ours = {x.node for x in peers}
    for x in peers:
        x.ours = ours
        x.spawn(x.serve())
        x.spawn(x.take_replies(resend))
        await x.request(p.Hello(req=next(reqs), node=x.node, name=x.name, port=x.port, inc=x.inc))
    async with asyncio.timeout(30):
        for x in peers:
            await x.hello_ok.wait()
            await x.greeted.wait()
    for x in peers:
        for ref in x.gossip:
            if ref.node not in ours:
                sock = x.dealer_to(f"{ref.host}:{ref.port}".encode(), z85.encode(ref.key))
                x.spawn(x.take_replies(resend, sock))
                hello = p.Hello(req=next(reqs), node=x.node, name=x.name, port=x.port, inc=x.inc)
                await x.request(hello, sock=sock)
    async with asyncio.timeout(30):
        while peers[0].tally.pending:  # noqa: ASYNC110 -- a count, no event to wait on
            await asyncio.sleep(0.05)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    ctx = zmq.asyncio.Context()
    tally = Tally()
    reqs = iter(range(1, 1 << 62))
    target_node = bytes.fromhex(args.node)
    # The quiet one sends no walks: its pings show what any other peer of the node sees.
    peers = [Peer(ctx, args.host, n, tally) for n in range(args.peers + 1)]
    quiet, walkers = peers[0], peers[1:]
    walks: dict[bytes, p.Walk] = {}
    by_qid: dict[bytes, Peer] = {}
    resend: asyncio.Queue[bytes] = asyncio.Queue()
    try:
        for x in peers:
            x.connect(args.target, args.key.encode())
        await meet(peers, reqs, resend)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # "go"
        started = time.monotonic()
        names = args.names.split(",")

        async def walk() -> None:
            x = walkers[len(walks) % len(walkers)]
            w = make_walk(x, target_node, next(reqs), len(walks), names)
            walks[w.qid], by_qid[w.qid] = w, x
            tally.tries[w.qid] += 1
            await x.request(w, w.qid)

        for _ in range(args.walks):  # all at once: nothing is read back meanwhile
            await walk()
        burst = time.monotonic() - started
        while time.monotonic() < started + args.deadline:
            walking = sum(1 for k, _ in tally.pending.values() if k == "walk")
            tally.outstanding_peak = max(tally.outstanding_peak, walking)
            if time.monotonic() < started + args.hold and len(walks) < MAX_WALKS:  # keep them up
                for _ in range(args.walks - (len(walks) - len(tally.ended))):
                    await walk()
            done = not tally.pending and len(tally.ended) >= len(walks) and resend.empty()
            if done and time.monotonic() >= started + max(args.linger, args.hold):
                break
            for x in peers:  # the target must keep answering pings and searches meanwhile
                req = next(reqs)
                tally.ping_at[req] = time.monotonic()
                await x.request(p.Ping(req=req))
            x = random.choice(peers)  # noqa: S311
            await x.request(p.Search(req=next(reqs), qid=os.urandom(16), kind=p.QueryKind.GLOB,
                                     pattern="*.txt", icase=False, limit=100))  # fmt: skip
            await asyncio.sleep(args.every)
            while not resend.empty():
                qid = resend.get_nowait()
                if tally.tries[qid] >= MAX_TRIES:
                    tally.ended.setdefault(qid, "gave-up-busy")
                    continue
                tally.tries[qid] += 1
                x = by_qid[qid]
                x.spawn(_later(x, walks[qid], next(reqs)))
        lost = [k for k, _ in tally.pending.values()]
        never = [q for q in walks if q in tally.accepted and q not in tally.ended]
        rtts = {k: round(max(v, default=0) * 1000, 1) for k, v in tally.ping_rtts.items()}
        return {
            "peers": len(walkers),
            "walks": len(walks),
            "concurrent_walks": args.walks,
            "burst_ms": round(burst * 1000, 1),
            "requests": dict(tally.sent),
            "replies": dict(tally.replies),
            "unanswered": dict(Counter(lost)),
            "walks_accepted": len(tally.accepted),
            "walks_accepted_first_try": sum(1 for q in tally.accepted if tally.tries[q] == 1),
            # of the first --walks, sent at once: the node takes MAX_RELAYS before it says busy
            "burst_accepted_first_try": sum(
                1 for q in list(walks)[: args.walks] if q in tally.accepted and tally.tries[q] == 1
            ),
            "walks_ended": sum(1 for q in walks if q in tally.ended),
            "walks_without_end": len(never),
            "walks_never_accepted": sum(1 for q in walks if q not in tally.accepted),
            "ended_by": dict(Counter(tally.ended[q] for q in walks if q in tally.ended)),
            "walk_hits": sum(tally.hits.values()),
            "outstanding_peak": tally.outstanding_peak,
            "in_flight_peak": tally.in_flight_peak,
            "ping_rtt_max_ms": rtts.get(quiet.name, 0.0),
            "ping_rtt_max_behind_walks_ms": max(
                (v for k, v in rtts.items() if k != quiet.name), default=0.0
            ),
            "to_our_routers": dict(tally.notes),
            "seconds": round(time.monotonic() - started, 1),
        }
    finally:
        for x in peers:
            for task in list(x.tasks):
                task.cancel()
        ctx.destroy(linger=0)


async def _later(x: Peer, walk: p.Walk, req: int) -> None:
    await asyncio.sleep(random.uniform(*RETRY_AFTER))  # noqa: S311 -- not security
    await x.request(dataclasses.replace(walk, req=req), walk.qid)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", required=True, help="HOST:PORT of the node under load")
    ap.add_argument("--key", required=True, help="its public key (Z85)")
    ap.add_argument("--node", required=True, help="its node id (hex)")
    ap.add_argument("--host", required=True, help="our address")
    ap.add_argument("--peers", type=int, default=10)
    ap.add_argument("--walks", type=int, default=1000)
    ap.add_argument("--names", default="a.txt")
    ap.add_argument("--deadline", type=float, default=60.0, help="seconds after go at most")
    ap.add_argument("--hold", type=float, default=0.0, help="keep --walks going this long")
    ap.add_argument("--linger", type=float, default=0.0, help="ping and search this long")
    ap.add_argument("--every", type=float, default=0.1, help="seconds between ping rounds")
    args = ap.parse_args()
    if not 1 <= args.peers <= 100 or not 0 <= args.walks <= 100_000 or args.every < 0.05:
        raise SystemExit("1..100 peers, 0..100000 walks, pings at most every 0.05 s")
    print(json.dumps(asyncio.run(run(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
