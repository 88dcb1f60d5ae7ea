# What a new user runs into in the first hour, each over real `zwalk` processes on 127.0.0.1
# (test_lab_first_hour.py has those that need several hosts).
from __future__ import annotations

import io
import json
import os
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path

import blake3
import pytest
from procs import ServeProcess, run_zwalk
from rich.console import Console

from zwalk.cli.render import TransferBar

Serve = Callable[..., ServeProcess]
MiB = 1 << 20


def doc_of(r: object) -> dict:  # type: ignore[type-arg]
    return json.loads(r.stdout)  # type: ignore[attr-defined,no-any-return]


# --- finding what is already here -----------------------------------------------------------


def test_a_file_already_in_the_download_folder_is_not_fetched_again(
    serve: Serve, tmp_path: Path
) -> None:
    data = os.urandom(3 * MiB)
    a = serve("a", {"big.bin": data})
    first = doc_of(run_zwalk("find", "big.bin", "--peer", a.endpoint, "--json", cwd=tmp_path))
    assert first["download"]["fetched_bytes"] == len(data)
    r = run_zwalk("find", "big.bin", "--peer", a.endpoint, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "already here:" in r.stderr and "nothing fetched" in r.stderr
    doc = doc_of(run_zwalk("find", "big.bin", "--peer", a.endpoint, "--json", cwd=tmp_path))
    d = doc["download"]
    assert d["already_present"] and d["received_bytes"] == 0 and d["fetched_bytes"] == 0
    assert sorted(x.name for x in (tmp_path / "downloaded").iterdir()) == ["big.bin"]


def test_your_own_shares_are_reported_not_fetched(serve: Serve, tmp_path: Path) -> None:
    """On a one-machine first test, `find` of a file the user shares said 'no peers found'."""
    a = serve("a", {"mine.txt": b"my own file"})
    r = run_zwalk("find", "mine.txt", "--data-dir", str(a.data_dir), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"you share this already, at {a.share / 'mine.txt'}" in r.stderr
    assert "this node" in r.stdout and "mine.txt" in r.stdout
    doc = doc_of(
        run_zwalk("find", "mine.txt", "--data-dir", str(a.data_dir), "--json", cwd=tmp_path)
    )
    assert doc["status"] == "found" and doc["downloads"] == []
    assert [h["path"] for h in doc["local"]] == [str(a.share / "mine.txt")]
    assert not (tmp_path / "downloaded").exists()


# --- the download folder --------------------------------------------------------------------


def test_find_through_a_node_saves_into_its_download_folder(serve: Serve, tmp_path: Path) -> None:
    """`serve --downloads DIR` is where finds through that node save, so that a find run inside
    a shared folder does not put the file where the node shares it again."""
    b = serve("b", {"wanted.txt": b"from b"})
    a = serve("a", {"a.txt": b"a"})  # its downloads: tmp/a/downloaded (procs.start_serve)
    inside = a.share  # the user runs find from inside the folder a shares
    r = run_zwalk("find", "wanted.txt", "--data-dir", str(a.data_dir), "--peer", b.endpoint,
                  cwd=inside)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "a" / "downloaded" / "wanted.txt").read_bytes() == b"from b"
    assert not (inside / "downloaded").exists()
    r = run_zwalk("find", "wanted.txt", "--data-dir", str(a.data_dir), "--out", str(inside / "x"),
                  cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0 and "which the local node shares" in r.stderr, r.stderr


def test_a_download_folder_that_cannot_be_used_is_an_error_before_any_search(
    tmp_path: Path,
) -> None:
    (tmp_path / "file").write_text("x")
    r = run_zwalk("find", "x.iso", "--out", str(tmp_path / "file" / "dl"), cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "cannot save into" in r.stderr and "not a folder" in r.stderr
    assert "no peers found" not in r.stderr  # it did not search
    r = run_zwalk("find", "x.iso", "--out", str(tmp_path / "file"), cwd=tmp_path)
    assert r.returncode == 2 and "is a file" in r.stderr, r.stderr


# --- several hits -------------------------------------------------------------------------


def test_every_match_is_listed_and_versions_are_picked_by_holders_then_age(
    serve: Serve, tmp_path: Path
) -> None:
    old, new = b"version one", b"version two, newer"
    a = serve("a", {"one.txt": b"1", "two.txt": b"2", "same.txt": old})
    b = serve("b", {"three.txt": b"3", "same.txt": new}, mtimes={"same.txt": 2_000_000_000})
    c = serve("c", {"four.txt": b"4", "same.txt": old})
    peers = [x for s in (a, b, c) for x in ("--peer", s.endpoint)]
    doc = doc_of(run_zwalk("find", "*.txt", "--no-download", "--json", *peers, cwd=tmp_path))
    names = sorted(h["name"] for h in doc["hits"])
    assert names == ["four.txt", "one.txt", "same.txt", "same.txt", "three.txt", "two.txt"]
    # same.txt comes in two versions: the one with two holders first, though it is older
    versions = [h for h in doc["hits"] if h["name"] == "same.txt"]
    assert [len(h["holders"]) for h in versions] == [2, 1]
    r = run_zwalk("find", "same.txt", *peers, "--out", "dl", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "dl" / "same.txt").read_bytes() == old
    assert "1 other hit listed above: fetch one with --pick N" in r.stderr
    assert r.stdout.splitlines()[0].startswith("1  same.txt")  # numbered, for --pick
    r = run_zwalk("find", "same.txt", *peers, "--out", "dl2", "--pick", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "dl2" / "same.txt").read_bytes() == new, r.stdout + r.stderr
    r = run_zwalk("find", "same.txt", *peers, "--pick", "3", cwd=tmp_path)
    assert r.returncode == 2 and "--pick 3: there are only 2 hits" in r.stderr
    # with as many holders each, the newest wins
    c.stop()  # it leaves (bye, mDNS goodbye): v1 is on a alone now
    two = [x for s in (a, b) for x in ("--peer", s.endpoint)]
    for _ in range(3):  # and always the same one, whichever peer the walk met first
        d = doc_of(run_zwalk("find", "same.txt", *two, "--no-download", "--json", cwd=tmp_path))
        assert d["hits"][0]["cid"] == "b3:" + blake3.blake3(new).hexdigest()


# --- how a query is read ------------------------------------------------------------------


def test_the_hex_that_b3sum_prints_finds_the_file(serve: Serve, tmp_path: Path) -> None:
    data = os.urandom(50_000)
    a = serve("a", {"photo.jpg": data})
    hexdigest = blake3.blake3(data).hexdigest()
    r = run_zwalk("find", hexdigest, "--peer", a.endpoint, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "as a content id" in r.stderr
    assert (tmp_path / "downloaded" / "photo.jpg").read_bytes() == data


def test_a_name_matches_in_either_unicode_form(serve: Serve, tmp_path: Path) -> None:
    nfd = unicodedata.normalize("NFD", "café.txt")  # as macOS spells it on disk
    a = serve("a", {nfd: b"coffee"})
    r = run_zwalk("find", "café.txt", "--peer", a.endpoint, "--out", "dl", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "dl" / nfd).read_bytes() == b"coffee"


def test_not_found_says_what_to_try(serve: Serve, tmp_path: Path) -> None:
    a = serve("a", {"Report.pdf": b"r"})
    r = run_zwalk("find", "report.pdf", "--peer", a.endpoint, cwd=tmp_path)
    assert r.returncode == 1
    assert "not found: 'report.pdf' (asked 1 of 1 peer in" in r.stderr
    assert "try -i" in r.stderr and "'*report.pdf*'" in r.stderr and "hidden files" in r.stderr


def test_a_flood_says_how_many_peers_it_asked(serve: Serve, tmp_path: Path) -> None:
    a, b = serve("a", {"a.txt": b"a"}), serve("b", {"b.txt": b"b"})
    peers = ["--peer", a.endpoint, "--peer", b.endpoint]
    r = run_zwalk("find", "absent", "--strategy", "flood", *peers, cwd=tmp_path)
    assert r.returncode == 1 and "asked 2 of 2 peers" in r.stderr, r.stderr


# --- what the screen shows ------------------------------------------------------------------


def test_the_hit_table_keeps_its_columns_with_wide_names_and_names_holders_with_ids(
    serve: Serve, tmp_path: Path
) -> None:
    a = serve("a", {"報告書.pdf": b"cjk", "plain-name.pdf": b"latin"})
    r = run_zwalk("find", "*.pdf", "--peer", a.endpoint, "--no-download", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if "b3:" in line]
    from rich.cells import cell_len

    starts = {cell_len(line[: line.index("b3:")]) for line in rows}
    assert len(rows) == 2 and len(starts) == 1, rows  # the content ids line up on screen
    assert all(f"a ({a.node[:12]})" in line for line in rows)


def test_two_versions_of_one_name_are_told_apart_by_their_paths(
    serve: Serve, tmp_path: Path
) -> None:
    a = serve("a", {"song.mp3": b"single", "album/song.mp3": b"album version"})
    r = run_zwalk("find", "song.mp3", "--peer", a.endpoint, "--no-download", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = sorted(line.split()[1] for line in r.stdout.splitlines() if "b3:" in line)
    assert rows == ["share/album/song.mp3", "share/song.mp3"]


def test_warnings_read_like_the_commands_own_and_v_shows_the_steps(tmp_path: Path) -> None:
    r = run_zwalk("find", "x", "--peer", "127.0.0.1:1", cwd=tmp_path)
    assert r.returncode == 1
    assert " WARNING " not in r.stderr and " INFO " not in r.stderr  # no log-record lines
    r = run_zwalk("find", "x", "--peer", "127.0.0.1:1", "-v", cwd=tmp_path)
    assert " INFO zwalk.cli.searching: no local node: browsing mDNS on 127.0.0.1" in r.stderr


def test_the_progress_bar_starts_at_what_a_resume_kept_and_its_rate_is_this_runs() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with TransferBar(console, "big.iso") as bar:
        bar.update(60 * MiB, 100 * MiB, 1)  # resumed: 60 MiB were there already
        task = bar._progress.tasks[0]
        assert task.description == "resuming big.iso" and task.completed == 60 * MiB
        assert task.fields["rate"] is None  # no figure before there is one to give
        t0 = bar._samples[0][0]
        bar._samples[0] = (t0 - 1.0, 60 * MiB)  # as if a second ago
        bar.update(62 * MiB, 100 * MiB, 2)
        rate = bar._progress.tasks[0].fields["rate"]
        assert 1.9 * MiB < rate < 2.1 * MiB  # 2 MiB in a second, not 62
        assert bar._progress.tasks[0].fields["sources"] == "2 sources"


# --- commands and their help ----------------------------------------------------------------


def test_help_states_defaults_and_exit_codes_and_a_typo_gets_a_suggestion(tmp_path: Path) -> None:
    serve_help = " ".join(run_zwalk("serve", "--help", cwd=tmp_path).stdout.split())
    assert "default 47474" in serve_help and "Exit status:" in serve_help
    find_help = " ".join(run_zwalk("find", "--help", cwd=tmp_path).stdout.split())
    assert "it starts with 1 and doubles" in find_help and "Exit status: 0 found" in find_help
    for cmd in ("peers", "doctor", "demo"):
        assert "Exit status:" in run_zwalk(cmd, "--help", cwd=tmp_path).stdout, cmd
    r = run_zwalk("fnid", "x", cwd=tmp_path)
    assert r.returncode == 2 and "Did you mean 'find'?" in r.stderr


def test_demo_refuses_options_it_would_ignore(tmp_path: Path) -> None:
    r = run_zwalk("demo", "--peer", "10.0.0.1:1", cwd=tmp_path)
    assert r.returncode == 2 and "--peer do not apply" in r.stderr


def test_bad_interface_and_taken_port_are_one_clear_line_each(serve: Serve, tmp_path: Path) -> None:
    for cmd in (("find", "x"), ("peers",), ("serve", "--port", "0")):
        r = run_zwalk(*cmd, "--interface", "10.1.1.1", cwd=tmp_path, timeout=30)
        assert r.returncode == 2, (cmd, r.stderr)
        assert "10.1.1.1 is not an address of this host" in r.stderr
        assert "Traceback" not in r.stderr
    r = run_zwalk("doctor", "--interface", "10.1.1.1", "--json", cwd=tmp_path, timeout=30)
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert r.returncode == 1 and checks["interfaces"]["level"] == "problem"
    assert "is not an address of this host" in checks["interfaces"]["detail"]
    assert not any("another program" in c["advice"] for c in checks.values())
    a = serve("a", {"x": b"x"})
    port = a.endpoint.rsplit(":", 1)[1]
    r = run_zwalk("serve", str(a.share), "--port", port, "--data-dir", str(tmp_path / "d2"),
                  cwd=tmp_path, timeout=30)  # fmt: skip
    assert r.returncode == 1 and "[Errno" not in r.stderr
    assert f"cannot listen on 127.0.0.1:{port}: the port is taken" in r.stderr


def test_serving_a_home_folder_warns_that_it_goes_to_the_whole_lan(tmp_path: Path) -> None:
    import subprocess

    from procs import zwalk_cmd

    home = tmp_path / "home"
    home.mkdir()
    proc = subprocess.Popen(
        zwalk_cmd("serve", str(home), "--port", "0", "--interface", "127.0.0.1",
                  "--data-dir", str(tmp_path / "d")),
        env={**os.environ, "HOME": str(home)}, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert "holds your whole home folder" in first and "open trust mode" in first, first


# --- peers that do not answer ----------------------------------------------------------------


def test_an_unreachable_peer_is_named_with_the_reason(serve: Serve, tmp_path: Path) -> None:
    r = run_zwalk("find", "x", "--peer", "127.0.0.1:1", cwd=tmp_path)
    assert r.returncode == 1
    assert "no peer answered; tried: 127.0.0.1:1, named with --peer: connection refused" in (
        r.stderr
    )
    doc = doc_of(run_zwalk("find", "x", "--peer", "127.0.0.1:1", "--json", cwd=tmp_path))
    assert any("127.0.0.1:1" in e and "connection refused" in e for e in doc["errors"])
    r = run_zwalk("peers", "--peer", "127.0.0.1:1", cwd=tmp_path)
    assert r.returncode == 1 and "127.0.0.1:1: connection refused" in r.stdout
    assert "no peers found" in r.stdout and "--peer HOST[:PORT]" in r.stdout
    # the same through a running node
    a = serve("a", {"a.txt": b"a"})
    via = ("--data-dir", str(a.data_dir))
    doc = doc_of(run_zwalk("find", "x", *via, "--peer", "127.0.0.1:1", "--json", cwd=tmp_path))
    assert doc["peers_via"] == "local-node"
    assert any("127.0.0.1:1" in e and "connection refused" in e for e in doc["errors"])
    peers = doc_of(run_zwalk("peers", *via, "--peer", "127.0.0.1:1", "--json", cwd=tmp_path))
    assert [u["endpoint"] for u in peers["unreachable"]] == ["127.0.0.1:1"]
    assert peers["self"]["endpoints"] == [a.endpoint]  # where it listens, never []


def test_peers_counts_in_words(serve: Serve, tmp_path: Path) -> None:
    a = serve("a", {"a.txt": b"a"})
    r = run_zwalk("peers", "--peer", a.endpoint, cwd=tmp_path)
    assert r.returncode == 0 and "1 peer (via mDNS)" in r.stdout, r.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT, which Windows cannot send")
def test_ctrl_c_before_any_download_says_only_interrupted(tmp_path: Path) -> None:
    import signal
    import subprocess
    import time

    from procs import zwalk_cmd

    # 127.0.0.1:1 refuses: the find waits a few seconds for the diagnosis before it searches
    proc = subprocess.Popen(
        zwalk_cmd("--interface", "127.0.0.1", "find", "x", "--peer", "127.0.0.1:1", "-v"),
        cwd=tmp_path, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    deadline = time.monotonic() + 20
    while "browsing mDNS" not in proc.stderr.readline():  # its node runs: in the search phase
        assert time.monotonic() < deadline and proc.poll() is None
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "error: interrupted" in err and "go on from where it stopped" not in err


def test_shell_completion_works_as_the_readme_says(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, "_ZWALK_COMPLETE": "bash_source"}
    script = subprocess.run(
        [sys.executable, "-m", "zwalk"], env=env, capture_output=True, text=True, timeout=30,
        check=False,
    ).stdout  # fmt: skip
    assert "complete " in script and "_zwalk_completion" in script
    env = {**os.environ, "_ZWALK_COMPLETE": "bash_complete", "COMP_WORDS": "zwalk fi",
           "COMP_CWORD": "1"}  # fmt: skip
    words = subprocess.run(
        [sys.executable, "-m", "zwalk"], env=env, capture_output=True, text=True, timeout=30,
        check=False,
    ).stdout  # fmt: skip
    assert "plain,find" in words.splitlines()
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "_ZWALK_COMPLETE=bash_source zwalk" in readme
