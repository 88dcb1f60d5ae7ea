# The configuration in layers: defaults, the INI file, ZWALK_<SECTION>_<KEY> variables, flags;
# each value's origin, and `zwalk config`, which shows both (real processes for the commands).
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from procs import LOOPBACK, start_serve, zwalk_cmd

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


def test_a_rule_between_keys_names_where_each_value_came_from(tmp_path: Path) -> None:
    f = tmp_path / "z.ini"
    f.write_text("[transfer]\nmax_window = 1048576\n")
    with pytest.raises(c.ConfigError) as e:
        c.load(f)
    assert "want window and frame_size no larger than max_window" in str(e.value)
    assert "window 2097152 (default)" in str(e.value)
    assert f"max_window 1048576 ({f})" in str(e.value)
    with pytest.raises(c.ConfigError, match=r"max_window 1048576 \(env ZWALK_TRANSFER_MAX"):
        c.layers(None, {"ZWALK_TRANSFER_MAX_WINDOW": "1048576"})


# --- the environment layer (in this process) ------------------------------------------------


def test_every_key_has_a_variable_named_after_its_section_and_key() -> None:
    assert c.env_name("find", "initial_walkers") == "ZWALK_FIND_INITIAL_WALKERS"
    assert len(c.ENV) == len(c.KEYS)
    for section, key in c.KEYS:
        assert c.ENV[f"ZWALK_{section.upper()}_{key.upper()}"] == (section, key)


def test_the_environment_wins_over_the_file_and_keeps_its_origin(tmp_path: Path) -> None:
    f = tmp_path / "z.ini"
    f.write_text("[node]\nport = 1111\n[find]\ntimeout = 5\nstrategy = flood\n")
    got = c.layers(f, {"ZWALK_NODE_PORT": " 2222 ", "ZWALK_FIND_STRATEGY": "probe"})
    assert (got.cfg.port, got.cfg.find_timeout, got.cfg.strategy) == (2222, 5.0, "probe")
    assert got.origins["node", "port"] == c.Origin("env", "ZWALK_NODE_PORT")
    assert got.origins["find", "timeout"] == c.Origin("file", str(f))
    assert got.origins["find", "walkers"] == c.Origin()
    assert str(got.origins["node", "port"]) == "env ZWALK_NODE_PORT"
    assert str(got.origins["find", "timeout"]) == str(f) and str(c.Origin()) == "default"


def test_paths_in_the_environment_are_taken_from_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    f = tmp_path / "conf" / "z.ini"
    f.write_text("[node]\ndata_dir = state\n[share]\npaths = music\n")
    monkeypatch.chdir(tmp_path)
    assert c.load(f).data_dir == tmp_path / "conf" / "state"  # the file: from its folder
    env = {"ZWALK_NODE_DATA_DIR": "here", "ZWALK_SHARE_PATHS": "a, /srv/b"}
    cfg = c.layers(f, env).cfg
    assert cfg.data_dir == tmp_path / "here"
    assert cfg.shares == (tmp_path / "a", Path("/srv/b"))


def test_an_empty_variable_means_what_an_empty_value_means_in_the_file(tmp_path: Path) -> None:
    f = tmp_path / "z.ini"
    f.write_text("[node]\ndata_dir = /srv/zwalk\ninterfaces = lo\n[peers]\nstatic = h:1\n")
    env = {"ZWALK_NODE_DATA_DIR": "", "ZWALK_NODE_INTERFACES": "", "ZWALK_PEERS_STATIC": ""}
    got = c.layers(f, env)
    assert got.cfg.data_dir == c.Config().data_dir  # the default again, not the file's
    assert (got.cfg.interfaces, got.cfg.peers) == ((), ())
    assert got.origins["node", "data_dir"].source == "env"
    with pytest.raises(c.ConfigError, match="ZWALK_NODE_PORT = '' \\(\\[node\\] port\\): want a"):
        c.layers(None, {"ZWALK_NODE_PORT": ""})


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        (
            "ZWALK_NODE_PORT",
            "abc",
            "environment variable ZWALK_NODE_PORT = 'abc' ([node] port): "
            "want a whole number from 0 to 65535",
        ),
        ("ZWALK_FIND_TIMEOUT", "-1", "([find] timeout): want a number of seconds greater than 0"),
        ("ZWALK_TRUST_MODE", "closed", "([trust] mode): want open or allowlist"),
        ("ZWALK_PEERS_STATIC", "a:b:c", "([peers] static): not a HOST or HOST:PORT"),
    ],
)
def test_a_bad_variable_names_itself_its_key_and_what_it_accepts(
    var: str, value: str, message: str
) -> None:
    with pytest.raises(c.ConfigError) as e:
        c.layers(None, {var: value})
    assert str(e.value).startswith(f"environment variable {var} = {value!r} ")
    assert message in str(e.value)


