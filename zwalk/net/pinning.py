# Trust on first use for a peer named only as HOST:PORT (like SSH's known_hosts): the key
# pinned for it, checked against what it says now; or, the first time, what it says. The
# caller pins a first-use key only once a hello over CurveZMQ has proved it.
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from zwalk.core.addresses import Endpoint
from zwalk.net.keyservice import ask_key
from zwalk.store import trust

log = logging.getLogger(__name__)


class Unknown(Exception):
    """No key to connect with, or one that contradicts the pin: the message says why."""

    def __init__(self, message: str, *, pinned: bool) -> None:
        super().__init__(message)
        self.pinned = pinned


async def key_for(ep: Endpoint, pins: Path, timeout: float) -> tuple[bytes, bool]:
    """The key to expect at `ep`, and whether this is its first use (not pinned yet)."""
    try:
        pinned = (await asyncio.to_thread(trust.read_pins, pins)).get(ep)
    except trust.TrustError as e:
        raise Unknown(str(e), pinned=False) from None
    try:
        said: bytes | None = await ask_key(ep, timeout)
        why = ""
    except (OSError, TimeoutError) as e:
        said, why = None, str(e) or "no answer"
    if pinned is None:
        if said is None:
            raise Unknown(
                f"cannot learn its key ({why}): name it as KEY@{ep}, with the key "
                "`zwalk id` prints on that host",
                pinned=False,
            )
        return said, True
    if said is not None and said != pinned:
        why = (
            f"it now says its key is {said.hex()[:16]}…, not the one pinned for it on first "
            f"use ({pinned.hex()[:16]}…, in {pins}): if that host was reinstalled or changed "
            f"its key, accept the new one with `zwalk trust forget {ep}`"
        )
        log.warning("refusing %s: %s", ep, why)
        raise Unknown(why, pinned=True)
    return pinned, False  # the pin (CurveZMQ proves it, even when the question went unanswered)
