# The membership table, sans-IO: who is out there, how we learned of them, and who is still alive.
#
# Fed by discovery (mDNS add/remove), static peers, peers that other peers tell us about (gossip),
# peers that say hello to us (inbound), peers a local command names (named), and by every
# message we receive. Time is passed in. Peers that could not be reached, or stopped answering,
# are remembered for a while with the reason, so that commands can say why a peer is missing.
# mDNS keeps a crashed peer's records for a long time, so liveness is our own: a peer quiet for
# `ping_after` seconds is pinged, and one that misses `max_missed` pings in a row is dropped, and
# parked (core/parking.py) to be met again when it shows a sign of life or answers a later try.
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

from zwalk.core.addresses import Endpoint, same_scope
from zwalk.core.keys import matches
from zwalk.core.limits import PROTOCOL_VERSION
from zwalk.core.member import MAX_DETAIL as MAX_DETAIL
from zwalk.core.member import Action as Action
from zwalk.core.member import Connect as Connect
from zwalk.core.member import Disconnect as Disconnect
from zwalk.core.member import Lost as Lost
from zwalk.core.member import Member as Member
from zwalk.core.member import Ping as Ping
from zwalk.core.member import Source as Source
from zwalk.core.member import State as State
from zwalk.core.parking import Parked, Parking

MAX_LOST = 64  # peers remembered as unreachable or lost


