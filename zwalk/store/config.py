# Settings: built-in defaults, then an INI file, then ZWALK_<SECTION>_<KEY> environment variables,
# then command-line flags, each overriding the last.
# config.example.ini documents every key read here (KEYS below); keep the two in step.
from __future__ import annotations

import configparser
import ipaddress
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import platformdirs

from zwalk.core import keys
from zwalk.core import protocol as p
from zwalk.core import sources as transfer
from zwalk.core.addresses import Endpoint
from zwalk.core.search_options import SEARCH_DEFAULTS
from zwalk.core.sources import TransferOptions
from zwalk.store import trust

DEFAULT_PORT = 47474
TRUST_MODES = ("open", "allowlist")
APP = "zwalk"


class ConfigError(Exception):
    """Bad configuration or usage; the CLI reports it and exits with status 2."""


def parse_peer(text: str) -> tuple[Endpoint, bytes | None]:
    """KEY@HOST:PORT (the line `zwalk id` prints), or HOST:PORT / HOST whose key is learned
    on first use."""
    key_text, at, rest = text.strip().partition("@")
    if not at:
        return parse_endpoint(text), None
    try:
        key = keys.from_text(key_text)
    except keys.BadKey as e:
        raise ConfigError(f"{e} in the peer {text.strip()!r}") from None
    return parse_endpoint(rest), key


def parse_endpoint(text: str) -> Endpoint:
    """HOST:PORT, or HOST alone for the default port."""
    text = text.strip()
    host, sep, port_s = text.rpartition(":")
    if not sep:
        host, port_s = text, str(DEFAULT_PORT)
    if host.count(":") or (sep and not host):
        raise ConfigError(f"not a HOST or HOST:PORT peer address: {text!r}")
    if not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ConfigError(f"not a port (1..65535) in the peer address {text!r}")
    labels = host.split(".")
    if len(host.encode()) > 253 or not all(
        label and label[0].isalnum() and all(c.isalnum() or c in "-_" for c in label)
        for label in labels
    ):
        raise ConfigError(f"not a host name or IPv4 address: {host!r}")
    return Endpoint(host, int(port_s))


