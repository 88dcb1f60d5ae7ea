# Node keys: a node's id is the BLAKE3 hash of its CurveZMQ public key, so an id cannot be
# claimed without the key, and CurveZMQ proves the key on every connection. Keys travel raw
# (32 bytes) on the wire, as Z85 in mDNS and ZeroMQ options, and as hex where a person copies
# them (Z85 uses characters a shell treats specially, such as $ & < > and @).
from __future__ import annotations

import blake3

from zwalk.core.limits import ID_BYTES, KEY_BYTES


class BadKey(ValueError):
    """Text or bytes that are not a public key."""


def node_id_for(key: bytes) -> bytes:
    """The node id a raw public key stands for."""
    if len(key) != KEY_BYTES:
        raise BadKey(f"a public key has {KEY_BYTES} bytes, not {len(key)}")
    return blake3.blake3(key).digest()[:ID_BYTES]


def matches(node: bytes | None, key: bytes | None) -> bool:
    """Whether `node` is the id of `key`."""
    return key is not None and len(key) == KEY_BYTES and node_id_for(key) == node


def to_text(key: bytes) -> str:
    """The form a person copies: 64 hex digits."""
    return key.hex()


def from_text(text: str) -> bytes:
    """A public key as `zwalk id` prints it: 64 hex digits."""
    text = text.strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise BadKey(f"not a public key (64 hex digits, as `zwalk id` prints it): {text!r}")
    return key
