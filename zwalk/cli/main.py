# The `zwalk` command: global options, configuration, and the mapping of errors to exit codes.
#
# Global options are accepted before the command name and after it (`zwalk --peer X find f` and
# `zwalk find f --peer X`); repeatable ones add up, single ones given after the command win.
from __future__ import annotations

import difflib
import importlib
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import click

from zwalk.cli.app import App, setup_logging
from zwalk.store import config as config_mod
from zwalk.store.config import ConfigError
from zwalk.store.trust import TrustError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_NOT_FOUND, EXIT_USAGE, EXIT_DOWNLOAD_FAILED = 0, 1, 2, 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
_KEY = "zwalk.globals"


def _store(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    g = ctx.find_root().meta.setdefault(_KEY, {"interface": [], "peer": [], "verbose": 0})
    name = param.name or ""
    if name in ("interface", "peer"):
        g[name].extend(value)
    elif name == "verbose":
        g[name] += value
    elif value is not None:
        g[name] = value


def global_options(f: F) -> F:
    opts = [
        click.option(
            "--config",
            "config",
            type=click.Path(dir_okay=False, path_type=Path),
            expose_value=False,
            callback=_store,
            help="INI file to read (default: the user config folder's config.ini); "
            "ZWALK_<SECTION>_<KEY> variables and flags win over it.",
        ),
        click.option(
            "--data-dir",
            type=click.Path(file_okay=False, path_type=Path),
            expose_value=False,
            callback=_store,
            help="Where the node keeps its keys and index cache.",
        ),
        click.option(
            "--interface",
            multiple=True,
            expose_value=False,
            callback=_store,
            help="IPv4 address or interface name to use (repeatable).",
        ),
        click.option(
            "--peer",
            multiple=True,
            expose_value=False,
            callback=_store,
            metavar="[KEY@]HOST:PORT",
            help="A peer to talk to directly (repeatable). KEY@HOST:PORT, as `zwalk id` "
            "prints it on that host; without KEY, its key is learned on first use and pinned.",
        ),
        click.option(
            "--trust",
            type=click.Choice(config_mod.TRUST_MODES),
            expose_value=False,
            callback=_store,
            help="open: any node may join (ids are proven); allowlist: only the keys in "
            "trusted.keys (zwalk trust add).",
        ),
        click.option(
            "-v",
            "--verbose",
            count=True,
            expose_value=False,
            callback=_store,
            help="More log output on stderr (-vv for debug).",
        ),
        click.option(
            "--log-file",
            type=click.Path(dir_okay=False, path_type=Path),
            expose_value=False,
            callback=_store,
            help="Also append log records, with times, to FILE (at least -v's).",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def used(ctx: click.Context, option: str) -> bool:
    """Whether a global option ('peer', 'data_dir', ...) was given on the command line."""
    g = ctx.find_root().meta.get(_KEY, {})
    return bool(g.get(option))


def make_app(ctx: click.Context, *, check_interfaces: bool = True, **overrides: Any) -> App:
    """Defaults, then the config file, then ZWALK_<SECTION>_<KEY> environment variables, then
    global flags, then the command's own flags (named after their Config field, find's
    --timeout aside). The chosen interfaces must exist here (doctor reports it as a finding
    instead). Where each value came from is kept for `zwalk config` (ctx.meta)."""
    g = ctx.find_root().meta.get(_KEY, {"interface": [], "peer": [], "verbose": 0})
    setup_logging(g["verbose"], g.get("log_file"))
    explicit = g.get("config")
    path = (explicit or config_mod.default_config_path()).absolute()
    layers = config_mod.layers(path, os.environ, required=bool(explicit))
    log = logging.getLogger("zwalk.config")
    for warning in layers.warnings:
        log.warning(warning)
    cfg = layers.cfg
    try:
        given = [config_mod.parse_peer(x) for x in g["peer"]]
    except ConfigError as e:
        raise ConfigError(f"--peer: {e}") from None
    peers = tuple(ep for ep, _ in given)
    try:
        interfaces = tuple(config_mod.check_interface(x) for x in g["interface"])
    except ConfigError as e:
        raise ConfigError(f"--interface: {e}") from None
    added = f", added to {layers.origins['peers', 'static']}" if cfg.peers else ""
    flags: dict[str, tuple[str, Any]] = {  # Config field: (flag, value or None if not given)
        "data_dir": ("--data-dir", g.get("data_dir")),
        "interfaces": ("--interface", interfaces or None),
        "peers": ("--peer" + added, (cfg.peers + peers) if peers else None),
        "peer_keys": (
            "--peer",
            cfg.peer_keys + tuple((e, k) for e, k in given if k) if given else None,
        ),
        "trust": ("--trust", g.get("trust")),
        **{f: ("--" + f.removeprefix("find_").replace("_", "-"), v) for f, v in overrides.items()},
    }
    cfg = cfg.with_overrides(**{f: v for f, (_, v) in flags.items()})
    origins = layers.origins | {
        config_mod.FIELD_KEY[f]: config_mod.Origin("flag", flag)
        for f, (flag, v) in flags.items()
        if v is not None and f in config_mod.FIELD_KEY
    }
    config_mod.validate(cfg, origins)
    ctx.find_root().meta["zwalk.layers"] = (path, replace(layers, cfg=cfg, origins=origins))
    log.info(
        "config file %s%s; set by the file, the environment or flags: %s",
        path,
        "" if path.exists() else " (not there)",
        ", ".join(f"[{s}] {k} ({o})" for (s, k), o in origins.items() if o.source != "default")
        or "nothing",
    )
    if check_interfaces and cfg.interfaces:
        from zwalk.net.netif import resolve

        try:
            resolve(cfg.interfaces)
        except ConfigError as e:
            origin = origins["node", "interfaces"]
            where = {"flag": "--interface", "env": f"environment variable {origin.detail}"}.get(
                origin.source, f"[node] interfaces in {origin}"
            )
            raise ConfigError(f"{where}: {e}") from None
    return App(cfg=cfg, verbose=g["verbose"], named_peers=peers)


class ZwalkGroup(click.Group):
    # Subcommands are imported when used: a find need not load zeroconf (for doctor) first.
    LAZY = {
        "serve": "zwalk.cli.serve",
        "find": "zwalk.cli.find",
        "peers": "zwalk.cli.peers",
        "ls": "zwalk.cli.ls",
        "status": "zwalk.cli.status",
        "connect": "zwalk.cli.connect",
        "doctor": "zwalk.cli.doctor",
        "demo": "zwalk.cli.demo",
        "id": "zwalk.cli.identity",
        "trust": "zwalk.cli.trust",
        "config": "zwalk.cli.config",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*self.LAZY, *(c for c in super().list_commands(ctx) if c not in self.LAZY)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.LAZY:
            module = importlib.import_module(self.LAZY[cmd_name])
            command = getattr(module, cmd_name, None) or getattr(module, cmd_name + "_")
            assert isinstance(command, click.Command)  # noqa: S101 - a table of our own
            return command
        return super().get_command(ctx, cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            close = difflib.get_close_matches(name, self.list_commands(ctx), n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            ctx.fail(f"No such command {name!r}.{hint} See `zwalk --help`.")
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ConfigError, TrustError) as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(EXIT_USAGE)


def _version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    import zeroconf
    import zmq

    import zwalk

    where = Path(zwalk.__file__).resolve().parent
    click.echo(
        f"zwalk {zwalk.__version__} ({where}), pyzmq {zmq.pyzmq_version()} "
        f"(libzmq {zmq.zmq_version()}), zeroconf {zeroconf.__version__}, "
        f"Python {sys.version.split()[0]}"
    )
    ctx.exit()


@click.group(cls=ZwalkGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_version,
    help="Show the versions of zwalk, pyzmq, libzmq and zeroconf, and exit.",
)
@global_options
def cli() -> None:
    """Find and fetch files that live somewhere on your LAN."""


def main() -> None:
    if sys.platform == "win32":  # a redirected stream is cp1252 there: never fail on a name
        for stream in (sys.stdout, sys.stderr):
            reconfigure = getattr(stream, "reconfigure", None)
            if reconfigure is not None:
                reconfigure(errors="replace")
    # One name however it is started (`python -m zwalk` too): usage lines, shell completion.
    sys.exit(cli.main(prog_name="zwalk", standalone_mode=True))