@dataclass(frozen=True, slots=True)
class Config:
    data_dir: Path = field(default_factory=lambda: platformdirs.user_data_path(APP))
    name: str = field(default_factory=lambda: socket.gethostname() or "zwalk")
    port: int = DEFAULT_PORT
    interfaces: tuple[str, ...] = ()
    peers: tuple[Endpoint, ...] = ()
    peer_keys: tuple[tuple[Endpoint, bytes], ...] = ()  # the keys static peers were given with
    trust: str = "open"  # or "allowlist": only the keys in the data dir's trusted.keys
    shares: tuple[Path, ...] = ()
    chunk_size: int = 1024 * 1024
    rescan_interval: float = 30.0
    downloads: Path = Path("downloaded")
    links: str = "inside"  # file symlinks shared: those that stay inside their share, or any
    find_timeout: float = SEARCH_DEFAULTS.timeout
    reply_timeout: float = 2.0
    frame_size: int = transfer.DEFAULTS.frame_bytes
    window: int = transfer.DEFAULTS.window
    max_window: int = transfer.DEFAULTS.max_window
    queue_target: float = transfer.DEFAULTS.queue_target
    stall_grace: float = transfer.DEFAULTS.stall_grace
    ping_interval: float = 1.0
    ping_timeout: float = 1.0
    max_missed_pings: int = 3
    discovery_wait: float = 1.0
    strategy: str = str(SEARCH_DEFAULTS.strategy)
    walkers: int = SEARCH_DEFAULTS.walkers
    initial_walkers: int = SEARCH_DEFAULTS.initial
    ttl: int = 0  # 0: the strategy's own default
    check_every: int = SEARCH_DEFAULTS.check_every

    def with_overrides(self, **changes: Any) -> Config:
        """Flags win over the file; None means the flag was not given."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def keys(self) -> dict[Endpoint, bytes]:
        return dict(self.peer_keys)

    @property
    def allowlist(self) -> Path:
        return self.data_dir / trust.ALLOWLIST_FILE

    @property
    def pins(self) -> Path:
        return self.data_dir / trust.PINS_FILE

    @property
    def index_cache(self) -> Path:
        return self.data_dir / "index-cache.cbor"

    def transfer_options(self) -> TransferOptions:
        return TransferOptions(
            frame_bytes=self.frame_size,
            window=self.window,
            max_window=self.max_window,
            queue_target=self.queue_target,
            stall_grace=self.stall_grace,
            info_timeout=self.reply_timeout,
        )


def default_config_path() -> Path:
    return platformdirs.user_config_path(APP) / "config.ini"


def check_interface(value: str) -> str:
    """An IPv4 address or an interface name; names are resolved when the node binds."""
    value = value.strip()
    if not value:
        raise ConfigError("empty interface")
    try:
        if ipaddress.IPv4Address(value).is_unspecified:
            raise ConfigError("0.0.0.0 is not an interface: name one, or leave --interface out")
    except ValueError:
        if any(c in value for c in ":/ "):
            raise ConfigError(f"not an IPv4 address or interface name: {value!r}") from None
    return value


# --- the keys of the file -------------------------------------------------------------------
# Each parser turns the text of a value into what Config holds, or raises ValueError saying
# what it accepts; the error then names the file, the section and the key.
Parse = Callable[[str, Path], Any]


def _integer(lo: int, hi: int) -> Parse:
    def parse(text: str, base: Path) -> int:
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            raise ValueError(f"want a whole number from {lo} to {hi}") from None
        if not lo <= value <= hi:
            raise ValueError(f"want a whole number from {lo} to {hi}")
        return value

    return parse


def _seconds(text: str, base: Path) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("want a number of seconds greater than 0") from None
    if not 0 < value < 1e9:
        raise ValueError("want a number of seconds greater than 0")
    return value


def _power_of_two(lo: int, hi: int) -> Parse:
    def parse(text: str, base: Path) -> int:
        try:
            value: int = _integer(lo, hi)(text, base)
        except ValueError:
            value = 3  # not a power of two either
        if value & (value - 1):
            raise ValueError(f"want a power of two from {lo} to {hi} (bytes)")
        return value

    return parse


def _name(text: str, base: Path) -> str:
    if not text or len(text.encode()) > p.MAX_TEXT_BYTES:
        raise ValueError("want a name of 1 to 1024 bytes")
    return text


def _choice(*options: str) -> Parse:
    def parse(text: str, base: Path) -> str:
        if text not in options:
            raise ValueError(f"want {', '.join(options[:-1])} or {options[-1]}")
        return text

    return parse


def _list(value: str) -> list[str]:
    return [x.strip() for x in value.replace("\n", ",").split(",") if x.strip()]


def _interfaces(text: str, base: Path) -> tuple[str, ...]:
    try:
        return tuple(check_interface(x) for x in _list(text))
    except ConfigError as e:
        raise ValueError(f"{e}; want IPv4 addresses or interface names, comma-separated") from None


def _peers(text: str, base: Path) -> tuple[tuple[Endpoint, bytes | None], ...]:
    try:
        return tuple(parse_peer(x) for x in _list(text))
    except ConfigError as e:
        raise ValueError(f"{e}; want KEY@HOST:PORT or HOST:PORT entries, comma-separated") from None


def _dir_from_file(text: str, base: Path) -> Path | None:
    """A folder; relative to the config file's folder. Empty: the default."""
    return base / Path(text).expanduser() if text else None


def _dirs_from_file(text: str, base: Path) -> tuple[Path, ...]:
    return tuple(base / Path(x).expanduser() for x in _list(text))


def _dir_from_cwd(text: str, base: Path) -> Path | None:
    """A folder; relative to where zwalk runs. Empty: the default."""
    return Path(text).expanduser() if text else None


MAX_PAYLOAD = p.MAX_PAYLOAD
GIB = 1 << 30

