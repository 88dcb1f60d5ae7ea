# How a search runs, with every default in this one place (config, the CLI, the control
# endpoint and the walk shell all start from SEARCH_DEFAULTS).
from __future__ import annotations

from dataclasses import dataclass

from zwalk.core.fields import Strategy

KWALK_TTL = 64  # hops one walker may make
FLOOD_TTL = 2  # a flood's hop limit: on a LAN two hops reach nearly everyone, at n*d messages


@dataclass(frozen=True, slots=True)
class SearchOptions:
    strategy: Strategy = Strategy.KWALK
    timeout: float = 10.0
    want: int = 1
    walkers: int = 16
    initial: int = 1  # kwalk starts with this many walkers and doubles while nothing is found
    ttl: int = KWALK_TTL
    check_every: int = 8
    widen_hops: int = 32
    linger: float | None = None  # wanting every hit: end this long after the first anyway


def default_ttl(strategy: Strategy) -> int:
    return FLOOD_TTL if strategy is Strategy.FLOOD else KWALK_TTL


SEARCH_DEFAULTS = SearchOptions()
