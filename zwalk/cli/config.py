# `zwalk config`: the effective configuration, key by key, and where each value came from (the
# default, the config file, a ZWALK_<SECTION>_<KEY> variable or a flag). It reads and checks the
# configuration as every other command does, and opens no socket.
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from zwalk.cli.main import EXIT_OK, global_options, make_app
from zwalk.core import keys
from zwalk.store import config as config_mod
from zwalk.store.config import Config, Layers


@click.command(
    name="config",
    epilog="Exit status: 0, or 2 for a usage or configuration error (a bad value in the file, "
    "the environment or a flag).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@global_options
@click.pass_context
def config_(ctx: click.Context, as_json: bool) -> None:
    """Show the effective configuration and where each value comes from.

    One line per key, `[section] key = value  (source)`; the source is `default`, the config
    file, `env ZWALK_<SECTION>_<KEY>` or `flag --option`. Flags win over the environment, which
    wins over the config file, which wins over the defaults."""
    make_app(ctx, check_interfaces=False)  # a missing interface is doctor's finding, not ours
    path, layers = ctx.find_root().meta["zwalk.layers"]  # as make_app resolved it
    doc = report(path, layers)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        there = "" if doc["config_file_exists"] else " (not there: no file read)"
        click.echo(f"# config file: {path}{there}")
        for k in doc["keys"]:
            origin = layers.origins[k["section"], k["key"]]
            line = f"[{k['section']}] {k['key']} = {as_text(k['value'])}".rstrip()
            click.echo(f"{line}  ({origin})")
    ctx.exit(EXIT_OK)


def report(path: Path, layers: Layers) -> dict[str, Any]:
    """The JSON document: docs/CLI.md describes it; keys in config.example.ini's order."""
    out = []
    for (section, key), (name, _) in config_mod.KEYS.items():
        origin = layers.origins[section, key]
        out.append(
            {
                "section": section,
                "key": key,
                "value": value_of(layers.cfg, name),
                "source": origin.source,
                "detail": origin.detail,
                "env": config_mod.env_name(section, key),
            }
        )
    return {
        "config_file": str(path),
        "config_file_exists": path.is_file(),
        "keys": out,
        "warnings": list(layers.warnings),
    }


def value_of(cfg: Config, name: str) -> Any:
    """A Config field as JSON: numbers and text as they are, paths as text, lists as lists of
    text (static peers as KEY@HOST:PORT when their key was given, as in the file)."""
    value = getattr(cfg, name)
    if name == "peers":
        given = cfg.keys
        return [f"{keys.to_text(given[e])}@{e}" if e in given else str(e) for e in value]
    if isinstance(value, tuple):
        return [str(x) for x in value]
    return str(value) if isinstance(value, Path) else value


def as_text(value: Any) -> str:
    """A value as the config file would write it: lists comma-separated, 10.0 as 10."""
    if isinstance(value, list):
        return ", ".join(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
