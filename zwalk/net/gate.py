# Who may talk to this node. Every peer connection is CurveZMQ; the ZAP handler (pyzmq's asyncio
# authenticator, with our callback) sees each client's public key before the connection carries
# a single message, and the key it approves becomes the User-Id on every message from that
# connection: the router takes a sender's node id from it, never from anything the sender says.
#
# Trust modes: "open" admits any key (ids are still proven), "allowlist" only the keys in the
# data dir's trusted.keys (and our own), re-read when the file changes, so `zwalk trust add`
# takes effect for the next handshake without a restart.
from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.utils import z85

from zwalk.core.keys import node_id_for
from zwalk.store import trust

log = logging.getLogger(__name__)

OPEN, ALLOWLIST = "open", "allowlist"
MODES = (OPEN, ALLOWLIST)
MAX_SENDERS = 4096  # User-Id -> node id translations kept


class Gate:
    def __init__(self, mode: str, allowlist: Path, own_key: bytes) -> None:
        if mode not in MODES:
            raise ValueError(f"trust mode is one of {', '.join(MODES)}, not {mode!r}")
        self.mode = mode
        self.allowlist = allowlist
        self.own_key = own_key
        self._listed: frozenset[bytes] = frozenset()
        self._stamp: tuple[int, int] | None = None
        self._ids: OrderedDict[bytes, bytes] = OrderedDict()
        self._refused: OrderedDict[bytes, bool] = OrderedDict()  # keys already logged
        self._auth: AsyncioAuthenticator | None = None
        if mode == ALLOWLIST:
            self._reload()

    # --- the rule -------------------------------------------------------------------------
    def admits(self, key: bytes) -> bool:
        """Whether a node with this public key may talk to us, and we to it."""
        if self.mode == OPEN or key == self.own_key:
            return True
        self._reload()
        return key in self._listed

    def why_not(self, key: bytes) -> str:
        return (
            f"key {key.hex()[:16]}… is not in the allowlist {self.allowlist} (zwalk trust add KEY)"
        )

    def _reload(self) -> None:
        try:
            st = self.allowlist.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = (0, 0)
        if stamp == self._stamp:
            return
        try:
            self._listed = frozenset(t.key for t in trust.read_allowlist(self.allowlist))
        except trust.TrustError as e:  # keep the last good list rather than open up
            log.error("%s; keeping the allowlist read before", e)
        self._stamp = stamp

    # --- ZAP ------------------------------------------------------------------------------
    def start(self, ctx: zmq.asyncio.Context) -> None:
        """Answer ZAP for every CurveZMQ server socket of this context."""
        auth = AsyncioAuthenticator(ctx, log=logging.getLogger("zwalk.net.zap"))
        auth.start()
        auth.configure_curve_callback(domain="*", credentials_provider=self)
        self._auth = auth

    def stop(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def callback(self, domain: str, z85_key: bytes) -> bool:
        """pyzmq's credentials provider hook: one call per handshake."""
        key = z85.decode(z85_key)
        ok = self.admits(key)
        if not ok and self._refused.get(key) is None:
            # once per key (a refused client's ZeroMQ retries its handshake all the time)
            log.warning(
                "refused a connection from node %s: its key is not in the allowlist",
                node_id_for(key).hex()[:12],
            )
            self._refused[key] = True
            if len(self._refused) > MAX_SENDERS:
                self._refused.popitem(last=False)
        return ok

    def sender(self, user_id: str | None) -> bytes | None:
        """The node id a message's User-Id (the Z85 key ZAP approved) stands for."""
        if not user_id:
            return None
        raw = user_id.encode()
        node = self._ids.get(raw)
        if node is None:
            node = node_id_for(z85.decode(raw))
            self._ids[raw] = node
            if len(self._ids) > MAX_SENDERS:
                self._ids.popitem(last=False)
        return node

    @staticmethod
    def key_of(user_id: str) -> bytes:
        return bytes(z85.decode(user_id.encode()))


def serve_curve(sock: zmq.Socket, secret: bytes) -> None:  # type: ignore[type-arg]
    """Make a listening socket a CurveZMQ server with our long-term key."""
    sock.curve_server = True
    sock.curve_secretkey = secret
