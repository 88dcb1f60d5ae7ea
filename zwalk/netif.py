# Network interfaces: turning `--interface` values (IPv4 addresses or names) into addresses.
from __future__ import annotations

import ipaddress

import ifaddr

from zwalk.config import ConfigError


def ipv4_addresses() -> dict[str, list[str]]:
    """Interface name -> its IPv4 addresses (every platform ifaddr supports)."""
    out: dict[str, list[str]] = {}
    for adapter in ifaddr.get_adapters():
        v4 = [ip.ip for ip in adapter.ips if isinstance(ip.ip, str)]
        if v4:
            out[adapter.nice_name] = v4
            out.setdefault(adapter.name, v4)
    return out


def resolve(interfaces: tuple[str, ...]) -> list[str]:
    """IPv4 addresses for the given addresses or interface names, in order, without repeats."""
    table: dict[str, list[str]] | None = None
    out: list[str] = []
    for value in interfaces:
        try:
            addrs = [str(ipaddress.IPv4Address(value))]
        except ValueError:
            table = table if table is not None else ipv4_addresses()
            if value not in table:
                known = ", ".join(sorted(table)) or "none"
                raise ConfigError(
                    f"no interface named {value!r} with an IPv4 address (known: {known})"
                ) from None
            addrs = table[value]
        out.extend(a for a in addrs if a not in out)
    return out
