# A simulated network for the chunk scheduler: each source sends over its own link of a given
# rate and round trip, and every download that asks it for frames gets an equal share of that
# rate while it has frames queued there (as TCP flows through one bottleneck roughly do). The
# scheduler is driven as download.py drives it (late requests, new ones, late replies kept), on
# a simulated clock, with two simplifications: a frame is written the moment it arrives, and
# each source's round trip is given exactly (the real loop takes it from its hello).
from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass, field

from zwalk.core import protocol as p
from zwalk.core.sources import Request
from zwalk.core.transfer import ChunkScheduler

EPS = 1e-12


@dataclass
class Link:
    """One source's uplink: `rate` bytes/s, `rtt` seconds there and back, and `serve` seconds
    for the source to read a frame before it can send it."""

    rate: float
    rtt: float = 0.0005
    serve: float = 0.0002
    stop_at: float = float("inf")  # from then on it sends nothing (a frozen or dead source)
    queues: dict[int, deque[list[float]]] = field(default_factory=dict)  # flow -> [left, ...]


@dataclass
class Download:
    sched: ChunkScheduler[str]
    links: dict[str, Link]
    flow: int
    started: float = 0.0
    finished: float | None = None
    worst_in_flight: dict[str, float] = field(default_factory=dict)  # in seconds of the rate
    late: int = 0  # requests the scheduler gave up on


class Net:
    def __init__(self) -> None:
        self.now = 0.0
        self._events: list[tuple[float, int, str, object]] = []
        self._seq = itertools.count()
        self.downloads: list[Download] = []
        self._flows = itertools.count()

    def download(
        self, info: p.FileInfo, links: dict[str, Link], start: float = 0.0, **kw: object
    ) -> Download:
        sched: ChunkScheduler[str] = ChunkScheduler(info, list(links), **kw)  # type: ignore[arg-type]
        for name, link in links.items():
            sched.add_source(name, rtt=link.rtt)  # as fetch_info measures it
        d = Download(sched, links, next(self._flows), started=start)
        self.downloads.append(d)
        self._at(start, "wake", d)
        return d

    def _at(self, t: float, kind: str, what: object) -> None:
        heapq.heappush(self._events, (t, next(self._seq), kind, what))

    # --- the links ------------------------------------------------------------------------
    def _links(self) -> list[Link]:
        return list({id(link): link for d in self.downloads for link in d.links.values()}.values())

    def _next_completion(self) -> float:
        """When the next frame finishes leaving its link, at the current shares."""
        best = float("inf")
        for link in self._links():
            active = [q for q in link.queues.values() if q]
            if active and self.now >= link.stop_at:
                continue
            if active and link.stop_at < best:
                best = link.stop_at  # the shares change then
            if active:
                share = link.rate / len(active)
                best = min(best, self.now + min(q[0][0] for q in active) / share)
        return best

    def _advance(self, until: float) -> None:
        """Run the links' fluid model up to `until` (no frame finishes before it)."""
        step = until - self.now
        if step <= 0:
            return
        for link in self._links():
            active = [q for q in link.queues.values() if q]
            if not active or self.now >= link.stop_at:
                continue
            share = link.rate / len(active)
            for q in active:
                q[0][0] -= share * step
                if q[0][0] <= 1e-6:
                    _, d, req = q.popleft()
                    self._at(until + link.rtt / 2, "reply", (d, req))
        self.now = until

    # --- the downloader -------------------------------------------------------------------
    def _drive(self, d: Download) -> None:
        """What download._run does on each wake-up: late requests, then new ones."""
        s, now = d.sched, self.now
        for late in s.overdue(now):
            d.late += 1
            s.on_failure(late.source, late.index, "late", now, late.serial)
        for name, st in s.sources.items():
            if st.rate:
                d.worst_in_flight[name] = max(
                    d.worst_in_flight.get(name, 0.0), st.in_flight / d.links[name].rate
                )
        for req in s.requests(now):
            link = d.links[req.source]
            self._at(now + link.rtt / 2 + link.serve, "queued", (d, req))
        due = s.next_deadline()
        if due is not None:
            self._at(max(due, now), "wake", d)

    def run(self, limit: float = 3600.0) -> None:
        while any(d.finished is None and not d.sched.stuck for d in self.downloads):
            done = self._next_completion()
            if not self._events or done < self._events[0][0]:
                if done == float("inf"):
                    raise AssertionError("nothing to wait for: the download would hang")
                self._advance(done)  # a frame has left its link: its reply is on its way
                continue
            t, _, kind, what = heapq.heappop(self._events)
            if t > limit:
                raise AssertionError(f"not done after {limit} simulated seconds")
            self._advance(t)
            if kind == "wake":
                d = what
                assert isinstance(d, Download)
                if d.finished is None:
                    self._drive(d)
            elif kind == "queued":
                d, req = what  # type: ignore[misc]
                link = d.links[req.source]
                nbytes = d.sched.span(req.index, req.count)[1]
                link.queues.setdefault(d.flow, deque()).append([float(nbytes), d, req])
            elif kind == "reply":
                d, req = what  # type: ignore[misc]
                self._reply(d, req)

    def _reply(self, d: Download, req: Request[str]) -> None:
        s, now = d.sched, self.now
        chunks = range(req.index, req.index + req.count)
        if not s.accepts(req.source, req.index, req.serial):
            # given up on, but here after all: as download.py does, keep what is missing
            s.on_stale_arrival(req.source, now)
            todo = [i for i in chunks if i not in s.done_chunks]
            if not todo:
                return
            s.on_frame(req.source, req.index, todo, now=now, serial=req.serial)
        else:
            s.on_arrival(req.source, req.index, req.serial, now=now)
            s.on_frame(req.source, req.index, chunks, now=now, serial=req.serial)
        if s.complete:
            d.finished = now
        else:
            self._drive(d)


def file_info(size: int, chunk_size: int = 1 << 20) -> p.FileInfo:
    n = p.chunk_count(size, chunk_size)
    return p.FileInfo(req=0, cid=b"\1" * 32, size=size, chunk_size=chunk_size, hashes=bytes(32 * n))


def mbit(x: float) -> float:
    """Bytes per second of a link of x Mbit/s."""
    return x * 1e6 / 8
