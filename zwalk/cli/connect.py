# `zwalk connect PEER...`: add peers to the running node without a restart. The node says hello
# to each, and keeps each that answered as a static peer (tried again if it goes) until it
# stops; [peers] static in the config file keeps one for good.
from __future__ import annotations

import click

from zwalk.cli.app import run
from zwalk.cli.main import EXIT_NOT_FOUND, EXIT_OK, global_options, make_app
from zwalk.cli.render import peer_label
from zwalk.core import protocol as p
from zwalk.net import control
from zwalk.net.diagnosis import hello_wait
from zwalk.store import state as node_state
from zwalk.store.config import ConfigError, parse_peer


@click.command(
    epilog="Exit status: 0 every peer answered, 1 one did not (it is not kept) or no node runs "
    "here, 2 usage or configuration error."
)
@click.argument("targets", metavar="PEER...", nargs=-1, required=True)
@global_options
@click.pass_context
def connect(ctx: click.Context, targets: tuple[str, ...]) -> None:
    """Have the running node meet PEER ([KEY@]HOST[:PORT], as `zwalk id` prints it) and, if it
    answers, keep it as a peer until the node stops (tried again if it goes)."""
    app = make_app(ctx)
    try:
        given = [parse_peer(t) for t in targets]
    except ConfigError as e:
        raise click.BadParameter(str(e), param_hint="PEER") from None
    local = node_state.read_state(app.cfg.data_dir)
    if local is None:
        app.error(
            f"no zwalk node runs here (data dir {app.cfg.data_dir}): start `zwalk serve`, or "
            "give --peer to a command"
        )
        ctx.exit(EXIT_NOT_FOUND)
    peers = tuple(
        p.Address(host=ep.host, port=ep.port, key=key or app.cfg.keys.get(ep, b""))
        for ep, key in given
    )
    timeout = 2.0 + hello_wait(app.cfg)
    st = run(control.status(local, timeout, peers, keep=True))
    if st is None:
        app.error("the local node did not answer its control endpoint")
        ctx.exit(EXIT_NOT_FOUND)
    failed = 0
    for ep, _ in given:
        m = next(
            (
                m
                for m in st.members
                if (m.host, m.port) == (ep.host, ep.port) and m.state == "alive"
            ),
            None,
        )
        if m is not None:
            app.info(f"connected to {peer_label(m.name, m.node)} at {ep}")
            continue
        failed += 1
        why = next(
            (f.reason for f in st.failed if (f.host, f.port) == (ep.host, ep.port)), "no answer yet"
        )
        app.error(f"{ep}: {why} (not kept: run `zwalk connect` again once it is up)")
    if not failed:
        app.info("kept until the node stops; [peers] static in the config file keeps them for good")
    ctx.exit(EXIT_OK if not failed else EXIT_NOT_FOUND)
