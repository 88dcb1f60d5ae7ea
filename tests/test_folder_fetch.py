# `zwalk find FOLDER/`: every file under a folder that peers share, fetched with its tree. Real
# `zwalk serve` processes on 127.0.0.1 (and an in-process node that lies), real `zwalk find`;
# and the parts that decide where a file from the network may go, without sockets.
from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path

import blake3
import pytest
from procs import LOOPBACK, ServeProcess, find_async, run_zwalk
from test_find_e2e import LyingNode

from zwalk.cli.app import running
from zwalk.cli.folder import plan, version_note
from zwalk.core import protocol as p
from zwalk.core.query import parse_folder, parse_query
from zwalk.store import identity
from zwalk.store.config import Config
from zwalk.store.downloads import DownloadError, local_path, make_folders

Serve = Callable[..., ServeProcess]


def tree(root: Path) -> dict[str, bytes]:
    return {
        x.relative_to(root).as_posix(): x.read_bytes()
        for x in sorted(root.rglob("*"))
        if x.is_file()
    }


# --- over the network -------------------------------------------------------------------------


def test_a_folder_on_two_peers_arrives_whole_and_a_rerun_fetches_nothing(
    serve: Serve, tmp_path: Path
) -> None:
    shared = os.urandom(300_000)
    a_files = {
        "photos/2024/a.jpg": os.urandom(200_000),
        "photos/2024/shared.jpg": shared,
        "photos/x.txt": b"only on a",
        "photos/v.txt": b"older version",
        "docs/not-this.txt": b"outside the folder",
    }
    b_files = {
        "photos/2024/shared.jpg": shared,
        "photos/2023/deep/down/c.jpg": os.urandom(1_500_000),
        "photos/y.txt": b"only on b",
        "photos/v.txt": b"newer version, on b",
        "photography/not-this-either.txt": b"a sibling that starts alike",
    }
    a = serve("a", a_files)
    b = serve("b", b_files, mtimes={"photos/v.txt": 2_000_000_000})
    peers = ["--peer", a.endpoint, "--peer", b.endpoint]

    r = run_zwalk("find", "share/photos/", *peers, "--out", "dl", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    want = {f"share/{k}": v for k, v in {**a_files, **b_files}.items() if k.startswith("photos/")}
    want["share/photos/v.txt"] = b_files["photos/v.txt"]  # the newest version wins
    assert tree(tmp_path / "dl") == want
    assert doc["folder"] == "share/photos/" and doc["status"] == "downloaded"
    files = {f["path"]: f for f in doc["files"]}
    assert sorted(files) == sorted(want)
    assert all(f["status"] == "downloaded" for f in files.values())
    both = files["share/photos/2024/shared.jpg"]
    assert len(both["holders"]) == 2 and both["cid"] == "b3:" + blake3.blake3(shared).hexdigest()
    assert both["size"] == len(shared) and both["sources"]
    v = files["share/photos/v.txt"]
    assert v["versions"] == 2 and "newest" in v["note"] and v["holders"][0].startswith("b (")
    assert Path(v["file"]) == tmp_path / "dl" / "share" / "photos" / "v.txt"
    assert doc["fetched_bytes"] == sum(len(x) for x in want.values()) == doc["bytes"]
    assert sorted(x["name"] for x in doc["peers"]) == ["a", "b"]

    r = run_zwalk("find", "share/photos/2024/", *peers, "--out", "dl", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [f["status"] for f in doc["files"]] == ["present", "present"]
    assert doc["fetched_bytes"] == 0
    assert tree(tmp_path / "dl") == want  # no copies, no .part files

    r = run_zwalk("find", "share/photos/", *peers, "--out", "dl", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("here ") == len(want) and "0 fetched" in r.stderr
    assert "2 versions on the peers; took the newest" in r.stderr


def test_no_peer_has_the_folder_exits_1_and_options_that_make_no_sense_exit_2(
    serve: Serve, tmp_path: Path
) -> None:
    a = serve("a", {"photos/a.jpg": b"a"})
    r = run_zwalk("find", "share/nothing/", "--peer", a.endpoint, "--out", "dl", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "no peer shares anything under 'share/nothing/'" in r.stderr
    assert not (tmp_path / "dl").exists()
    r = run_zwalk("find", "share/nothing/", "--peer", a.endpoint, "--json", cwd=tmp_path)
    assert r.returncode == 1 and json.loads(r.stdout)["status"] == "not-found"
    for extra in (["-o", "x"], ["--pick", "1"], ["-i"]):
        r = run_zwalk("find", "share/", "--peer", a.endpoint, *extra, cwd=tmp_path)
        assert r.returncode == 2, (extra, r.stderr)
    r = run_zwalk("find", "../share/", "--peer", a.endpoint, cwd=tmp_path)
    assert r.returncode == 2 and "'..'" in r.stderr, r.stderr
    # --no-download lists; --all is welcome but changes nothing
    r = run_zwalk("find", "share/", "--peer", a.endpoint, "--no-download", "--all", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "listed" in r.stdout and "share/photos/a.jpg" in r.stdout
    assert not (tmp_path / "downloaded").exists()


async def test_a_file_no_holder_delivers_fails_alone_with_exit_3(
    serve: Serve, tmp_path: Path
) -> None:
    good = serve("good", {"photos/ok.txt": b"fine"})
    share = tmp_path / "liar" / "share"
    (share / "photos").mkdir(parents=True)
    bad = os.urandom(5 * p.MIN_CHUNK_SIZE)
    (share / "photos" / "bad.bin").write_bytes(bad)
    cfg = Config(
        name="liar",
        port=0,
        interfaces=(LOOPBACK,),
        data_dir=tmp_path / "liar" / "data",
        chunk_size=p.MIN_CHUNK_SIZE,
    )
    async with running(LyingNode(cfg, identity.ephemeral(), shares=[share])) as liar:
        for _ in range(200):  # until its share is indexed
            if liar.shares.index.by_cid(blake3.blake3(bad).digest()) is not None:
                break
            await asyncio.sleep(0.05)
        peers = ["--peer", good.endpoint, "--peer", str(liar.local.endpoints[0])]
        code, out, err = await find_async(
            tmp_path, "share/photos/", *peers, "--out", "dl", "--json"
        )
    assert code == 3, err
    doc = json.loads(out)
    files = {f["path"]: f for f in doc["files"]}
    assert doc["status"] == "download-failed"
    assert files["share/photos/ok.txt"]["status"] == "downloaded"
    assert files["share/photos/bad.bin"]["status"] == "failed"
    assert "do not add up" in files["share/photos/bad.bin"]["error"]
    assert tree(tmp_path / "dl") == {"share/photos/ok.txt": b"fine"}


# --- where a path from the network may go -----------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["../etc/passwd", "a/../../x", "a//b", "/abs/x", "a/./b", "a\\..\\b", "a/b\x00c", "a/", ".."],
)
def test_a_hostile_path_is_refused(tmp_path: Path, path: str) -> None:
    with pytest.raises(ValueError):
        local_path(tmp_path, path)


@pytest.mark.parametrize(
    ("path", "windows", "parts"),
    [
        ("photos/2024/a.jpg", False, ("photos", "2024", "a.jpg")),
        ("C:/x.txt", True, ("C_", "x.txt")),  # not a drive
        ("share/CON/aux.txt", True, ("share", "_CON", "_aux.txt")),
        ("share/trailing. /x", True, ("share", "trailing", "x")),
        ("share/a:b/c", False, ("share", "a:b", "c")),
        ("share/.../x", False, ("share", "...", "x")),
    ],
)
def test_each_part_of_a_path_gets_a_name_the_platform_can_store(
    tmp_path: Path, path: str, windows: bool, parts: tuple[str, ...]
) -> None:
    dest = local_path(tmp_path, path, windows=windows)
    assert dest.relative_to(tmp_path).parts == parts


def test_folders_are_made_without_following_links(tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "share").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(DownloadError, match="symbolic link"):
        make_folders(out, local_path(out, "share/photos/a.jpg").parent)
    assert list(elsewhere.iterdir()) == []
    (out / "file").write_bytes(b"x")
    with pytest.raises(DownloadError, match="not a folder"):
        make_folders(out, local_path(out, "file/a.jpg").parent)
    make_folders(out, local_path(out, "fine/deep/a.jpg").parent)
    assert (out / "fine" / "deep").is_dir()


def test_the_newest_version_of_a_path_wins_then_the_most_held() -> None:
    def hit(path: str, data: bytes, mtime: int) -> p.Hit:
        cid = blake3.blake3(data).digest()
        return p.Hit(
            name=path.rsplit("/", 1)[-1], path=path, size=len(data), cid=cid, mtime_ms=mtime
        )

    planned = plan(
        [
            ("a", [hit("s/x", b"old", 1000), hit("s/y", b"common", 5)]),
            ("b", [hit("s/x", b"new", 2000), hit("s/y", b"rare", 5)]),
            ("c", [hit("s/x", b"old", 1000), hit("s/y", b"common", 5), hit("s/z", b"z", 0)]),
        ]
    )
    assert [f.path for f in planned] == ["s/x", "s/y", "s/z"]
    x, y, z = planned
    assert x.chosen.holders == ["b"] and len(x.versions) == 2
    assert y.chosen.holders == ["a", "c"]
    assert "newest" in version_note(x, str) and "most peers" in version_note(y, str)
    assert version_note(z, str) == ""


def test_a_folder_query_is_a_path_ending_in_a_slash() -> None:
    assert parse_folder("photos/") == "photos/"
    assert parse_folder(" /photos/2024// ") == "photos/2024/"
    assert parse_folder("photos") is None and parse_folder("*.iso") is None
    for bad in ("/", "a//b/", "../x/", "a/./b/", "a\\b/"):
        with pytest.raises(ValueError):
            parse_folder(bad)
    with pytest.raises(ValueError, match="end it with '/'"):
        parse_query("photos/a.jpg")


def test_through_the_local_node_its_live_peers_are_listed(serve: Serve, tmp_path: Path) -> None:
    a = serve("a", {"music/one.flac": b"one", "music/sub/two.flac": b"two"})
    here = serve("here", {"mine.txt": b"mine"}, "--peer", a.endpoint)
    r = run_zwalk(
        "find", "share/music/", "--data-dir", str(here.data_dir), "--out", "dl", "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["peers_via"] == "local-node" and [x["name"] for x in doc["peers"]] == ["a"]
    assert tree(tmp_path / "dl") == {
        "share/music/one.flac": b"one",
        "share/music/sub/two.flac": b"two",
    }
