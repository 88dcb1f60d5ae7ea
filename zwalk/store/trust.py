# Whom a node trusts, on disk in its data dir:
#   trusted.keys  the allowlist: one public key per line (64 hex digits), then an optional label.
#                 In allowlist mode only these keys (and our own) may connect or be met.
#   known_peers   trust on first use for static peers given without a key (like SSH's
#                 known_hosts): "HOST:PORT KEY" per line, the key learned the first time.
# Both are plain text a person can read and edit; '#' starts a comment.
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from zwalk.core import keys
from zwalk.core.addresses import Endpoint

ALLOWLIST_FILE = "trusted.keys"
PINS_FILE = "known_peers"


class TrustError(ValueError):
    """A trust file that cannot be read as one."""


@dataclass(frozen=True, slots=True)
class Trusted:
    key: bytes
    label: str

    @property
    def node(self) -> bytes:
        return keys.node_id_for(self.key)


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as e:
        raise TrustError(f"cannot read {path}: {e}") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if words:
            out.append((n, words))
    return out


# One read-modify-write of a list at a time in this process: two keys pinned at once (two
# peers met together) must both be kept, and must not share a temporary file.
_EDIT = threading.Lock()


def _write(path: Path, lines: list[str]) -> None:
    """Replace the file whole (a reader never sees half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, path)


# --- the allowlist ----------------------------------------------------------------------------
def read_allowlist(path: Path) -> list[Trusted]:
    out = []
    for n, words in _lines(path):
        try:
            key = keys.from_text(words[0])
        except keys.BadKey as e:
            raise TrustError(f"{path}, line {n}: {e}") from None
        out.append(Trusted(key, " ".join(words[1:])))
    return out


def add_trusted(path: Path, key: bytes, label: str) -> bool:
    """Add a key (or relabel it); False when it was listed with that label already."""
    listed = read_allowlist(path)
    if Trusted(key, label) in listed:
        return False
    kept = [t for t in listed if t.key != key] + [Trusted(key, label)]
    _write(path, [f"{keys.to_text(t.key)} {t.label}".rstrip() for t in kept])
    return True


def matching(path: Path, which: str) -> list[Trusted]:
    """The listed keys a text names: its label, or a prefix (4 digits or more) of the key or
    of the node id."""
    which = which.strip().lower()

    def named(t: Trusted) -> bool:
        if t.label.lower() == which:
            return True
        return len(which) >= 4 and (
            keys.to_text(t.key).startswith(which) or t.node.hex().startswith(which)
        )

    return [t for t in read_allowlist(path) if named(t)]


def remove_trusted(path: Path, which: str) -> list[Trusted]:
    """Remove the one key a text names (see `matching`). Returns what it names: removed if
    that is exactly one, left alone if several (ambiguous)."""
    hits = matching(path, which)
    if len(hits) == 1:
        kept = [t for t in read_allowlist(path) if t.key != hits[0].key]
        _write(path, [f"{keys.to_text(t.key)} {t.label}".rstrip() for t in kept])
    return hits


# --- pins (trust on first use) ----------------------------------------------------------------
def read_pins(path: Path) -> dict[Endpoint, bytes]:
    out: dict[Endpoint, bytes] = {}
    for n, words in _lines(path):
        host, _, port = words[0].rpartition(":")
        try:
            if len(words) != 2 or not host or not port.isdigit():
                raise keys.BadKey("want HOST:PORT KEY")
            out[Endpoint(host, int(port))] = keys.from_text(words[1])
        except keys.BadKey as e:
            raise TrustError(f"{path}, line {n}: {e}") from None
    return out


def pin(path: Path, ep: Endpoint, key: bytes) -> None:
    with _EDIT:
        pins = read_pins(path)
        pins[ep] = key
        _write(path, [f"{e} {keys.to_text(k)}" for e, k in pins.items()])


def forget_pin(path: Path, ep: Endpoint) -> bool:
    with _EDIT:
        pins = read_pins(path)
        if pins.pop(ep, None) is None:
            return False
        _write(path, [f"{e} {keys.to_text(k)}" for e, k in pins.items()])
        return True
