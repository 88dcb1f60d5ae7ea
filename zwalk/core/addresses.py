# Where peers are and which of their addresses we may use, sans-IO: the endpoint type, and the
# rules for addresses a peer tells us about (gossip, a walk's origin, an inbound hello).
from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from zwalk.core import protocol as p


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def zmq(self) -> str:
        return f"tcp://{self.host}:{self.port}"


def gossipable(host: str) -> bool:
    """Only addresses a peer can use as they are (never names, never wildcards)."""
    try:
        p.ipv4(host)
    except p.ProtocolError:
        return False
    return True


def same_scope(told: str, teller: str) -> bool:
    """A loopback address names a host only from that host itself: one a peer tells us counts
    only if we reached that peer on loopback too, and the other way round."""
    return told.startswith("127.") == teller.startswith("127.")


def within(host: str, nets: Sequence[ipaddress.IPv4Network]) -> bool:
    """Whether an address lies on one of our chosen interfaces' subnets (a node kept to a test
    network stays there)."""
    try:
        ip = ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return any(ip in net for net in nets)