# (section, key) -> (Config field, parser)
KEYS: dict[tuple[str, str], tuple[str, Parse]] = {
    ("node", "name"): ("name", _name),
    ("node", "port"): ("port", _integer(0, 65535)),
    ("node", "data_dir"): ("data_dir", _dir_from_file),
    ("node", "interfaces"): ("interfaces", _interfaces),
    ("node", "ping_interval"): ("ping_interval", _seconds),
    ("node", "ping_timeout"): ("ping_timeout", _seconds),
    ("node", "max_missed_pings"): ("max_missed_pings", _integer(1, 100)),
    ("node", "discovery_wait"): ("discovery_wait", _seconds),
    ("share", "paths"): ("shares", _dirs_from_file),
    ("share", "chunk_size"): ("chunk_size", _power_of_two(p.MIN_CHUNK_SIZE, p.MAX_CHUNK_SIZE)),
    ("share", "rescan_interval"): ("rescan_interval", _seconds),
    ("share", "downloads"): ("downloads", _dir_from_cwd),
    ("share", "links"): ("links", _choice("inside", "follow")),
    ("peers", "static"): ("peers", _peers),
    ("trust", "mode"): ("trust", _choice(*TRUST_MODES)),
    ("find", "timeout"): ("find_timeout", _seconds),
    ("find", "reply_timeout"): ("reply_timeout", _seconds),
    ("find", "strategy"): ("strategy", _choice("kwalk", "flood", "probe")),
    ("find", "walkers"): ("walkers", _integer(1, p.MAX_WALKERS // 2)),
    ("find", "initial_walkers"): ("initial_walkers", _integer(1, p.MAX_WALKERS // 2)),
    ("find", "ttl"): ("ttl", _integer(0, p.MAX_TTL)),
    ("find", "check_every"): ("check_every", _integer(0, p.MAX_TTL)),
    ("transfer", "frame_size"): ("frame_size", _integer(p.MIN_CHUNK_SIZE, MAX_PAYLOAD)),
    ("transfer", "window"): ("window", _integer(p.MIN_CHUNK_SIZE, GIB)),
    ("transfer", "max_window"): ("max_window", _integer(p.MIN_CHUNK_SIZE, GIB)),
    ("transfer", "queue_target"): ("queue_target", _seconds),
    ("transfer", "stall_grace"): ("stall_grace", _seconds),
}
SECTIONS = sorted({section for section, _ in KEYS})


# --- the layers -----------------------------------------------------------------------------
# Every key of KEYS is read the same way from the file and from its environment variable, and
# each value keeps where it came from (the CLI lays flags over both).
# The test suite's own variables (ZWALK_TEST_NETNS, ZWALK_FUZZ_SEED) are not settings: no warning.
ENV_NOT_SETTINGS = ("ZWALK_TEST_", "ZWALK_FUZZ_")
Key = tuple[str, str]  # (section, key)


def env_name(section: str, key: str) -> str:
    return f"ZWALK_{section}_{key}".upper()


ENV = {env_name(s, k): (s, k) for s, k in KEYS}
FIELD_KEY = {name: sk for sk, (name, _) in KEYS.items()}  # Config field -> (section, key)


@dataclass(frozen=True, slots=True)
class Origin:
    """source: default, file, env or flag; detail: the file's path, the variable or the flag."""

    source: str = "default"
    detail: str = ""

    def __str__(self) -> str:
        return self.detail if self.source == "file" else f"{self.source} {self.detail}".strip()


Entries = dict[Key, tuple[Any, Origin]]  # parsed values (None: the default) and their origin


@dataclass(frozen=True, slots=True)
class Layers:
    cfg: Config
    origins: dict[Key, Origin]  # of every key
    warnings: tuple[str, ...] = ()  # about ZWALK_ variables that name no key


def load(path: Path | None, *, required: bool = False) -> Config:
    """Read an INI file over the defaults. A missing file is fine unless it was asked for."""
    return layers(path, {}, required=required).cfg


def layers(path: Path | None, environ: Mapping[str, str], *, required: bool = False) -> Layers:
    """The defaults, the file at `path` (if any), then the ZWALK_ variables of `environ`."""
    entries = _read_file(path, required) if path is not None else {}
    env_entries, warnings = read_env(environ)
    entries |= env_entries
    defaults = Config()
    changes: dict[str, Any] = {}
    for sk, (value, _) in entries.items():
        name = KEYS[sk][0]
        if name == "peers":  # (endpoint, key or None) pairs: the endpoints, and the keys given
            changes["peers"] = tuple(ep for ep, _ in value)
            changes["peer_keys"] = tuple((ep, k) for ep, k in value if k is not None)
        else:
            changes[name] = getattr(defaults, name) if value is None else value
    origins = {sk: Origin() for sk in KEYS} | {sk: origin for sk, (_, origin) in entries.items()}
    cfg = replace(defaults, **changes)
    validate(cfg, origins)
    return Layers(cfg, origins, tuple(warnings))


def read_env(environ: Mapping[str, str]) -> tuple[Entries, list[str]]:
    """ZWALK_<SECTION>_<KEY> variables, parsed as in the file but relative paths are taken
    from the current folder; and a warning for each other ZWALK_ name."""
    entries: Entries = {}
    warnings: list[str] = []
    for var in sorted(environ):
        if var.startswith("ZWALK_") and var not in ENV and not var.startswith(ENV_NOT_SETTINGS):
            section = next((s for s in SECTIONS if var.startswith(env_name(s, ""))), None)
            known = ", ".join(env_name(s, k) for s, k in KEYS if s == section) or (
                f"ZWALK_<SECTION>_<KEY>, SECTION one of {', '.join(SECTIONS).upper()}"
            )
            warnings.append(
                f"environment variable {var} is not a zwalk setting (ignored); known: {known}"
            )
        elif var in ENV:
            section, key = ENV[var]
            text = environ[var].strip()
            try:
                value = KEYS[section, key][1](text, Path.cwd())
            except ValueError as e:
                raise ConfigError(
                    f"environment variable {var} = {text!r} ([{section}] {key}): {e}"
                ) from None
            entries[section, key] = (value, Origin("env", var))
    return entries, warnings


def _read_file(path: Path, required: bool) -> Entries:
    if not path.exists():
        if required:
            raise ConfigError(f"config file not found: {path}")
        return {}
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=str(path))
    except configparser.MissingSectionHeaderError as e:
        raise ConfigError(
            f"{path}, line {e.lineno}: {e.line.strip()!r} comes before any [section]; keys go "
            f"under one of {', '.join(f'[{x}]' for x in SECTIONS)} (see config.example.ini)"
        ) from None
    except configparser.ParsingError as e:
        lines = ", ".join(str(n) for n, _ in e.errors)
        raise ConfigError(f"{path}, line {lines}: not a 'key = value' line") from None
    except configparser.DuplicateOptionError as e:
        raise ConfigError(
            f"{path}, line {e.lineno}: [{e.section}] {e.option} is set twice"
        ) from None
    except configparser.DuplicateSectionError as e:
        raise ConfigError(f"{path}, line {e.lineno}: [{e.section}] appears twice") from None
    except configparser.Error as e:
        raise ConfigError(f"{path}: {e.message}") from None
    entries: Entries = {}
    for section in parser.sections():
        if section not in SECTIONS:
            known = ", ".join(f"[{x}]" for x in SECTIONS)
            raise ConfigError(f"{path}: unknown section [{section}] (known: {known})")
        for key, raw in parser[section].items():
            entry = KEYS.get((section, key))
            if entry is None:
                known = ", ".join(k for s, k in KEYS if s == section)
                raise ConfigError(f"{path}: unknown key {key!r} in [{section}] (known: {known})")
            try:
                value = entry[1](raw.strip(), path.parent)
            except ValueError as e:
                raise ConfigError(f"{path}: [{section}] {key} = {raw.strip()!r}: {e}") from None
            entries[section, key] = (value, Origin("file", str(path)))
    return entries


def validate(cfg: Config, origins: Mapping[Key, Origin]) -> None:
    """Rules between keys (each key's own range is checked where it is read)."""
    if not cfg.window <= cfg.max_window or not cfg.frame_size <= cfg.max_window:
        got = ", ".join(
            f"{k} {getattr(cfg, k)} ({origins['transfer', k]})"
            for k in ("window", "frame_size", "max_window")
        )
        raise ConfigError(
            f"[transfer] want window and frame_size no larger than max_window, got {got}"
        )
