# A node's long-term identity: a CurveZMQ key pair kept in the data dir, and the node id derived
# from its public key (core/keys.py), which CurveZMQ proves on every connection.
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import zmq
from zmq.utils import z85

from zwalk.core.keys import node_id_for

SECRET_FILE = "node.key"  # noqa: S105 -- a file name, not a secret
PUBLIC_FILE = "node.pub"


@dataclass(frozen=True, slots=True)
class Identity:
    public: bytes  # Z85 text, as zmq.curve_keypair returns it
    secret: bytes

    @property
    def key(self) -> bytes:
        """The raw public key (32 bytes)."""
        return z85.decode(self.public)

    @property
    def node_id(self) -> bytes:
        return node_id_for(self.key)

    @property
    def short(self) -> str:
        return self.node_id.hex()[:12]


def ephemeral() -> Identity:
    """A throw-away identity, for a temporary node that lives only as long as one command."""
    public, secret = zmq.curve_keypair()
    return Identity(public, secret)


def load_or_create(data_dir: Path) -> Identity:
    data_dir.mkdir(parents=True, exist_ok=True)
    sec, pub = data_dir / SECRET_FILE, data_dir / PUBLIC_FILE
    if sec.exists() and pub.exists():
        public, secret = pub.read_bytes().strip(), sec.read_bytes().strip()
        if len(public) == 40 and len(secret) == 40:
            return Identity(public, secret)
        raise ValueError(f"damaged identity in {data_dir}: move {SECRET_FILE} away to start anew")
    public, secret = zmq.curve_keypair()
    # The secret is written owner-only from the first byte (no window where it is readable).
    fd = os.open(sec, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secret + b"\n")
    pub.write_bytes(public + b"\n")
    return Identity(public, secret)
