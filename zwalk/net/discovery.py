# mDNS / DNS-SD discovery with python-zeroconf: announce this node, browse for others.
#
# Service type _zwalk._tcp.local.; the instance name derives from the node id, which is unique
# (it is a hash of the node's public key), so the RFC 6762 section 8.1 probe for a unique name is
# skipped and the node is announced at once. TXT keys: id (node id, hex), v (protocol version),
# name (display name), pk (Curve public key, Z85). Only the given IPv4 addresses are used: the
# caller always chooses the interfaces, zeroconf never picks them itself.
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf
from zmq.utils import z85

from zwalk.core import protocol as p
from zwalk.core.addresses import Endpoint
from zwalk.net.netif import interface_for, ipv4_networks

log = logging.getLogger(__name__)

SERVICE_TYPE = "_zwalk._tcp.local."
RESOLVE_TIMEOUT_MS = 1500
MAX_TXT_VALUE = 200  # bytes; a TXT string holds at most 255 with its key
IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)  # Linux only


def instance_name(node: bytes) -> str:
    return f"zwalk-{node.hex()}.{SERVICE_TYPE}"


# node, endpoint, interface detail, version, public key (raw; empty if the record had none)
Found = Callable[[bytes, Endpoint, str, int, bytes], None]
Gone = Callable[[bytes], None]


class Discovery:
    def __init__(
        self,
        *,
        addresses: list[str],
        spawn: Callable[[Coroutine[Any, Any, None]], object],
        on_found: Found,
        on_gone: Gone,
        browse_only: bool = False,
    ) -> None:
        if not addresses:
            raise ValueError("discovery needs at least one interface address")
        self.addresses = addresses
        self._spawn = spawn
        self._on_found = on_found
        self._on_gone = on_gone
        self.browse_only = browse_only
        self._azc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None
        self._nodes: dict[str, bytes] = {}  # instance name -> node id, to report removals
        self._networks = [
            iface.network for _, iface in ipv4_networks() if str(iface.ip) in addresses
        ] or [ipaddress.IPv4Network(f"{a}/32") for a in addresses]

    def allowed(self, addr: str) -> bool:
        """Whether a peer address lies on one of the subnets we were given (or is one of our
        own addresses): traffic from anywhere else is none of our business."""
        try:
            ip = ipaddress.IPv4Address(addr)
        except ValueError:
            return False
        return any(ip in net for net in self._networks)

    async def start(self) -> None:
        """Open mDNS on the chosen addresses and start browsing.

        A browse-only client (`zwalk peers`, `find` without a local node) asks from its own
        port, so answers come back by unicast to that port alone (RFC 6762 section 6.7). Sharing
        port 5353 instead, a unicast answer could be handed to another mDNS socket on the same
        host (a running node, avahi), and multicast answers are limited to one a second."""
        self._azc = AsyncZeroconf(
            interfaces=self.addresses, ip_version=IPVersion.V4Only, unicast=self.browse_only
        )
        await self._azc.zeroconf.async_wait_for_start()
        restrict_to(self._azc.zeroconf, self.allowed)
        self._browser = AsyncServiceBrowser(
            self._azc.zeroconf, SERVICE_TYPE, handlers=[self._on_change]
        )

    async def announce(self, *, node: bytes, name: str, port: int, public_key: bytes) -> None:
        if self._azc is None or self.browse_only:
            raise RuntimeError("discovery is not started for announcing")
        props = {
            "id": node.hex(),
            "v": str(p.PROTOCOL_VERSION),
            "name": name.encode()[:MAX_TXT_VALUE].decode(errors="ignore"),
            "pk": public_key.decode(),
        }
        self._info = AsyncServiceInfo(
            SERVICE_TYPE,
            instance_name(node),
            addresses=[socket.inet_aton(a) for a in self.addresses],
            port=port,
            properties=props,
            server=f"zwalk-{node.hex()[:16]}.local.",
        )
        # No probing (see above): announced with the first packet, not after ~1.3 s.
        await self._azc.async_register_service(self._info, cooperating_responders=True)

    async def close(self) -> None:
        """Say goodbye (TTL 0 records) and stop."""
        azc, self._azc = self._azc, None
        if azc is None:
            return
        try:
            if self._browser is not None:
                await self._browser.async_cancel()
            if self._info is not None:
                # Wait for the goodbyes to be sent: closing first would drop them.
                await (await azc.async_unregister_service(self._info))
        finally:
            await azc.async_close()

    # --- browsing -------------------------------------------------------------------------
    def _on_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        log.debug("mDNS: %s %s", state_change.name, name)
        if state_change is ServiceStateChange.Removed:
            node = self._nodes.pop(name, None)
            if node is not None:
                self._on_gone(node)
        else:
            self._spawn(self._resolve(name))

    async def _resolve(self, name: str) -> None:
        # Anything on the LAN can announce anything: a bad record is logged and dropped here.
        try:
            await self._resolve_checked(name)
        except Exception as e:
            log.info("ignoring mDNS service %r: %s", name[:100], e)

    async def _resolve_checked(self, name: str) -> None:
        azc = self._azc
        if azc is None:
            return
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if not await info.async_request(azc.zeroconf, RESOLVE_TIMEOUT_MS) or not info.port:
            log.debug("no SRV/TXT answer for %s", name)
            return
        props = info.decoded_properties
        try:
            node = bytes.fromhex(props.get("id") or "")
            version = int(props.get("v") or "0")
        except ValueError:
            node, version = b"", 0
        try:
            key = bytes(z85.decode((props.get("pk") or "").encode()))
        except (ValueError, UnicodeEncodeError):
            key = b""
        if len(node) != p.ID_BYTES:
            log.info("ignoring %s: no valid node id in its TXT record", name)
            return
        addrs = [a for a in info.parsed_addresses(IPVersion.V4Only) if self.allowed(a)]
        if not addrs:
            log.info("ignoring %s: no address on our interfaces", name)
            return
        addr = addrs[0]
        detail = interface_for(addr, self.addresses)
        self._nodes[name] = node
        log.debug("mDNS: %s at %s:%d (%s)", node.hex()[:12], addr, info.port, detail or "?")
        self._on_found(node, Endpoint(addr, info.port), detail or addr, version, key)


def restrict_to(zc: Zeroconf, allowed: Callable[[str], bool]) -> None:
    """Keep a zeroconf instance to the interfaces it was given.

    zeroconf listens on 0.0.0.0:5353. On Linux such a socket also gets multicast that other
    programs joined on other interfaces (IP_MULTICAST_ALL), and unicast from anywhere; answering
    those would send on interfaces we were never given. So: no foreign multicast, and datagrams
    from outside our subnets are dropped before zeroconf sees them."""
    engine = zc.engine
    sock = getattr(engine, "_listen_socket", None)
    if sock is not None and sys.platform == "linux":
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
    for reader in engine.readers:
        transport = reader.transport
        transport.set_protocol(_Filtered(transport.get_protocol(), allowed))


class _Filtered(asyncio.DatagramProtocol):
    """Passes on only datagrams from allowed sources (zeroconf's listener is not patchable)."""

    def __init__(self, inner: Any, allowed: Callable[[str], bool]) -> None:
        self.inner = inner
        self.allowed = allowed

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if self.allowed(addr[0]):
            self.inner.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.inner.error_received(exc)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)
