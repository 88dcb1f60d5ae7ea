# `zwalk doctor`: check what commonly breaks LAN discovery and say what to do about it.
#
# Each check gathers plain facts, then they are rendered as lines (ok / warning / problem, with
# advice) or as --json. Nothing here is sent beyond the interfaces zwalk itself would use.
from __future__ import annotations

import asyncio
import json
import secrets
import socket
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import click
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from zwalk.cli.app import App, client_identity, plural, run, running
from zwalk.cli.main import global_options, make_app
from zwalk.net import control
from zwalk.net.diagnosis import describe_lost
from zwalk.net.discovery import SERVICE_TYPE
from zwalk.net.netif import default_addresses, ipv4_networks, resolve
from zwalk.net.node import Node
from zwalk.store import state
from zwalk.store.config import DEFAULT_PORT, ConfigError

IFF_MULTICAST = 0x1000
SELF_TEST_WAIT = 2.0


@dataclass
class Check:
    name: str
    level: str  # ok, warning, problem
    detail: str
    advice: str = ""


@click.command(epilog="Exit status: 0 if no problem was found (warnings allowed), 1 otherwise.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@global_options
@click.pass_context
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Check interfaces, multicast, mDNS and the node port, and say what to fix."""
    app = make_app(ctx, check_interfaces=False)  # a missing interface is a finding here
    checks = run(_checks(app))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "checks": [asdict(c) for c in checks],
                    "ok": all(c.level != "problem" for c in checks),
                },
                indent=2,
            )
        )
    else:
        style = {"ok": "green", "warning": "yellow", "problem": "red"}
        width = max(len(level) for level in style)
        for c in checks:
            mark = f"[{style[c.level]}]{c.level:<{width}}[/]"  # padded before the markup
            app.out.print(f"{mark}  [bold]{c.name}[/]: {c.detail}", highlight=False)
            if c.advice:
                app.out.print(f"{'':<{width}}  → {c.advice}", highlight=False)
    ctx.exit(1 if any(c.level == "problem" for c in checks) else 0)


def _flags(ifname: str) -> int | None:
    """Interface flags where the platform shows them (Linux), else None."""
    try:
        return int(Path(f"/sys/class/net/{ifname}/flags").read_text(), 16)
    except (OSError, ValueError):
        return None


async def _checks(app: App) -> list[Check]:
    cfg = app.cfg
    out: list[Check] = []
    nets = ipv4_networks()
    chosen_by_user = bool(cfg.interfaces)
    try:
        addrs = resolve(cfg.interfaces) if chosen_by_user else default_addresses()
    except ConfigError as e:
        return [
            Check(
                "interfaces",
                "problem",
                str(e),
                "give --interface one of this host's addresses or interface names (see "
                "`ip addr` or `ipconfig`), or leave it out to use every interface",
            )
        ]
    names = {str(i.ip): name for name, i in nets}
    listing = ", ".join(f"{names.get(a, '?')} {a}" for a in addrs) or "none"
    if not addrs:
        out.append(
            Check(
                "interfaces",
                "problem",
                "no non-loopback IPv4 interface is up",
                "connect to a network; until then zwalk can only use 127.0.0.1",
            )
        )
    elif len(addrs) > 1 and not chosen_by_user:
        out.append(
            Check(
                "interfaces",
                "warning",
                f"several interfaces: {listing}",
                "zwalk announces on all of them; pick the LAN with --interface (or "
                "[node] interfaces) if some are VPNs or container bridges",
            )
        )
    else:
        out.append(Check("interfaces", "ok", f"using {listing}"))
    for addr in addrs:
        ifname = names.get(addr, "")
        flags = _flags(ifname) if ifname else None
        if flags is not None and not flags & IFF_MULTICAST and not addr.startswith("127."):
            out.append(
                Check(
                    f"multicast on {ifname}",
                    "problem",
                    "the interface has no MULTICAST flag",
                    f"enable it: ip link set {ifname} multicast on",
                )
            )
    for addr in addrs:
        out.append(await _self_test(addr, names.get(addr, addr)))
    local = state.read_state(cfg.data_dir)
    out += await _others(app, addrs, exclude=local.node if local is not None else None)
    out.append(await _local_node(app))
    return out


async def _self_test(addr: str, ifname: str) -> Check:
    """Announce a throw-away service on one address and look for it from a second socket. This
    proves the host's own mDNS path (sockets, multicast loop, local firewall on UDP 5353); the
    LAN side shows in whether other nodes answer."""
    name = f"zwalk-doctor-{secrets.token_hex(4)}.{SERVICE_TYPE}"
    label = f"mDNS on {ifname}"
    try:
        responder = AsyncZeroconf(interfaces=[addr], ip_version=IPVersion.V4Only)
    except OSError as e:
        return Check(
            label,
            "problem",
            f"cannot open UDP 5353 on {addr}: {e}",
            "another program may hold the port without sharing it; check with "
            "`ss -ulpn sport = :5353`",
        )
    seen = asyncio.Event()

    def on_change(
        zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if name == probe_name and state_change is not ServiceStateChange.Removed:
            seen.set()

    probe_name = name
    info = AsyncServiceInfo(
        SERVICE_TYPE,
        name,
        addresses=[socket.inet_aton(addr)],
        port=9,
        properties={"doctor": "1"},
        server=f"{name.split('.')[0]}.local.",
    )
    asker: AsyncZeroconf | None = None
    try:
        await responder.async_register_service(info, cooperating_responders=True)
        asker = AsyncZeroconf(interfaces=[addr], ip_version=IPVersion.V4Only, unicast=True)
        browser = AsyncServiceBrowser(asker.zeroconf, SERVICE_TYPE, handlers=[on_change])
        try:
            async with asyncio.timeout(SELF_TEST_WAIT):
                await seen.wait()
            ok = True
        except TimeoutError:
            ok = False
        await browser.async_cancel()
        await (await responder.async_unregister_service(info))
    finally:
        if asker is not None:
            await asker.async_close()
        await responder.async_close()
    if ok:
        return Check(label, "ok", f"a test announcement on {addr} was heard back")
    return Check(
        label,
        "problem",
        f"a test announcement on {addr} was not heard back within {SELF_TEST_WAIT:g} s",
        "a firewall may drop UDP port 5353 (mDNS) or "
        "multicast to 224.0.0.251: allow them on this interface",
    )


async def _others(app: App, addrs: list[str], exclude: bytes | None) -> list[Check]:
    """Which zwalk nodes announce themselves on the LAN (and the configured or --peer ones),
    and whether each answers a hello: browse and greet as `zwalk peers` does, from a node of
    our own that does not listen."""
    if not addrs:
        return [Check("zwalk nodes", "warning", "no interface to look on")]
    cfg = replace(app.cfg, interfaces=tuple(addrs))
    node = Node(cfg, client_identity(cfg), listen=False, discover=True)
    async with running(node):
        await node.peers.settle(max(1.5, cfg.discovery_wait))
        await node.peers.hear_back()
        alive = [m for m in node.peers.membership.alive() if m.node != exclude]
        lost = [x for x in node.peers.membership.lost.values() if x.node != exclude]
    out = []
    if alive:
        names = ", ".join(f"{m.name} at {m.endpoint}" for m in alive[:8])
        more = f" and {len(alive) - 8} more" if len(alive) > 8 else ""
        answered = f"{plural(len(alive), 'other node')} answered: {names}{more}"
        out.append(Check("zwalk nodes", "ok", answered))
    elif not lost:
        out.append(
            Check(
                "zwalk nodes",
                "warning",
                "no zwalk node answered on mDNS",
                "start `zwalk serve` on another machine, or name peers with --peer HOST:PORT",
            )
        )
    if lost:
        port = cfg.port or DEFAULT_PORT
        out.append(
            Check(
                "reachability",
                "problem",
                f"{plural(len(lost), 'node')} seen but not reachable: "
                + "; ".join(describe_lost(x) for x in lost),
                f"on those hosts, allow incoming TCP on the zwalk port (default {port}) in the "
                "firewall, and check that they serve on an address of this LAN (--interface)",
            )
        )
    return out


async def _local_node(app: App) -> Check:
    cfg = app.cfg
    local = state.read_state(cfg.data_dir)
    if local is not None:
        st = await control.status(local)
        if st is None:
            return Check(
                "local node",
                "problem",
                f"node.json names pid {local.pid} but its control endpoint does not answer",
                f"stop that process, or remove {cfg.data_dir / state.STATE_FILE} if it is gone",
            )
        alive = sum(1 for m in st.members if m.state == "alive")
        eps = ", ".join(f"{e.host}:{e.port}" for e in st.endpoints) or "all interfaces"
        return Check(
            "local node",
            "ok",
            f"{st.name} running (pid {local.pid}) on {eps}, "
            f"{alive} live peers, {st.files} files shared",
        )
    port = cfg.port
    if port == 0:
        return Check("node port", "ok", "no node running here; port 0 picks a free port")
    addrs = resolve(cfg.interfaces) if cfg.interfaces else ["0.0.0.0"]  # noqa: S104
    for addr in addrs:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            if sys.platform != "win32":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((addr, port))
            except OSError as e:
                return Check(
                    "node port",
                    "problem",
                    f"TCP {port} on {addr} is taken: {e.strerror}",
                    "another program uses it: serve with --port 0 or another --port",
                )
    return Check(
        "node port", "ok", f"TCP {port} is free; peers must be allowed to connect to it (firewall)"
    )
