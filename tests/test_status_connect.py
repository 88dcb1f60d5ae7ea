"""`zwalk status` and `zwalk connect` against a running `zwalk serve`: what it shares, how many
files it hashed, its peers, the downloads under way or paused in its download folder, and a
peer added without a restart (kept as a static peer). Real processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path

import blake3
from procs import LOOPBACK, ServeProcess, run_zwalk

from zwalk.core import protocol as p
from zwalk.store import resume
from zwalk.store.downloads import part_path
from zwalk.store.partfile import PartFile

Serve = Callable[..., ServeProcess]
CS = p.MIN_CHUNK_SIZE


def _info(data: bytes) -> p.FileInfo:
    n = p.chunk_count(len(data), CS)
    hashes = b"".join(blake3.blake3(data[i * CS : (i + 1) * CS]).digest() for i in range(n))
    return p.FileInfo(req=0, cid=blake3.blake3(data).digest(), size=len(data), chunk_size=CS,
                      hashes=hashes)  # fmt: skip


def _status(tmp_path: Path, node: ServeProcess) -> dict:  # type: ignore[type-arg]
    r = run_zwalk("status", "--json", "--data-dir", str(node.data_dir), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def test_status_shows_shares_peers_and_downloads(serve: Serve, tmp_path: Path) -> None:
    node = serve("a", {"x.txt": b"x" * 100, "sub/y.bin": b"y" * 5000})
    other = serve("b", {"z.txt": b"z"})
    downloads = tmp_path / "a" / "downloaded"
    downloads.mkdir(exist_ok=True)
    data = os.urandom(4 * CS + 10)
    info = _info(data)
    part = PartFile(part_path(downloads, "film.mkv", info.cid), info)
    try:
        for i in (0, 1):
            part.write_frame(memoryview(data)[i * CS : (i + 1) * CS], i, 1)
        part.save(bytes(resume.bitmap(info, {0, 1})))
        doc = _status(tmp_path, node)
        [d] = doc["downloads"]  # its record is locked by us: a download under way
        want = ("film.mkv", len(data), 2 * CS, "fetching")
        assert (d["name"], d["size"], d["verified"], d["state"]) == want
        assert d["cid"] == p.cid_to_text(info.cid)
    finally:
        part.close()
    (downloads / "photos").mkdir()  # a folder fetch keeps its tree
    nested = PartFile(part_path(downloads / "photos", "p.jpg", info.cid), info)
    nested.save(bytes(resume.bitmap(info, set())))
    nested.close()
    doc = _status(tmp_path, node)
    assert sorted((d["name"], d["state"]) for d in doc["downloads"]) == [
        ("film.mkv", "paused"),
        ("p.jpg", "paused"),
    ]
    assert doc["node"] == node.node and doc["name"] == "a"
    assert (doc["files"], doc["bytes"], doc["hashed"]) == (2, 5100, 2)
    assert doc["shares"] == [str(node.share.resolve())]
    assert doc["peers"] >= 1  # b, found on mDNS
    text = run_zwalk("status", "--data-dir", str(node.data_dir), cwd=tmp_path)
    assert "shares 2 files" in text.stdout and "paused" in text.stdout
    assert "film.mkv" in text.stdout
    del other


def test_a_find_into_the_nodes_own_download_folder_is_not_warned_about(
    serve: Serve, tmp_path: Path
) -> None:
    """`serve` in a folder shares it but never its download folder inside it: a find through
    that node saves there and must not say that what it fetches is shared."""
    holder = serve("b", {"song.mp3": b"la" * 1000})
    home = tmp_path / "home"
    home.mkdir()
    node = serve("a", {}, str(home), "--downloads", str(home / "downloaded"))  # home is shared
    r = run_zwalk("find", "song.mp3", "--data-dir", str(node.data_dir), cwd=home)
    assert r.returncode == 0, r.stderr
    assert "shared too" not in r.stderr
    assert (home / "downloaded" / "song.mp3").read_bytes() == b"la" * 1000
    del holder


def test_status_without_a_node_says_so(tmp_path: Path) -> None:
    r = run_zwalk("status", "--data-dir", str(tmp_path / "none"), cwd=tmp_path)
    assert r.returncode == 1 and "no zwalk node runs here" in r.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def test_connect_keeps_a_peer_that_answers_and_not_one_that_does_not(
    serve: Serve, tmp_path: Path
) -> None:
    node = serve("a", {"x.txt": b"x"})
    port = _free_port()
    r = run_zwalk("connect", f"{LOOPBACK}:{port}", "--data-dir", str(node.data_dir), cwd=tmp_path)
    assert r.returncode == 1 and "connection refused" in r.stderr and "not kept" in r.stderr
    r = run_zwalk("connect", "no-such-host.invalid", "--data-dir", str(node.data_dir),
                  cwd=tmp_path)  # fmt: skip
    assert r.returncode == 1 and "cannot resolve" in r.stderr
    # Not kept: a later command through the node is not told about them again.
    peers = run_zwalk("peers", "--json", "--data-dir", str(node.data_dir), cwd=tmp_path)
    assert not any(u["endpoint"].startswith("no-such-host") for u in
                   json.loads(peers.stdout)["unreachable"] if "static" in
                   {x["how"] for x in u["learned"]})  # fmt: skip
    later = serve("b", {"y.txt": b"y"}, "--port", str(port))
    r = run_zwalk("connect", f"{LOOPBACK}:{port}", "--data-dir", str(node.data_dir), cwd=tmp_path)
    assert r.returncode == 0 and f"connected to b ({later.node[:12]})" in r.stderr
    peers = run_zwalk("peers", "--json", "--data-dir", str(node.data_dir), cwd=tmp_path)
    [row] = [x for x in json.loads(peers.stdout)["peers"] if x["node"] == later.node]
    assert "static" in {x["how"] for x in row["learned"]}  # kept, and tried again if it goes
