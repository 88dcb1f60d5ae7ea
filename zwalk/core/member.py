# One row of the membership table, and what the table asks the shell to do: plain data, the
# decisions are in core/membership.py (which offers these names too).
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from zwalk.core.addresses import Endpoint

MAX_DETAIL = 200  # characters of "how we learned" detail kept per source


class Source(enum.StrEnum):
    MDNS = "mdns"
    STATIC = "static"
    GOSSIP = "gossip"
    INBOUND = "inbound"
    NAMED = "named"  # by a local command (--peer): tried now, not again once it fails


class State(enum.StrEnum):
    CONNECTING = "connecting"  # hello sent, no answer yet
    ALIVE = "alive"


@dataclass(slots=True)
class Member:
    endpoint: Endpoint
    node: bytes | None = None  # unknown until the peer says hello-ok
    pubkey: bytes | None = None  # the key we connect with: the node id is its hash
    name: str = ""
    incarnation: bytes = b""
    version: int | None = None
    files: int = 0
    state: State = State.CONNECTING
    learned: dict[Source, str] = field(default_factory=dict)  # how -> detail (interface, via)
    first_seen: float = 0.0
    last_seen: float = 0.0  # last time anything arrived from it
    rtt: float | None = None  # seconds, smoothed
    ping_sent: float | None = None
    answered: float = 0.0  # last hello-ok or pong: when `files` and `rtt` were last refreshed
    missed: int = 0
    hello_sent: float | None = None
    lost_since: float | None = None  # met again after a loss at this time, not answering yet

    @property
    def key(self) -> bytes | Endpoint:
        return self.node if self.node is not None else self.endpoint


@dataclass(frozen=True, slots=True)
class Lost:
    """A peer that could not be reached, or stopped answering: the row as it was, and why."""

    endpoint: Endpoint
    node: bytes | None
    name: str
    learned: dict[Source, str]
    reason: str
    at: float


# --- what the shell should do ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connect:
    """Open a link to this endpoint and say hello. Without a key, the shell learns it first
    (trust on first use) or gives up."""

    endpoint: Endpoint
    key: bytes | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    endpoint: Endpoint


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Close the link: the peer left, died, restarted elsewhere, or turned out to be us."""

    endpoint: Endpoint
    reason: str


Action = Connect | Ping | Disconnect
