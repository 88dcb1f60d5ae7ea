# Why a peer is missing, in words a user can act on: a plain TCP probe of a peer that did not
# answer hello, and the lost-peer records of the membership table as lines and as rows.
from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

from zwalk.core import protocol as p
from zwalk.core.addresses import Endpoint
from zwalk.core.membership import Lost, Member, Membership, Source
from zwalk.store.config import Config

DIAGNOSE_TIMEOUT = 1.0  # seconds a test connection to a peer that did not answer may take


def hello_wait(cfg: Config) -> float:
    """How long until a peer has answered hello or failed with its reason: the hello's own
    timeout, the diagnosis, and a margin for both to be recorded."""
    return cfg.reply_timeout + DIAGNOSE_TIMEOUT + 0.5


async def diagnose(ep: Endpoint, timeout: float = DIAGNOSE_TIMEOUT) -> str | None:
    """Why a peer may not have answered: what a plain TCP connection to it says. None when it
    accepts connections (then the peer itself did not answer). Sends nothing."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(ep.host, ep.port)
    except ConnectionRefusedError:
        return f"connection refused: nothing listens on {ep.host} port {ep.port}"
    except TimeoutError:
        return f"no answer from {ep.host} (it is down, or a firewall drops TCP port {ep.port})"
    except socket.gaierror:
        return f"cannot resolve the host name {ep.host!r}"
    except OSError as e:
        return f"cannot connect to {ep}: {e.strerror or e}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


async def listens(ep: Endpoint, timeout: float = DIAGNOSE_TIMEOUT) -> bool | None:
    """Whether anything accepts TCP connections at `ep`: False if refused (nothing listens on
    that port), None if we cannot tell (no answer, no route). Sends nothing."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(ep.host, ep.port)
    except ConnectionRefusedError:
        return False
    except (TimeoutError, OSError):
        return None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def describe_lost(lost: Lost) -> str:
    """'h1 (0fdcb51f506b) at 10.0.0.5:47474, seen on mDNS: connection refused: ...'."""
    who = f"{lost.name} ({lost.node.hex()[:12]}) at " if lost.node else ""
    how = {
        Source.MDNS: "seen on mDNS",
        Source.STATIC: "a configured peer",
        Source.GOSSIP: "named by another peer",
        Source.INBOUND: "it had said hello to us",
        Source.NAMED: "named with --peer",
    }
    learned = ", ".join(how[s] for s in lost.learned if s in how)
    return f"{who}{lost.endpoint}{', ' + learned if learned else ''}: {lost.reason}"


def problems(membership: Membership, now: float, within: float = 60.0) -> list[str]:
    """Peers lost or unreachable in the last `within` seconds, as lines for a user."""
    return [
        describe_lost(lost)
        for lost in reversed(membership.lost.values())
        if now - lost.at <= within
    ]


def failures(membership: Membership, now: float) -> list[p.Failure]:
    """Peers lost or unreachable, latest first (as the control endpoint reports them)."""
    out = []
    for lost in reversed(membership.lost.values()):
        out.append(
            p.Failure(
                host=_host(lost.endpoint.host),
                port=lost.endpoint.port,
                node=lost.node,
                name=lost.name,
                learned=_learned(lost.learned),
                reason=lost.reason[: p.MAX_REASON_CHARS],
                ago_ms=max(0, int((now - lost.at) * 1000)),
            )
        )
    return out[: p.MAX_FAILURES]


def member_info(m: Member, ms: Callable[[float], int]) -> p.MemberInfo:
    """One row of the table for the control endpoint; `ms` turns our clock into Unix ms."""
    return p.MemberInfo(
        node=m.node,
        name=m.name,
        host=_host(m.endpoint.host),
        port=m.endpoint.port,
        version=m.version,
        state=str(m.state),
        learned=_learned(m.learned),
        first_seen_ms=ms(m.first_seen),
        last_seen_ms=ms(m.last_seen or m.first_seen),
        rtt_us=None if m.rtt is None else min(p.MAX_COUNT, int(m.rtt * 1e6)),
        files=m.files,
        key=m.pubkey or b"",
    )


def _host(host: str) -> str:
    return host.encode()[: p.MAX_HOST_BYTES].decode(errors="ignore") or "?"


def _learned(learned: dict[Source, str]) -> tuple[p.Learned, ...]:
    return tuple(p.Learned(how=str(k), detail=v) for k, v in learned.items())[:4]
