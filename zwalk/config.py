# Settings: built-in defaults, then an INI file, then command-line flags, each overriding the last.
# config.example.ini documents every key read here; keep the two in step.
from __future__ import annotations

import configparser
import ipaddress
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import platformdirs

from zwalk import protocol as p
from zwalk import transfer
from zwalk.transfer import TransferOptions

DEFAULT_PORT = 47474
APP = "zwalk"


class ConfigError(Exception):
    """Bad configuration or usage; the CLI reports it and exits with status 2."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def zmq(self) -> str:
        return f"tcp://{self.host}:{self.port}"


def parse_endpoint(text: str) -> Endpoint:
    text = text.strip()
    host, sep, port_s = text.rpartition(":")
    if not sep or not host or not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ConfigError(f"not a HOST:PORT peer address: {text!r}")
    if ":" in host:
        raise ConfigError(f"IPv6 peers are not supported yet: {text!r}")
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
    shares: tuple[Path, ...] = ()
    chunk_size: int = 1024 * 1024
    rescan_interval: float = 30.0
    downloads: Path = Path("downloaded")
    find_timeout: float = 10.0
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
    strategy: str = "kwalk"
    walkers: int = 16
    initial_walkers: int = 1
    ttl: int = 0  # 0: the strategy's own default
    check_every: int = 8

    def with_overrides(self, **changes: Any) -> Config:
        """Flags win over the file; None means the flag was not given."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

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


def _positive(section: str, key: str, value: float, minimum: float = 0.0) -> None:
    if not value > minimum:
        raise ConfigError(f"[{section}] {key} must be greater than {minimum:g}, got {value:g}")


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


def load(path: Path | None, *, required: bool = False) -> Config:
    """Read an INI file over the defaults. A missing file is fine unless it was asked for."""
    cfg = Config()
    if path is None:
        return cfg
    if not path.exists():
        if required:
            raise ConfigError(f"config file not found: {path}")
        return cfg
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError, OSError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    known = {
        "node": {
            "name",
            "port",
            "data_dir",
            "interfaces",
            "ping_interval",
            "ping_timeout",
            "max_missed_pings",
            "discovery_wait",
        },
        "share": {"paths", "chunk_size", "rescan_interval", "downloads"},
        "peers": {"static"},
        "find": {
            "timeout",
            "reply_timeout",
            "strategy",
            "walkers",
            "initial_walkers",
            "ttl",
            "check_every",
        },
        "transfer": {"frame_size", "window", "max_window", "queue_target", "stall_grace"},
    }
    for section in parser.sections():
        if section not in known:
            raise ConfigError(f"{path}: unknown section [{section}]")
        for key in parser[section]:
            if key not in known[section]:
                raise ConfigError(f"{path}: unknown key {key!r} in [{section}]")
    try:
        return _apply(parser, cfg, path)
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None


def _list(value: str) -> list[str]:
    return [x.strip() for x in value.replace("\n", ",").split(",") if x.strip()]


