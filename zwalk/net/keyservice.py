# Trust on first use for a peer named only as HOST:PORT: a CurveZMQ client must know the
# server's key before it connects, so a node also answers one question over UDP on its port
# number: "what is your public key?". The answer is not authenticated (that is what first use
# means): the caller pins it (store/trust.py), and CurveZMQ then proves the key on every
# connection. The answer is smaller than the question, so the service amplifies nothing, and
# each host gets a few answers a second.
from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import cast

from zwalk.core.addresses import Endpoint
from zwalk.core.limits import KEY_BYTES

log = logging.getLogger(__name__)

ASK = b"zwalk-key?"
ASK_SIZE = 64  # the question is padded to this: the 42-byte answer is smaller
ANSWER = b"zwalk-key="
ANSWERS_PER_SECOND = 8  # per asking host
MAX_HOSTS = 1024


class KeyService(asyncio.DatagramProtocol):
    def __init__(self, key: bytes) -> None:
        self.answer = ANSWER + key
        self.transport: asyncio.DatagramTransport | None = None
        self._recent: OrderedDict[str, tuple[int, int]] = OrderedDict()  # host -> (second, n)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if len(data) < ASK_SIZE or not data.startswith(ASK) or self.transport is None:
            return
        host = str(addr[0])
        second = int(time.monotonic())
        was, n = self._recent.pop(host, (second, 0))
        n = n + 1 if was == second else 1
        self._recent[host] = (second, n)
        if len(self._recent) > MAX_HOSTS:
            self._recent.popitem(last=False)
        if n <= ANSWERS_PER_SECOND:
            self.transport.sendto(self.answer, addr)


async def serve_keys(endpoints: list[Endpoint], key: bytes) -> list[asyncio.DatagramTransport]:
    """Answer key questions on each endpoint's address and port (UDP). A port taken by
    something else only costs trust on first use there: logged, not fatal."""
    loop = asyncio.get_running_loop()
    out = []
    for ep in endpoints:
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: KeyService(key), local_addr=(ep.host, ep.port)
            )
        except OSError as e:
            log.warning(
                "cannot answer key questions on UDP %s (%s): peers must name this node "
                "with its key (zwalk id)",
                ep,
                e.strerror or e,
            )
            continue
        out.append(transport)
    return out


class _Asker(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if data.startswith(ANSWER) and len(data) == len(ANSWER) + KEY_BYTES:
            if not self.got.done():
                self.got.set_result(data[len(ANSWER) :])

    def error_received(self, exc: Exception) -> None:
        if not self.got.done():
            self.got.set_exception(exc)


async def ask_key(ep: Endpoint, timeout: float, tries: int = 3) -> bytes:
    """The public key the node at `ep` says it has. Raises TimeoutError or OSError."""
    loop = asyncio.get_running_loop()
    transport, asker = await loop.create_datagram_endpoint(_Asker, remote_addr=(ep.host, ep.port))
    try:
        question = ASK.ljust(ASK_SIZE, b"\0")
        for _ in range(tries):
            transport.sendto(question)
            try:
                return await asyncio.wait_for(asyncio.shield(asker.got), timeout / tries)
            except TimeoutError:
                continue
        raise TimeoutError(f"no answer to a key question on UDP {ep}")
    finally:
        transport.close()
