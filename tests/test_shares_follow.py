"""Shares follow the disk (issue 14): a file added to a served folder is found by a find started
2 s later, a removed one is not, a changed one is served with its new hashes, a file still being
written is shared once it settles, and a restart hashes only what changed while it was down.
Real `zwalk serve` processes, real files, real file-system events."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import blake3
from procs import ServeProcess, run_zwalk, start_serve

Serve = Callable[..., ServeProcess]
NOTICE = 2.0  # the bound: a change is found by a find started this long after it


def _find(tmp_path: Path, query: str, *args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    r = run_zwalk("find", query, "--json", "--data-dir", str(tmp_path / "client"), *args,
                  cwd=tmp_path)  # fmt: skip
    assert r.stdout, r.stderr
    return r.returncode, json.loads(r.stdout)


def _ls(tmp_path: Path, node: ServeProcess, *args: str) -> dict:  # type: ignore[type-arg]
    r = run_zwalk("ls", node.endpoint, "--json", "--data-dir", str(tmp_path / "client"), *args,
                  cwd=tmp_path)  # fmt: skip
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def _cid(data: bytes) -> str:
    return "b3:" + blake3.blake3(data).hexdigest()


def test_added_removed_and_changed_files_are_seen_within_two_seconds(
    serve: Serve, tmp_path: Path
) -> None:
    node = serve("a", {"old.txt": b"old"})
    (node.share / "inbox").mkdir()
    (node.share / "inbox" / "new.txt").write_bytes(b"brand new")
    time.sleep(NOTICE)
    code, doc = _find(tmp_path, "new.txt", "--no-download")
    assert code == 0 and [h["cid"] for h in doc["hits"]] == [_cid(b"brand new")]

    (node.share / "old.txt").unlink()
    time.sleep(NOTICE)
    code, doc = _find(tmp_path, "old.txt", "--no-download")
    assert code == 1 and doc["hits"] == []

    changed = b"changed, and longer than before " * 1000
    (node.share / "inbox" / "new.txt").write_bytes(changed)
    time.sleep(NOTICE)
    out = tmp_path / "got"
    code, doc = _find(tmp_path, "new.txt", "--out", str(out))
    assert code == 0, doc
    assert [h["cid"] for h in doc["hits"]] == [_cid(changed)]
    assert Path(doc["download"]["path"]).read_bytes() == changed  # the new bytes, verified


def test_a_file_still_being_written_is_shared_once_it_settles(serve: Serve, tmp_path: Path) -> None:
    node = serve("a", {"keep.txt": b"k"})
    target = node.share / "growing.bin"
    stop = threading.Event()

    def write() -> None:
        with target.open("wb") as f:
            while not stop.is_set():
                f.write(os.urandom(4096))
                f.flush()
                time.sleep(0.1)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        time.sleep(NOTICE)
        listed = _ls(tmp_path, node)
        assert [f["path"] for f in listed["files"]] == ["share/keep.txt"]  # not yet
    finally:
        stop.set()
        writer.join()
    time.sleep(NOTICE)
    listed = _ls(tmp_path, node, "-m", "growing.bin")
    [entry] = listed["files"]
    assert entry["size"] == target.stat().st_size and entry["cid"] == _cid(target.read_bytes())


def test_a_restart_hashes_only_what_changed_meanwhile(serve: Serve, tmp_path: Path) -> None:
    files = {f"f{i:02d}.bin": os.urandom(2000 + i) for i in range(40)}
    node = serve("a", files)
    state = node.data_dir / "node.json"
    assert json.loads(state.read_text())["hashed"] == 40
    node.stop()
    (node.share / "f07.bin").write_bytes(b"changed while the node was down")
    (node.share / "f08.bin").unlink()

    again = start_serve(tmp_path, "a", {})
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the check against the disk runs after the start
            doc = json.loads(state.read_text())
            if doc["files"] == 39 and doc["hashed"] >= 1:
                break
            time.sleep(0.1)
        assert (doc["files"], doc["hashed"]) == (39, 1)  # only the changed file was read
        code, found = _find(tmp_path, "f07.bin", "--no-download")
        assert [h["cid"] for h in found["hits"]] == [_cid(b"changed while the node was down")]
    finally:
        again.stop()


def test_ls_pages_through_more_files_than_one_page_holds(serve: Serve, tmp_path: Path) -> None:
    files = {f"d{i % 7}/file-{i:04d}.txt": str(i).encode() for i in range(2345)}
    node = serve("big", files)
    doc = _ls(tmp_path, node)
    assert doc["listed"] == doc["total"] == 2345 > 2 * 1000  # three pages of at most 1000
    rows = doc["files"]
    assert [r["path"] for r in rows] == sorted(f"share/{rel}" for rel in files)
    for r in rows:
        assert set(r) == {"name", "path", "size", "cid", "mtime_ms", "modified"}
        data = files[r["path"].removeprefix("share/")]
        assert r["size"] == len(data) and r["cid"] == _cid(data)
        assert r["name"] == r["path"].rpartition("/")[2] and isinstance(r["mtime_ms"], int)
    assert set(doc) == {"peer", "under", "match", "ignore_case", "listed", "bytes", "total",
                        "files"}  # fmt: skip
    assert doc["peer"]["node"] == node.node and doc["peer"]["name"] == "big"
    under = _ls(tmp_path, node, "--under", "share/d3", "-m", "file-00*")
    assert [r["path"] for r in under["files"]] == sorted(
        f"share/{rel}" for rel in files if rel.startswith("d3/file-00")
    )


def test_peers_see_a_new_file_count_at_once(serve: Serve, tmp_path: Path) -> None:
    # Neither pings a quiet peer for 60 s (nor refreshes it for 10): what the watcher learns
    # sooner, the other node told it because its index changed.
    slow = tmp_path / "slow.ini"
    slow.write_text("[node]\nping_interval = 60\n")
    watcher = serve("a", {"a.txt": b"a"}, "--config", str(slow))
    node = serve("b", {"b.txt": b"b"}, "--config", str(slow))

    def count_seen() -> int | None:
        r = run_zwalk("peers", "--json", "--data-dir", str(watcher.data_dir), cwd=tmp_path)
        rows = [x for x in json.loads(r.stdout)["peers"] if x["node"] == node.node]
        return rows[0]["files"] if rows else None

    deadline = time.monotonic() + 10
    while count_seen() != 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    for i in range(3):
        (node.share / f"new-{i}.txt").write_bytes(b"n")
    time.sleep(NOTICE)
    assert count_seen() == 4
