# Network interfaces: turning `--interface` values (IPv4 addresses or names) into addresses.
from __future__ import annotations

import ipaddress

import ifaddr

from zwalk.store.config import ConfigError


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
    """IPv4 addresses for the given addresses or interface names, in order, without repeats.
    An address must be one of this host's (any 127.x address counts: loopback is local)."""
    table = ipv4_addresses()
    ours = {a for addrs in table.values() for a in addrs}
    out: list[str] = []
    for value in interfaces:
        try:
            addr = ipaddress.IPv4Address(value)
        except ValueError:
            if value not in table:
                known = ", ".join(sorted(table)) or "none"
                raise ConfigError(
                    f"no interface named {value!r} with an IPv4 address (known: {known})"
                ) from None
            addrs = table[value]
        else:
            if str(addr) not in ours and not addr.is_loopback:
                listing = "; ".join(f"{n} {', '.join(a)}" for n, a in sorted(table.items()))
                raise ConfigError(
                    f"{value} is not an address of this host (its IPv4 addresses: "
                    f"{listing or 'none'})"
                )
            addrs = [str(addr)]
        out.extend(a for a in addrs if a not in out)
    return out


def ipv4_networks() -> list[tuple[str, ipaddress.IPv4Interface]]:
    """(interface name, address/prefix) for every IPv4 address of this host."""
    out = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                out.append(
                    (adapter.nice_name, ipaddress.IPv4Interface(f"{ip.ip}/{ip.network_prefix}"))
                )
    return out


def default_addresses() -> list[str]:
    """Where discovery runs when no interface is chosen: every non-loopback IPv4 address."""
    return [str(i.ip) for _, i in ipv4_networks() if not i.ip.is_loopback]


def interface_for(peer: str, ours: list[str]) -> str:
    """Which of our addresses (and its interface) shares a subnet with `peer`, for display."""
    try:
        addr = ipaddress.IPv4Address(peer)
    except ValueError:
        return ""
    for name, iface in ipv4_networks():
        if str(iface.ip) in ours and addr in iface.network:
            return f"{name} ({iface.ip})"
    return ""
