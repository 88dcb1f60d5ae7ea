# The node's listening sockets: its ROUTER on the chosen interfaces and port, and the local
# control endpoint (an owner-only ipc socket in the data dir, else loopback TCP); bind failures
# in words a user can act on.
from __future__ import annotations

import errno
import logging
from pathlib import Path

import zmq
import zmq.asyncio

from zwalk.core import protocol as p
from zwalk.core.addresses import Endpoint
from zwalk.net import control
from zwalk.net.gate import serve_curve
from zwalk.net.links import configure
from zwalk.net.local import LOOPBACK
from zwalk.net.netif import resolve
from zwalk.store.config import Config

log = logging.getLogger(__name__)


def bind_router(
    ctx: zmq.asyncio.Context, cfg: Config, secret: bytes
) -> tuple[zmq.asyncio.Socket, list[Endpoint]]:
    """The ROUTER every peer's messages come in on, bound on each chosen interface (or all):
    a CurveZMQ server with the node's secret key."""
    router = ctx.socket(zmq.ROUTER)
    configure(router)
    serve_curve(router, secret)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    # Peers send it requests and reports, never chunk data: a frame over MAX_HEADER drops the
    # connection in libzmq, and each connection queues at most ROUTER_QUEUE messages (then
    # TCP pushes back), so one peer holds at most ROUTER_QUEUE x MAX_HEADER of our memory.
    router.setsockopt(zmq.MAXMSGSIZE, p.MAX_HEADER)
    router.setsockopt(zmq.RCVHWM, p.ROUTER_QUEUE)
    addrs = resolve(cfg.interfaces) if cfg.interfaces else ["0.0.0.0"]  # noqa: S104
    port = cfg.port
    endpoints = []
    try:
        for addr in addrs:
            try:
                if port == 0:
                    port = router.bind_to_random_port(f"tcp://{addr}")
                else:
                    router.bind(f"tcp://{addr}:{port}")
            except zmq.ZMQError as e:
                raise OSError(e.errno, _bind_failure(addr, port, e)) from None
            endpoints.append(Endpoint(addr, port))
    except BaseException:
        router.close(linger=0)
        raise
    return router, endpoints


def bind_control(ctx: zmq.asyncio.Context, state_dir: Path) -> tuple[zmq.asyncio.Socket, str]:
    """The control endpoint local commands reach this node on, and its address."""
    sock = ctx.socket(zmq.ROUTER)
    configure(sock)
    sock.setsockopt(zmq.MAXMSGSIZE, p.MAX_CONTROL_HEADER)
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        ipc = control.control_endpoint(state_dir)
        if ipc is not None:
            try:
                sock.bind(ipc)
                return sock, ipc
            except zmq.ZMQError as e:  # a file system without sockets: loopback TCP will do
                log.info("control endpoint %s: %s; using loopback TCP", ipc, e)
        port = sock.bind_to_random_port(f"tcp://{LOOPBACK}")
    except BaseException:
        sock.close(linger=0)
        raise
    return sock, f"tcp://{LOOPBACK}:{port}"


def _bind_failure(addr: str, port: int, e: zmq.ZMQError) -> str:
    where = f"cannot listen on {addr}:{port}"
    if e.errno == zmq.EADDRINUSE:
        return f"{where}: the port is taken (another zwalk serve? --port 0 picks a free one)"
    if e.errno == errno.EACCES:
        return f"{where}: permission denied (ports below 1024 need privileges; use --port 0)"
    if e.errno == errno.EADDRNOTAVAIL:
        return f"{where}: {addr} is not an address of this host"
    return f"{where}: {e.strerror}"