class Membership:
    def __init__(
        self,
        own_node: bytes,
        *,
        ping_after: float = 1.0,
        ping_timeout: float = 1.0,
        max_missed: int = 3,
        hello_timeout: float = 3.0,
        retry_after: float = 5.0,
        max_members: int = 500,
        refresh_after: float = 10.0,
    ) -> None:
        self.own = own_node
        self.ping_after = ping_after
        self.ping_timeout = ping_timeout
        self.max_missed = max_missed
        self.hello_timeout = hello_timeout
        self.retry_after = retry_after
        self.max_members = max_members
        self.refresh_after = refresh_after
        self.by_endpoint: dict[Endpoint, Member] = {}
        self.static: set[Endpoint] = set()
        self._failed: dict[Endpoint, float] = {}  # endpoint -> when it last failed (no retry storm)
        self._self_endpoints: set[Endpoint] = set()
        self.lost: OrderedDict[Endpoint, Lost] = OrderedDict()  # the latest last
        self.parked = Parking(max_members)  # dropped for silence: met again when they are back
        self._ticked: float | None = None  # the last tick: a long gap means we were stopped

    # --- queries ----------------------------------------------------------------------------
    @property
    def liveness_bound(self) -> float:
        """How long a silent peer is kept: its last message, then pings until enough missed."""
        return self.ping_after + self.max_missed * self.ping_timeout

    def alive(self) -> list[Member]:
        return [m for m in self.by_endpoint.values() if m.state is State.ALIVE]

    def by_node(self, node: bytes) -> Member | None:
        for m in self.by_endpoint.values():
            if m.node == node:
                return m
        return None

    # --- learning of peers ------------------------------------------------------------------
    def add_static(self, endpoints: Iterable[Endpoint], now: float) -> list[Action]:
        """Peers the configuration names (the shell knows their keys, or learns them)."""
        out: list[Action] = []
        for ep in endpoints:
            self.static.add(ep)
            out += self._learn(ep, Source.STATIC, "", now, node=None)
        return out

    def add_named(self, endpoints: Iterable[Endpoint], now: float) -> list[Action]:
        """Peers a local command names: met now (even if one failed a moment ago), kept
        while they answer, not tried again once they fail."""
        out: list[Action] = []
        for ep in endpoints:
            if ep not in self.by_endpoint:
                self._failed.pop(ep, None)
            out += self._learn(ep, Source.NAMED, "", now, node=None)
        return out

    def on_discovered(
        self,
        node: bytes,
        endpoint: Endpoint,
        how: Source,
        detail: str,
        now: float,
        incarnation: bytes | None = None,
        key: bytes | None = None,
    ) -> list[Action]:
        """mDNS, gossip or an inbound hello named a peer at an endpoint, with the key its id
        must be the hash of (a record whose id and key disagree is a forgery: ignored)."""
        detail = detail[:MAX_DETAIL]
        if not matches(node, key):
            return []
        if node == self.own:
            if how is Source.MDNS:  # first-hand: our own announcement; gossip could be a lie
                self._self_endpoints.add(endpoint)
            return []
        if how is Source.GOSSIP and now - self._failed.get(endpoint, -1e9) < self.retry_after:
            return []  # told again about a peer that just failed us: not yet
        out: list[Action] = []
        current = self.by_node(node)
        if (
            current is not None
            and incarnation is not None
            and current.incarnation
            and current.incarnation != incarnation
        ):
            # A new run of a node we know: forget the old one entirely, then meet the new one.
            learned = dict(current.learned)
            out += self._drop(current, "restarted", now)
            out += self._learn(endpoint, how, detail, now, node=node, key=key)
            if endpoint in self.by_endpoint:
                self.by_endpoint[endpoint].learned.update(learned)
            return out
        if current is not None and current.endpoint != endpoint:
            if how is Source.MDNS:  # the peer moved (new port or address): follow it
                out += self._drop(current, "moved to " + str(endpoint), now)
            else:
                current.learned.setdefault(how, detail)
                return out
        return out + self._learn(endpoint, how, detail, now, node=node, key=key)

    def on_announced(
        self, node: bytes, endpoint: Endpoint, detail: str, version: int, now: float, key: bytes
    ) -> list[Action]:
        """An mDNS record: a peer of another protocol version is not met (version gate)."""
        if version != PROTOCOL_VERSION and node != self.own:
            return []
        return self.on_discovered(node, endpoint, Source.MDNS, detail, now, key=key)

    def on_gossip(
        self,
        teller: Endpoint,
        via: str,
        peers: Iterable[tuple[bytes, Endpoint, bytes]],
        usable: Callable[[Endpoint, bytes], bool],
        now: float,
    ) -> list[Action]:
        """Peers a hello-ok named: met if the address is in the teller's scope and `usable`
        (on our chosen interfaces' subnets, a key we admit), and did not fail us a moment ago."""
        out: list[Action] = []
        for node, ep, key in peers:
            if same_scope(ep.host, teller.host) and usable(ep, key):
                out += self.on_discovered(node, ep, Source.GOSSIP, f"via {via}", now, key=key)
        return out

    def refuse(self, endpoint: Endpoint, node: bytes, how: Source, reason: str, now: float) -> None:
        """A peer we will not meet (another protocol version, say): remembered with the reason,
        so that a command can say why it is missing."""
        self._remember(Lost(endpoint, node, "", {how: ""}, reason, now))

    def set_key(self, endpoint: Endpoint, key: bytes) -> None:
        """The key a member without one turned out to have (pinned, or learned on first use)."""
        m = self.by_endpoint.get(endpoint)
        if m is not None and m.pubkey is None:
            m.pubkey = key

    def failed_recently(self, endpoint: Endpoint, now: float) -> bool:
        """Whether the endpoint failed us less than `retry_after` ago (not to be tried again)."""
        return now - self._failed.get(endpoint, -1e9) < self.retry_after

    def _learn(
        self,
        ep: Endpoint,
        how: Source,
        detail: str,
        now: float,
        node: bytes | None,
        key: bytes | None = None,
    ) -> list[Action]:
        if ep in self._self_endpoints:
            return []
        m = self.by_endpoint.get(ep)
        if m is None:
            if len(self.by_endpoint) >= self.max_members and how is not Source.STATIC:
                return []  # full: only peers the user named still get in
            m = Member(endpoint=ep, node=node, pubkey=key, first_seen=now, hello_sent=now)
            m.learned[how] = detail
            self.by_endpoint[ep] = m
            if node is not None:
                self.parked.take(node)
            return [Connect(ep, key)]
        m.learned.setdefault(how, detail)
        if m.node is None and node is not None and (m.pubkey is None or matches(node, m.pubkey)):
            m.node = node
        return []

    def on_mdns_removed(self, node: bytes, now: float) -> list[Action]:
        """An mDNS goodbye. A static peer stays: mDNS was only one way we knew it."""
        self.parked.take(node)  # gone for good: no more tries
        m = self.by_node(node)
        if m is None:
            return []
        m.learned.pop(Source.MDNS, None)
        if m.endpoint in self.static:
            return []
        return self._drop(m, "left (mDNS goodbye)", now)

    # --- what peers say ---------------------------------------------------------------------
    def on_hello(
        self,
        endpoint: Endpoint,
        *,
        node: bytes,
        name: str,
        incarnation: bytes,
        files: int,
        version: int,
        now: float,
    ) -> list[Action]:
        """A hello-ok answered our hello, or a hello came in from a peer that listens."""
        m = self.by_endpoint.get(endpoint)
        if m is None:
            return []
        if m.pubkey is not None and not matches(node, m.pubkey):
            why = "its hello-ok names another node than the key it proved"
            return self._drop(m, why, now, failed=True)
        if node == self.own:
            self._self_endpoints.add(endpoint)
            return self._drop(m, "this is our own node", now)
        out: list[Action] = []
        other = self.by_node(node)
        if other is not None and other is not m:
            # The same node reached at two endpoints: keep one entry (the older one).
            for how, detail in m.learned.items():
                other.learned.setdefault(how, detail)
            return self._drop(m, f"same node as {other.endpoint}", now)
        if m.hello_sent is not None:
            self._rtt(m, now - m.hello_sent)
        m.node, m.name, m.files, m.version = node, name, files, version
        m.incarnation = incarnation
        m.state = State.ALIVE
        m.hello_sent = m.lost_since = None
        m.missed = 0
        m.last_seen = m.answered = now
        self._failed.pop(endpoint, None)
        self.lost.pop(endpoint, None)
        return out

    def on_traffic(self, node: bytes, now: float) -> list[Action]:
        """Anything at all from a peer counts as a sign of life; from a parked one (a node
        that woke up and still holds us alive), it is met again at once."""
        m = self.by_node(node)
        if m is None:
            parked = self.parked.take(node)
            return self._revive(node, parked, now) if parked is not None else []
        if m.state is State.ALIVE:
            m.last_seen = now
            m.missed = 0
        return []

    def on_reply(self, endpoint: Endpoint, now: float) -> None:
        """A reply arrived on our link to this endpoint."""
        m = self.by_endpoint.get(endpoint)
        if m is not None and m.state is State.ALIVE:
            m.last_seen = now
            m.missed = 0

    def on_pong(self, endpoint: Endpoint, now: float, files: int | None = None) -> None:
        m = self.by_endpoint.get(endpoint)
        if m is None:
            return
        if m.ping_sent is not None:
            self._rtt(m, now - m.ping_sent)
            m.ping_sent = None
        if files is not None:
            m.files = files
        m.answered = now
        m.last_seen = now
        m.missed = 0

    def on_files(self, node: bytes, files: int) -> None:
        """A peer told us how many files it shares now (a ping after its index changed)."""
        m = self.by_node(node)
        if m is not None:
            m.files = files

    def on_bye(self, node: bytes, now: float) -> list[Action]:
        self.parked.take(node)
        m = self.by_node(node)
        return self._drop(m, "left", now) if m is not None else []

    def on_connection_lost(
        self, endpoint: Endpoint, listening: bool | None, now: float
    ) -> list[Action]:
        """Our connection to a live peer closed, and a test connection found that something
        (True), nothing (False) or we cannot tell what (None) listens there now. Nothing: the
        process is gone (a crash closes its sockets), dropped now rather than after the missed
        pings. Otherwise it is pinged at once."""
        m = self.by_endpoint.get(endpoint)
        if m is None or m.state is not State.ALIVE:
            return []
        if listening is False:
            return self._lose(m, "its connection closed and nothing listens there now", now)
        if m.ping_sent is not None:
            return []
        m.ping_sent = now
        return [Ping(endpoint)]

    def on_unreachable(
        self, endpoint: Endpoint, why: str, now: float, *, retry: bool = False
    ) -> list[Action]:
        """The hello failed, or a send found the peer's queue full. `retry`: nothing there
        took our connection (refused, or no answer at all: a cable out, a process gone), so
        trying again later may find it back. A port that takes connections but a node that
        does not answer (a stopped process) is not tried again unasked: each try would wait in
        its accept queue, and it will show a sign of life when it wakes."""
        m = self.by_endpoint.get(endpoint)
        return self._lose(m, why, now, retry) if m is not None else []

    # --- the clock --------------------------------------------------------------------------
    def tick(self, now: float) -> list[Action]:
        out: list[Action] = []
        # Not ticked for longer than a silent peer is kept: we were stopped (SIGSTOP, a starved
        # process), and our peers have dropped us. What we did not hear meanwhile is not their
        # fault, and each must hear from us now to take us back (parking.py), not in a second.
        slept = self._ticked is not None and now - self._ticked > self.liveness_bound
        self._ticked = now
        for m in list(self.by_endpoint.values()):
            if m.state is State.CONNECTING:
                if m.hello_sent is not None and now - m.hello_sent >= self.hello_timeout:
                    why = f"no answer to hello within {self.hello_timeout:g} s"
                    out += self._lose(m, why, now)
                continue
            if slept:
                m.ping_sent, m.missed = None, 0
            if m.ping_sent is not None and now - m.ping_sent >= self.ping_timeout:
                m.missed += 1
                m.ping_sent = None
                if m.missed >= self.max_missed:
                    out += self._lose(m, f"stopped answering ({m.missed} pings missed)", now)
                    continue
            # Ping the quiet, and now and then the busy too: a pong refreshes files and RTT.
            stale = now - m.answered >= self.refresh_after
            if m.ping_sent is None and (slept or now - m.last_seen >= self.ping_after or stale):
                m.ping_sent = now
                out.append(Ping(m.endpoint))
        # Peers mDNS still lists, lost a while ago: try again (the pause grows, parking.py).
        for node, parked in self.parked.due(now):
            if self.by_node(node) is None:
                out += self._revive(node, parked, now)
        # Forget old failures (the table of them must not grow without end).
        if len(self._failed) > 4 * self.max_members:
            horizon = now - 10 * self.retry_after
            self._failed = {ep: t for ep, t in self._failed.items() if t >= horizon}
        # Static peers are never forgotten: try them again after a pause.
        for ep in self.static:
            if ep not in self.by_endpoint and now - self._failed.get(ep, -1e9) >= self.retry_after:
                out += self._learn(ep, Source.STATIC, "", now, node=None)
        return out

    def next_wakeup(self, now: float) -> float:
        """When `tick` next has something to do (at the latest, ping_after from now)."""
        times = [now + self.ping_after]
        if (retry := self.parked.next_due()) is not None:
            times.append(retry)
        for m in self.by_endpoint.values():
            if m.state is State.CONNECTING and m.hello_sent is not None:
                times.append(m.hello_sent + self.hello_timeout)
            elif m.ping_sent is not None:
                times.append(m.ping_sent + self.ping_timeout)
            else:
                times.append(m.last_seen + self.ping_after)
        return max(now, min(times))

    # --- helpers ----------------------------------------------------------------------------
    def _drop(self, m: Member, reason: str, now: float, failed: bool = False) -> list[Action]:
        self.by_endpoint.pop(m.endpoint, None)
        self._failed[m.endpoint] = now
        if failed:
            self._remember(Lost(m.endpoint, m.node, m.name, dict(m.learned), reason, now))
        return [Disconnect(m.endpoint, reason)]

    def _lose(self, m: Member, reason: str, now: float, retry: bool = True) -> list[Action]:
        """Dropped for silence or an unanswered hello: parked, if we know whom to expect, and
        tried again unasked while mDNS lists it if `retry`."""
        if m.node is not None and m.pubkey is not None:
            again = retry and Source.MDNS in m.learned
            self.parked.park(
                m.node, m.endpoint, m.pubkey, name=m.name, incarnation=m.incarnation,
                learned=m.learned, retry=again, now=now, since=m.lost_since,
            )  # fmt: skip
        return self._drop(m, reason, now, failed=True)

    def _revive(self, node: bytes, parked: Parked, now: float) -> list[Action]:
        """Meet a parked peer again where it was, knowing what we knew (its run, too: a hello
        from another run is a restart)."""
        how, detail = next(iter(parked.learned.items()), (Source.INBOUND, ""))
        out = self._learn(parked.endpoint, how, detail, now, node=node, key=parked.key)
        m = self.by_endpoint.get(parked.endpoint)
        if out and m is not None:
            m.learned.update(parked.learned)
            m.name, m.incarnation = parked.name, parked.incarnation
            m.lost_since = parked.since  # if it fails again, the next pause is longer
        return out

    def _remember(self, lost: Lost) -> None:
        self.lost[lost.endpoint] = lost
        self.lost.move_to_end(lost.endpoint)
        while len(self.lost) > MAX_LOST:
            self.lost.popitem(last=False)

    @staticmethod
    def _rtt(m: Member, sample: float) -> None:
        m.rtt = sample if m.rtt is None else 0.8 * m.rtt + 0.2 * sample