def _apply(parser: configparser.ConfigParser, cfg: Config, path: Path) -> Config:
    base = path.parent
    ch: dict[str, Any] = {}
    if parser.has_section("node"):
        s = parser["node"]
        if "name" in s:
            ch["name"] = s["name"].strip()
        if "port" in s:
            ch["port"] = s.getint("port")
        if "data_dir" in s and s["data_dir"].strip():
            ch["data_dir"] = base / Path(s["data_dir"].strip()).expanduser()
        if "interfaces" in s:
            ch["interfaces"] = tuple(check_interface(x) for x in _list(s["interfaces"]))
        for key in ("ping_interval", "ping_timeout", "discovery_wait"):
            if key in s:
                ch[key] = s.getfloat(key)
        if "max_missed_pings" in s:
            ch["max_missed_pings"] = s.getint("max_missed_pings")
    if parser.has_section("share"):
        s = parser["share"]
        if "paths" in s:
            ch["shares"] = tuple(base / Path(x).expanduser() for x in _list(s["paths"]))
        if "chunk_size" in s:
            ch["chunk_size"] = s.getint("chunk_size")
        if "rescan_interval" in s:
            ch["rescan_interval"] = s.getfloat("rescan_interval")
        if "downloads" in s:
            ch["downloads"] = Path(s["downloads"].strip()).expanduser()
    if parser.has_section("peers") and "static" in parser["peers"]:
        ch["peers"] = tuple(parse_endpoint(x) for x in _list(parser["peers"]["static"]))
    if parser.has_section("find"):
        s = parser["find"]
        if "timeout" in s:
            ch["find_timeout"] = s.getfloat("timeout")
        if "reply_timeout" in s:
            ch["reply_timeout"] = s.getfloat("reply_timeout")
        if "strategy" in s:
            ch["strategy"] = s["strategy"].strip()
        for key in ("walkers", "initial_walkers", "ttl", "check_every"):
            if key in s:
                ch[key] = s.getint(key)
    if parser.has_section("transfer"):
        s = parser["transfer"]
        for key in ("frame_size", "window", "max_window"):
            if key in s:
                ch[key] = s.getint(key)
        for key in ("queue_target", "stall_grace"):
            if key in s:
                ch[key] = s.getfloat(key)
    out = replace(cfg, **ch)
    validate(out)
    return out


def validate(cfg: Config) -> None:
    if not 0 <= cfg.port < 65536:
        raise ConfigError(f"port must be 0..65535, got {cfg.port}")
    cs = cfg.chunk_size
    if not p.MIN_CHUNK_SIZE <= cs <= p.MAX_CHUNK_SIZE or cs & (cs - 1):
        raise ConfigError(
            f"chunk_size must be a power of two between {p.MIN_CHUNK_SIZE} and "
            f"{p.MAX_CHUNK_SIZE}, got {cs}"
        )
    if not cfg.name or len(cfg.name.encode()) > p.MAX_TEXT_BYTES:
        raise ConfigError("name must be 1 to 1024 bytes")
    _positive("find", "timeout", cfg.find_timeout)
    _positive("find", "reply_timeout", cfg.reply_timeout)
    _positive("transfer", "queue_target", cfg.queue_target)
    _positive("transfer", "stall_grace", cfg.stall_grace)
    _positive("share", "rescan_interval", cfg.rescan_interval)
    _positive("node", "ping_interval", cfg.ping_interval)
    _positive("node", "ping_timeout", cfg.ping_timeout)
    _positive("node", "discovery_wait", cfg.discovery_wait)
    if not 1 <= cfg.max_missed_pings <= 100:
        raise ConfigError(f"[node] max_missed_pings must be 1..100, got {cfg.max_missed_pings}")
    if cfg.strategy not in ("kwalk", "flood", "probe"):
        raise ConfigError(f"[find] strategy must be kwalk, flood or probe, got {cfg.strategy!r}")
    most = p.MAX_WALKERS // 2
    if not 1 <= cfg.walkers <= most or not 1 <= cfg.initial_walkers <= most:
        raise ConfigError(f"[find] walkers and initial_walkers must be 1..{most}")
    if not 0 <= cfg.ttl <= p.MAX_TTL or not 0 <= cfg.check_every <= p.MAX_TTL:
        raise ConfigError(f"[find] ttl and check_every must be 0..{p.MAX_TTL}")
    if not p.MIN_CHUNK_SIZE <= cfg.frame_size <= p.MAX_PAYLOAD:
        raise ConfigError(
            f"[transfer] frame_size must be {p.MIN_CHUNK_SIZE}..{p.MAX_PAYLOAD}, "
            f"got {cfg.frame_size}"
        )
    if not (
        p.MIN_CHUNK_SIZE <= cfg.window <= cfg.max_window <= 1024 * 1024 * 1024
        and cfg.frame_size <= cfg.max_window
    ):
        raise ConfigError(
            "[transfer] want window and frame_size <= max_window <= 1 GiB, got "
            f"window {cfg.window}, frame_size {cfg.frame_size}, max_window {cfg.max_window}"
        )
