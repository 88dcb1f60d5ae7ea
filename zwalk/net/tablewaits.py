# Waiting for the peer table: until it changes, until a condition holds, until discovery has had
# its time. Part of PeerTable (net/peers.py), kept apart to keep each module to one idea: these
# only read the membership table and wait on the change signal the table raises.
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable

from zwalk.core.addresses import Endpoint
from zwalk.core.membership import Membership, State
from zwalk.net.diagnosis import hello_wait
from zwalk.store.config import Config


class TableWaits:
    membership: Membership
    cfg: Config

    def __init__(self) -> None:
        # Set at the next change of the table, then replaced by a fresh one: every waiter
        # wakes, and none can clear the signal under another.
        self._changed = asyncio.Event()
        self._started = time.monotonic()
        self._settled = False  # a settle() ran to its end: discovery has had its time

    def _changed_now(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def next_change(self, timeout: float) -> bool:
        """Wait until the table changes (True) or `timeout` seconds pass (False)."""
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, timeout)):
                await changed.wait()
        return changed.is_set()

    async def wait_until(self, ready: Callable[[], bool], timeout: float) -> bool:
        """Wait until `ready()` holds, checked at each change, for at most `timeout` seconds;
        returns whether it does."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not ready():
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return False
            await self.next_change(left)
        return True

    def alive(self, ep: Endpoint) -> bool:
        """Whether the peer at `ep` has answered our hello and still answers pings."""
        m = self.membership.by_endpoint.get(ep)
        return m is not None and m.state is State.ALIVE

    def answered(self, endpoints: Iterable[Endpoint]) -> bool:
        """Whether each of these peers answered our hello, or was dropped (it refused us, or
        turned out to be ourselves or another peer's second address): none is worth waiting
        for any longer."""
        table = self.membership.by_endpoint
        return all(self.alive(ep) or ep not in table for ep in endpoints)

    async def settle(self, wait: float, quiet: float = 0.3) -> None:
        """Let discovery and hellos run: up to `wait` seconds, less once every peer found has
        answered and nothing new turned up for `quiet` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        last_change = loop.time()
        while (now := loop.time()) < deadline:
            members = self.membership.by_endpoint.values()
            answered = bool(members) and all(m.state is State.ALIVE for m in members)
            if answered and now - last_change >= quiet:
                self._settled = True
                return
            until = min(deadline, last_change + quiet) if answered else deadline
            if await self.next_change(until - now):
                last_change = loop.time()

    async def hear_back(self) -> None:
        """Wait until every peer in the table has answered hello or failed (with the reason a
        user will want): at most the hello timeout and a diagnosis."""
        await self.wait_until(
            lambda: all(m.state is State.ALIVE for m in self.membership.by_endpoint.values()),
            hello_wait(self.cfg),
        )

    async def ready(self) -> None:
        """Before a search: a node in its first moments has not met its peers yet (mDNS
        answers take a moment, then each hello), and a walk from an empty or half-filled table
        ends at once with nothing found. So a young node lets discovery settle first, for at
        most `discovery_wait` from its start; later this returns at once."""
        left = self._started + self.cfg.discovery_wait - time.monotonic()
        if not self._settled and left > 0:
            await self.settle(left)
