# Who this node is and where peers can reach it: its identity, its run (incarnation), the
# endpoints it listens on and the addresses it announces. Filled in as the node binds.
from __future__ import annotations

import os
from dataclasses import dataclass, field

from zwalk.core import protocol as p
from zwalk.core.addresses import Endpoint, gossipable
from zwalk.core.responder import Me
from zwalk.net.netif import default_addresses
from zwalk.store.identity import Identity

LOOPBACK = "127.0.0.1"


@dataclass(slots=True)
class Local:
    identity: Identity
    name: str
    listen: bool
    incarnation: bytes = field(default_factory=lambda: os.urandom(p.INC_BYTES))
    endpoints: list[Endpoint] = field(default_factory=list)  # where our ROUTER is bound
    mdns_addresses: list[str] = field(default_factory=list)  # where we announce
    files: int = 0  # how many files we share (told to peers in pings)

    @property
    def node_id(self) -> bytes:
        return self.identity.node_id

    @property
    def key(self) -> bytes:
        return self.identity.key

    @property
    def port(self) -> int:
        return self.endpoints[0].port if self.endpoints else 0

    def me(self) -> Me:
        return Me(node=self.node_id, name=self.name, port=self.port, inc=self.incarnation)

    def hello(self) -> p.Hello:
        return p.Hello(
            req=0, node=self.node_id, name=self.name, port=self.port, inc=self.incarnation
        )

    def is_own(self, ep: Endpoint) -> bool:
        hosts = {e.host for e in self.endpoints} | set(self.mdns_addresses)
        return ep.port == self.port and (ep.host in hosts or "0.0.0.0" in hosts)  # noqa: S104

    def reachable_at(self) -> list[Endpoint]:
        """Where peers can reach us: our listening endpoints, a wildcard one as each address
        we announce on (or every non-loopback address of this host)."""
        out: list[Endpoint] = []
        for e in self.endpoints:
            hosts = (
                [e.host]
                if gossipable(e.host)
                else (self.mdns_addresses or default_addresses() or [LOOPBACK])
            )
            out += [Endpoint(h, e.port) for h in hosts if gossipable(h)]
        return list(dict.fromkeys(out))

    def self_ref(self) -> p.PeerRef:
        """How peers reach this node: a concrete address of ours, and our port."""
        hosts = [e.host for e in self.reachable_at()]
        hosts += self.mdns_addresses or default_addresses() or [LOOPBACK]
        host = next(h for h in hosts if gossipable(h))
        return p.PeerRef(
            node=self.node_id, name=self.name, host=host, port=self.port or 1, key=self.key
        )
