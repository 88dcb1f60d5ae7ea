from __future__ import annotations

from pathlib import Path

import pytest

from zwalk.store import config as c

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.ini"


def test_example_config_states_the_defaults() -> None:
    loaded = c.load(EXAMPLE, required=True)
    defaults = c.Config()
    assert loaded == defaults


def test_values_and_relative_paths(tmp_path: Path) -> None:
    f = tmp_path / "z.ini"
    f.write_text(
        "[node]\nname = box\nport = 0\ninterfaces = 127.0.0.1, lo\ndata_dir = state\n"
        "[share]\npaths = music, /srv/isos\nchunk_size = 65536\n"
        "[peers]\nstatic = 10.0.0.2:47474,\n  host.lan:1\n"
        "[find]\ntimeout = 2.5\n[transfer]\nwindow = 8388608\n"
    )
    cfg = c.load(f)
    assert (cfg.name, cfg.port, cfg.interfaces) == ("box", 0, ("127.0.0.1", "lo"))
    assert cfg.data_dir == tmp_path / "state"
    assert cfg.shares == (tmp_path / "music", Path("/srv/isos"))
    assert cfg.peers == (c.Endpoint("10.0.0.2", 47474), c.Endpoint("host.lan", 1))
    assert (cfg.chunk_size, cfg.find_timeout, cfg.window) == (65536, 2.5, 8 << 20)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[node]\nport = 70000\n", "[node] port = '70000': want a whole number from 0 to 65535"),
        ("[node]\nport = abc\n", "[node] port = 'abc': want a whole number from 0 to 65535"),
        (
            "[share]\nchunk_size = 1000\n",
            "[share] chunk_size = '1000': want a power of two from 16384 to 16777216 (bytes)",
        ),
        ("[nodes]\nport = 1\n", "unknown section [nodes] (known: [find], [node], [peers],"),
        ("[node]\nprot = 1\n", "unknown key 'prot' in [node] (known: name, port, data_dir,"),
        ("[peers]\nstatic = a:b:c\n", "[peers] static = 'a:b:c': not a HOST or HOST:PORT"),
        ("[peers]\nstatic = h:0\n", "not a port (1..65535) in the peer address 'h:0'"),
        ("[find]\ntimeout = 0\n", "[find] timeout = '0': want a number of seconds greater than 0"),
        ("[find]\nstrategy = bfs\n", "[find] strategy = 'bfs': want kwalk, flood or probe"),
        ("[transfer]\nwindow = 0\n", "[transfer] window = '0': want a whole number from 16384"),
        ("[transfer]\nframe_size = 1\n", "[transfer] frame_size = '1': want a whole number"),
        ("[transfer]\nmax_window = 1048576\n", "no larger than max_window"),
        ("port = 1\n", "line 1: 'port = 1' comes before any [section]; keys go under one of"),
        ("[node]\nport\n", "line 2: not a 'key = value' line"),
        ("[node]\nport = 1\nport = 2\n", "line 3: [node] port is set twice"),
    ],
)
def test_bad_config_names_the_file_the_key_and_what_it_accepts(
    tmp_path: Path, text: str, message: str
) -> None:
    f = tmp_path / "z.ini"
    f.write_text(text)
    with pytest.raises(c.ConfigError) as e:
        c.load(f)
    assert str(e.value).startswith(str(f)), e.value
    assert message in str(e.value)
    assert "PosixPath" not in str(e.value) and "invalid literal" not in str(e.value)


def test_a_peer_without_a_port_means_the_default_port(tmp_path: Path) -> None:
    f = tmp_path / "z.ini"
    f.write_text("[peers]\nstatic = nas.local, 10.0.0.9\n")
    assert c.load(f).peers == (c.Endpoint("nas.local", 47474), c.Endpoint("10.0.0.9", 47474))
    assert c.parse_endpoint("10.0.0.9") == c.Endpoint("10.0.0.9", c.DEFAULT_PORT)


def test_missing_file_is_an_error_only_when_asked_for(tmp_path: Path) -> None:
    assert c.load(tmp_path / "absent.ini") == c.Config()
    with pytest.raises(c.ConfigError, match="not found"):
        c.load(tmp_path / "absent.ini", required=True)


def test_flags_override_and_none_means_not_given() -> None:
    cfg = c.Config().with_overrides(port=0, name=None)
    assert cfg.port == 0 and cfg.name == c.Config().name
