from __future__ import annotations

from pathlib import Path

import pytest

from zwalk import config as c

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
        ("[node]\nport = 70000\n", "port"),
        ("[node]\nport = x\n", "invalid literal"),
        ("[share]\nchunk_size = 1000\n", "power of two"),
        ("[nodes]\nport = 1\n", "unknown section"),
        ("[node]\nprot = 1\n", "unknown key"),
        ("[peers]\nstatic = nohostport\n", "HOST:PORT"),
        ("[find]\ntimeout = 0\n", "greater than"),
        ("[transfer]\nwindow = 0\n", "window"),
        ("[transfer]\nframe_size = 1\n", "frame_size"),
        ("[transfer]\nmax_window = 1048576\n", "max_window"),
        ("not an ini file", "cannot read"),
    ],
)
def test_bad_config_gives_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "z.ini"
    f.write_text(text)
    with pytest.raises(c.ConfigError, match=message):
        c.load(f)


def test_missing_file_is_an_error_only_when_asked_for(tmp_path: Path) -> None:
    assert c.load(tmp_path / "absent.ini") == c.Config()
    with pytest.raises(c.ConfigError, match="not found"):
        c.load(tmp_path / "absent.ini", required=True)


def test_flags_override_and_none_means_not_given() -> None:
    cfg = c.Config().with_overrides(port=0, name=None)
    assert cfg.port == 0 and cfg.name == c.Config().name