def test_unknown_zwalk_variables_are_warned_of_but_not_the_suites_own() -> None:
    env = {
        "ZWALK_NODE_PROT": "1",
        "ZWALK_NODES_PORT": "1",
        "ZWALK_TEST_NETNS": "123",
        "ZWALK_FUZZ_SEED": "7",
        "_ZWALK_COMPLETE": "bash_source",
        "zwalk_node_port": "1",  # not ours: settings are upper case
        "HOME": "/home/me",
    }
    got = c.layers(None, env)
    assert got.cfg == c.Config()
    assert len(got.warnings) == 2, got.warnings
    nodes, prot = got.warnings
    assert prot.startswith("environment variable ZWALK_NODE_PROT is not a zwalk setting (ignored)")
    assert "known: ZWALK_NODE_NAME, ZWALK_NODE_PORT, ZWALK_NODE_DATA_DIR" in prot
    assert "ZWALK_FIND" not in prot
    assert "ZWALK_NODES_PORT is not a zwalk setting" in nodes
    assert (
        "ZWALK_<SECTION>_<KEY>, SECTION one of FIND, NODE, PEERS, SHARE, TRANSFER, TRUST" in nodes
    )


# --- `zwalk config`: every layer, over real processes ---------------------------------------


def zwalk_config(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`zwalk config ARGS` with these ZWALK_ variables (the outer ones are gone: the fixture
    above)."""
    return subprocess.run(
        zwalk_cmd("config", *args),
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def by_key(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(k["section"], k["key"]): k for k in doc["keys"]}


def test_flags_win_over_the_environment_over_the_file_over_the_defaults(tmp_path: Path) -> None:
    f = tmp_path / "z.ini"
    f.write_text(
        "[node]\nport = 1111\ndata_dir = from-file\n[trust]\nmode = allowlist\n"
        "[find]\ntimeout = 5\nwalkers = 3\n"
    )
    env = {"ZWALK_NODE_PORT": "2222", "ZWALK_TRUST_MODE": "open", "ZWALK_NODE_DATA_DIR": "env"}
    env["ZWALK_FUZZ_SEED"] = "1"  # the suite's own: no warning (stderr stays empty)

    def layers(*args: str, env: dict[str, str]) -> dict[tuple[str, str], dict[str, Any]]:
        r = zwalk_config(tmp_path, "--config", str(f), "--json", *args, env=env)
        assert r.returncode == 0, r.stderr
        assert r.stderr == "", r.stderr
        return by_key(json.loads(r.stdout))

    def seen(k: dict[str, Any]) -> tuple[Any, str, str]:
        return k["value"], k["source"], k["detail"]

    only_file = layers(env={})
    assert seen(only_file["node", "port"]) == (1111, "file", str(f))
    assert seen(only_file["find", "timeout"]) == (5.0, "file", str(f))
    assert seen(only_file["trust", "mode"]) == ("allowlist", "file", str(f))
    assert seen(only_file["node", "data_dir"]) == (str(tmp_path / "from-file"), "file", str(f))
    assert seen(only_file["find", "ttl"]) == (0, "default", "")

    with_env = layers(env={**env, "ZWALK_FIND_TIMEOUT": "2.5"})
    assert seen(with_env["node", "port"]) == (2222, "env", "ZWALK_NODE_PORT")
    assert seen(with_env["find", "timeout"]) == (2.5, "env", "ZWALK_FIND_TIMEOUT")
    assert seen(with_env["find", "walkers"]) == (3, "file", str(f))  # the file still counts
    assert seen(with_env["trust", "mode"]) == ("open", "env", "ZWALK_TRUST_MODE")
    assert seen(with_env["node", "data_dir"]) == (
        str(tmp_path / "env"),
        "env",
        "ZWALK_NODE_DATA_DIR",
    )

    flags = layers("--trust", "allowlist", "--data-dir", "flag", "--peer", "h:9", env=env)
    assert seen(flags["trust", "mode"]) == ("allowlist", "flag", "--trust")
    assert seen(flags["node", "data_dir"]) == ("flag", "flag", "--data-dir")
    assert seen(flags["peers", "static"]) == (["h:9"], "flag", "--peer")
    assert seen(flags["node", "port"]) == (2222, "env", "ZWALK_NODE_PORT")

    defaults = by_key(json.loads(zwalk_config(tmp_path, "--json").stdout))
    assert seen(defaults["node", "port"]) == (c.DEFAULT_PORT, "default", "")
    assert seen(defaults["find", "timeout"]) == (10.0, "default", "")


def test_config_json_document(tmp_path: Path) -> None:
    key = "ab" * 32
    r = zwalk_config(
        tmp_path,
        "--json",
        "--interface",
        LOOPBACK,
        env={"ZWALK_PEERS_STATIC": f"{key}@10.0.0.2:47474, nas", "ZWALK_NODE_PROT": "1"},
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert list(doc) == ["config_file", "config_file_exists", "keys", "warnings"]
    assert doc["config_file"] == str(c.default_config_path())  # conftest made it a temp folder
    assert doc["config_file_exists"] is False
    assert [(k["section"], k["key"]) for k in doc["keys"]] == list(c.KEYS)
    for k in doc["keys"]:
        assert list(k) == ["section", "key", "value", "source", "detail", "env"]
        assert k["env"] == c.env_name(k["section"], k["key"])
    keys = by_key(doc)
    assert keys["peers", "static"]["value"] == [f"{key}@10.0.0.2:47474", "nas:47474"]
    assert keys["node", "interfaces"]["value"] == [LOOPBACK]
    assert keys["node", "interfaces"]["source"] == "flag"
    assert keys["share", "paths"]["value"] == []
    assert keys["transfer", "queue_target"]["value"] == 0.25
    assert [w.split(" is ")[0] for w in doc["warnings"]] == ["environment variable ZWALK_NODE_PROT"]
    assert "warning: environment variable ZWALK_NODE_PROT is not a zwalk setting" in r.stderr


def test_config_text_says_where_each_value_came_from(tmp_path: Path) -> None:
    f = tmp_path / "z.ini"
    f.write_text("[node]\nport = 1111\n")
    data = tmp_path / "data"
    r = zwalk_config(
        tmp_path,
        "--config",
        str(f),
        "--trust",
        "allowlist",
        "--data-dir",
        str(data),
        env={"ZWALK_FIND_TIMEOUT": "2.5"},
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"# config file: {f}"
    assert len(lines) == 1 + len(c.KEYS)
    assert f"[node] port = 1111  ({f})" in lines
    assert "[find] timeout = 2.5  (env ZWALK_FIND_TIMEOUT)" in lines
    assert "[trust] mode = allowlist  (flag --trust)" in lines
    assert f"[node] data_dir = {data}  (flag --data-dir)" in lines
    assert "[find] walkers = 16  (default)" in lines
    assert "[node] interfaces =  (default)" in lines
    assert not data.exists()  # it read the configuration; it started no node
    r = zwalk_config(tmp_path, "--config", str(tmp_path / "absent.ini"))
    assert r.returncode == 2 and "config file not found" in r.stderr


def test_bad_values_exit_2_with_one_line_naming_the_source(tmp_path: Path) -> None:
    r = zwalk_config(tmp_path, env={"ZWALK_NODE_PORT": "99999"})
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    assert r.stderr == (
        "error: environment variable ZWALK_NODE_PORT = '99999' ([node] port): want a whole "
        "number from 0 to 65535\n"
    )
    f = tmp_path / "z.ini"
    f.write_text("[find]\ntimeout = soon\n")
    r = zwalk_config(tmp_path, "--config", str(f))
    assert r.returncode == 2, r.stderr
    assert r.stderr == (
        f"error: {f}: [find] timeout = 'soon': want a number of seconds greater than 0\n"
    )
    r = zwalk_config(tmp_path, "--trust", "closed")
    assert r.returncode == 2 and "Invalid value for '--trust'" in r.stderr


# --- a command that uses what it is given -----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def test_serve_listens_on_the_port_of_the_environment_unless_a_flag_says_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = _free_port()
    monkeypatch.setenv("ZWALK_NODE_PORT", str(port))
    flagged = start_serve(tmp_path, "flagged", {"a.txt": b"a"})  # with --port 0
    try:
        assert not flagged.endpoint.endswith(f":{port}"), flagged.endpoint
    finally:
        flagged.stop()
    share, data = tmp_path / "share", tmp_path / "data"
    share.mkdir()
    proc = subprocess.Popen(
        zwalk_cmd("serve", str(share), "--interface", LOOPBACK, "--data-dir", str(data)),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not (data / "node.json").exists():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "serve did not start"
            time.sleep(0.05)
        time.sleep(0.1)  # written whole (it is replaced atomically, but to be sure)
        assert json.loads((data / "node.json").read_text())["endpoints"] == [f"{LOOPBACK}:{port}"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
