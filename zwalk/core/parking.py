# Peers lost but likely to come back, sans-IO. A peer dropped because it went silent or did not
# answer hello (a laptop whose lid closed, a pulled cable, a node that hung) is parked here with
# its endpoint and key. Nothing else would bring it back: its mDNS record never changed, so no
# announcement comes, gossip travels only in hello-ok, and the peer itself, when it wakes, still
# holds us alive and sends no hello. So a parked peer is met again at once when it shows a sign of
# life (a message on our ROUTER from the key it proved), and, while mDNS still lists it and it
# did not take our connections (a cut link, a process gone), tried again now and then, the pause
# growing with the time it has been gone.
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from zwalk.core.addresses import Endpoint
from zwalk.core.member import Source

FIRST_RETRY = 1.0  # seconds: the pause before the first try after a loss
MAX_RETRY = 30.0  # and at most, for a peer gone for a long time
RETRY_SHARE = 0.1  # the pause is this share of the time since the peer was first lost


def pause(gone_for: float) -> float:
    """How long to wait before trying again a peer lost `gone_for` seconds ago."""
    return min(MAX_RETRY, max(FIRST_RETRY, RETRY_SHARE * gone_for))


@dataclass(slots=True)
class Parked:
    endpoint: Endpoint
    key: bytes
    name: str  # as it last called itself (rows and reports name it while it is tried again)
    incarnation: bytes  # of the run we knew: a hello from another run is a restart
    learned: dict[Source, str]  # how we had learned of it (a copy)
    retry: bool  # worth trying again unasked (mDNS lists it, it took no connection of ours)
    since: float  # first lost (at this endpoint)
    next_try: float


class Parking:
    """Parked peers by node id, at most `limit` (the oldest go first)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._by_node: OrderedDict[bytes, Parked] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_node)

    def park(
        self,
        node: bytes,
        endpoint: Endpoint,
        key: bytes,
        *,
        name: str,
        incarnation: bytes,
        learned: dict[Source, str],
        retry: bool,
        now: float,
        since: float | None = None,
    ) -> None:
        """Park a lost node (`since`: when it was first lost, if this was a try again)."""
        self._by_node.pop(node, None)
        since = now if since is None else since
        nxt = now + pause(now - since)
        self._by_node[node] = Parked(
            endpoint, key, name, incarnation, dict(learned), retry, since, nxt
        )
        while len(self._by_node) > self.limit:
            self._by_node.popitem(last=False)

    def take(self, node: bytes) -> Parked | None:
        """Unpark a node (met again, or gone for good): what we knew of it, if anything."""
        return self._by_node.pop(node, None)

    def due(self, now: float) -> list[tuple[bytes, Parked]]:
        """Unpark and return the peers to try again whose time has come."""
        out = [(n, p) for n, p in self._by_node.items() if p.retry and p.next_try <= now]
        for node, _ in out:
            del self._by_node[node]
        return out

    def next_due(self) -> float | None:
        times = [p.next_try for p in self._by_node.values() if p.retry]
        return min(times) if times else None
