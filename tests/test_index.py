# The share index: content ids are what b3sum prints, chunk hashes are right, what must not be
# shared is not, lookups agree with fnmatch at any size, changes on disk become index changes,
# and the copy on disk spares a restart the hashing.
from __future__ import annotations

import fnmatch
import os
import shutil
import stat
import subprocess
from dataclasses import replace
from pathlib import Path

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zwalk.core import protocol as p
from zwalk.core.query import Query, glob_literal, parse_query
from zwalk.store import hashing as ix
from zwalk.store.index import BLOCK, FileEntry, Index
from zwalk.store.indexdb import IndexDB
from zwalk.store.scanner import Removed, Scanner, roots, scan

CS = p.MIN_CHUNK_SIZE


def _b3sum(path: Path) -> str:
    exe = shutil.which("b3sum")
    if exe is None:
        # .ci/run installs b3sum; a developer machine without it gets told, not silently passed.
        pytest.fail("b3sum is not installed (Debian/Ubuntu: apt-get install b3sum; or cargo)")
    return subprocess.run(
        [exe, "--no-names", str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, CS - 1, CS, CS + 1, 5 * CS + 17])
def test_content_id_equals_b3sum(tmp_path: Path, size: int) -> None:
    f = tmp_path / "f.bin"
    f.write_bytes(os.urandom(size))
    cid, _ = ix.hash_file(f, CS, size)
    assert cid.hex() == _b3sum(f)
    assert ix.file_blake3(f).hex() == _b3sum(f)


def test_known_blake3_vector(tmp_path: Path) -> None:
    # The empty input's BLAKE3, from the BLAKE3 specification's test vectors.
    f = tmp_path / "empty"
    f.write_bytes(b"")
    cid, hashes = ix.hash_file(f, CS, 0)
    assert cid.hex() == "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    assert hashes == b""


def test_chunk_hashes(tmp_path: Path) -> None:
    data = os.urandom(3 * CS + 5)
    f = tmp_path / "f"
    f.write_bytes(data)
    cid, hashes = ix.hash_file(f, CS, len(data))
    assert len(hashes) == 4 * 32
    for i in range(4):
        assert hashes[i * 32 : (i + 1) * 32] == blake3.blake3(data[i * CS : (i + 1) * CS]).digest()


def test_chunk_size_grows_for_huge_files() -> None:
    assert ix.chunk_size_for(10 * 2**20, 2**20) == 2**20
    big = p.MAX_CHUNKS * 2**20 + 1
    cs = ix.chunk_size_for(big, 2**20)
    assert cs == 2**21 and p.chunk_count(big, cs) <= p.MAX_CHUNKS


def _tree(root: Path) -> None:
    (root / "a").mkdir(parents=True)
    (root / "a" / "one.txt").write_bytes(b"one")
    (root / "a" / "copy-of-one.txt").write_bytes(b"one")
    (root / "two.iso").write_bytes(os.urandom(CS * 2 + 3))
    (root / ".hidden").write_bytes(b"secret")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_bytes(b"x")
    (root / "downloaded").mkdir()
    (root / "downloaded" / "got.bin").write_bytes(b"got")
    (root / "half.iso.0123456789abcdef.part").write_bytes(b"partial")
    (root / "half.iso.0123456789abcdef.part.progress").write_bytes(b"record")


def test_scan_shares_what_it_should(tmp_path: Path) -> None:
    share = tmp_path / "share"
    _tree(share)
    index, _ = scan([share], chunk_size=CS, exclude=[share / "downloaded"])
    rels = [e.rel for e in index.entries]
    assert rels == ["share/a/copy-of-one.txt", "share/a/one.txt", "share/two.iso"]  # path order
    two = next(e for e in index.entries if e.name == "two.iso")
    assert two.path == share.resolve() / "two.iso"
    assert index.by_cid(two.cid) is two
    assert [e.name for e in index.search(parse_query("*.ISO", icase=True))] == ["two.iso"]
    # Two paths with the same bytes are one hit.
    assert len(index.search(parse_query("*.txt"))) == 1


def test_two_shared_folders_of_the_same_name_get_distinct_labels(tmp_path: Path) -> None:
    for side in ("left", "right"):
        (tmp_path / side / "photos").mkdir(parents=True)
        (tmp_path / side / "photos" / f"{side}.jpg").write_bytes(side.encode())
    index, _ = scan([tmp_path / "left" / "photos", tmp_path / "right" / "photos"], chunk_size=CS)
    assert [e.rel for e in index.entries] == ["photos-2/right.jpg", "photos/left.jpg"]
    assert [r.label for r in roots([tmp_path / "left" / "photos"] * 2)] == ["photos"]


def test_what_windows_and_macos_hide_is_not_shared() -> None:
    from types import SimpleNamespace

    from zwalk.store.scanner import hidden_by_flags

    windows = SimpleNamespace(st_file_attributes=stat.FILE_ATTRIBUTE_HIDDEN)
    macos = SimpleNamespace(st_flags=stat.UF_HIDDEN)
    plain = SimpleNamespace(st_file_attributes=stat.FILE_ATTRIBUTE_ARCHIVE, st_flags=0)
    assert hidden_by_flags(windows) and hidden_by_flags(macos)  # type: ignore[arg-type]
    assert not hidden_by_flags(plain)  # type: ignore[arg-type]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this platform")
def test_scan_skips_pipes_instead_of_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "file").write_bytes(b"x")
    index, _ = scan([tmp_path], chunk_size=CS)
    assert [e.name for e in index.entries] == ["file"]


def test_undecodable_file_names_are_skipped_not_fatal(tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    (share / "fine.txt").write_bytes(b"x")
    try:
        (share / os.fsdecode(b"bad-\xff.bin")).write_bytes(b"y")
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system refuses non-UTF-8 names")
    index, scanner = scan([share], chunk_size=CS)
    assert [e.name for e in index.entries] == ["fine.txt"]
    [why] = scanner.skipped.values()
    assert "cannot be shared" in why


def test_a_scan_stops_when_asked(tmp_path: Path) -> None:
    import threading

    (tmp_path / "a").write_bytes(b"x" * CS * 3)
    stop = threading.Event()
    stop.set()
    with pytest.raises(ix.Stopped):
        scan([tmp_path], chunk_size=CS, stop=stop)


# --- changes on disk become index changes ------------------------------------------------------


def _apply(index: Index, changes: list[FileEntry | Removed]) -> None:
    for c in changes:
        if isinstance(c, Removed):
            index.remove(c.rel)
        else:
            index.put(c)


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    import zwalk.store.scanner as scanner_mod

    calls: list[Path] = []
    real = scanner_mod.hash_file

    def counting(
        path: Path, chunk_size: int, size: int, stop: object = None
    ) -> tuple[bytes, bytes]:
        calls.append(path)
        return real(path, chunk_size, size)

    monkeypatch.setattr(scanner_mod, "hash_file", counting)
    return calls


def test_a_look_hashes_only_what_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    share = tmp_path / "share"
    _tree(share)
    index, scanner = scan([share], chunk_size=CS)
    calls = _counting(monkeypatch)
    changes: list[FileEntry | Removed] = []
    scanner.full(index, changes.extend)
    assert calls == [] and changes == []
    target = share / "a" / "one.txt"
    target.write_bytes(b"changed")
    os.utime(target, ns=(1, 1))
    (share / "two.iso").unlink()
    scanner.full(index, changes.extend)
    assert calls == [target.resolve()]
    _apply(index, changes)
    assert index.get("share/a/one.txt").cid == blake3.blake3(b"changed").digest()  # type: ignore[union-attr]
    assert index.get("share/two.iso") is None and len(index) == 3


def test_events_for_added_changed_moved_and_removed_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    share = (tmp_path / "share").resolve()
    (share / "docs").mkdir(parents=True)
    (share / "docs" / "a.txt").write_bytes(b"a" * 100)
    (share / "big.iso").write_bytes(b"i" * (3 * CS))
    index, scanner = scan([share], chunk_size=CS)
    calls = _counting(monkeypatch)

    (share / "new.txt").write_bytes(b"new")
    (share / "big.iso").rename(share / "renamed.iso")
    _apply(
        index, scanner.paths(index, [share / "new.txt", share / "big.iso", share / "renamed.iso"])
    )
    assert calls == [share / "new.txt"]  # the moved file kept its hashes
    assert index.get("share/big.iso") is None
    assert index.get("share/renamed.iso").cid == blake3.blake3(b"i" * (3 * CS)).digest()  # type: ignore[union-attr]

    shutil.rmtree(share / "docs")  # a folder that goes reports only itself
    _apply(index, scanner.paths(index, [share / "docs"]))
    assert sorted(e.rel for e in index) == ["share/new.txt", "share/renamed.iso"]

    (share / "sub" / "deep").mkdir(parents=True)  # a folder moved in: everything in it
    (share / "sub" / "deep" / "x.bin").write_bytes(b"x")
    (share / ".hidden.txt").write_bytes(b"h")
    _apply(index, scanner.paths(index, [share / "sub", share / ".hidden.txt", tmp_path / "other"]))
    assert sorted(e.rel for e in index) == [
        "share/new.txt",
        "share/renamed.iso",
        "share/sub/deep/x.bin",
    ]


def test_a_file_still_being_written_waits(tmp_path: Path) -> None:
    share = (tmp_path / "share").resolve()
    share.mkdir()
    (share / "fresh.bin").write_bytes(b"half")
    index, scanner = scan([share], chunk_size=CS)
    assert len(index) == 1
    (share / "fresh.bin").write_bytes(b"half and more")
    mtime = (share / "fresh.bin").stat().st_mtime_ns
    # Modified after the settling point: not hashed, the old entry goes, and it is retried.
    changes = scanner.paths(index, [share / "fresh.bin"], young_ns=mtime - 1)
    assert changes == [Removed("share/fresh.bin", str(share / "fresh.bin"))]
    assert scanner.retry == {share / "fresh.bin"}
    _apply(index, changes)
    [entry] = scanner.paths(index, [share / "fresh.bin"], young_ns=mtime)
    assert isinstance(entry, FileEntry) and entry.size == len(b"half and more")


# --- lookups at any size -----------------------------------------------------------------------


def _entry(rel: str, cid: bytes, size: int = 1) -> FileEntry:
    return FileEntry(root="/r", rel=rel, size=size, mtime_ns=0, cid=cid, chunk_size=CS, hashes=b"")


NAMES = st.text(alphabet=st.sampled_from("abAB.-_[]!*?é\u0301ßx0"), min_size=1, max_size=8).filter(
    lambda n: n not in (".", "..")
)


@given(
    names=st.lists(NAMES, min_size=1, max_size=30),
    pattern=st.text(alphabet=st.sampled_from("abAB.*?[]!-ßx\n"), min_size=1, max_size=6),
    icase=st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_glob_search_agrees_with_fnmatch(names: list[str], pattern: str, icase: bool) -> None:
    index = Index(_entry(f"s/{i}/{n}", bytes([i]) * 32) for i, n in enumerate(names))
    q = Query(kind=p.QueryKind.GLOB, pattern=pattern, icase=icase)
    got = {e.rel for e in index.search(q)}
    want = {f"s/{i}/{n}" for i, n in enumerate(names) if q.matches(n, b"")}
    assert got == want


@pytest.mark.timeout(20)
def test_a_glob_holding_a_line_break_matches_nothing_and_returns() -> None:
    """Found by the node fuzzer: a bit flip turned '*' into '\\n', the block views' separator,
    and the literal scan found the same separator forever, hanging the node's event loop."""
    index = Index(_entry(f"s/{i}/f{i}.bin", i.to_bytes(32, "big")) for i in range(BLOCK + 5))
    for pattern in ("\n", "*\n*", "f1\nf2", "[\n]*"):
        for icase in (False, True):
            q = Query(kind=p.QueryKind.GLOB, pattern=pattern, icase=icase)
            assert index.search(q) == []
    # A line break in a negated set still leaves the rest to match.
    q = Query(kind=p.QueryKind.GLOB, pattern="f1[!\n]*.bin", icase=False)
    assert len(index.search(q, limit=10**6)) == len(
        [i for i in range(BLOCK + 5) if str(i)[0] == "1" and i >= 10]
    )


@given(
    name=st.text(alphabet=st.sampled_from("ab.[]!-"), max_size=8),
    pattern=st.text(alphabet=st.sampled_from("ab.*?[]!-"), max_size=8),
)
@settings(max_examples=500, deadline=None)
def test_every_name_a_glob_matches_holds_its_literal(name: str, pattern: str) -> None:
    if fnmatch.fnmatchcase(name, pattern):
        assert glob_literal(pattern) in name


def test_lookups_by_name_and_content_id_and_changes_in_place() -> None:
    index = Index()
    for i in range(3 * BLOCK):  # more than one block, so that blocks split
        index.put(_entry(f"s/{i:05d}/f{i % 10}.bin", i.to_bytes(32, "big"), size=i))
    assert len(index) == 3 * BLOCK and index.total_bytes == sum(range(3 * BLOCK))
    assert len(index.search(parse_query("f3.bin"), limit=5)) == 5
    threes = sum(1 for i in range(3 * BLOCK) if i % 10 == 3)
    assert len(index.search(parse_query("F3.BIN", icase=True), limit=10**6)) == threes
    assert index.search(parse_query("F3.BIN")) == []
    cid = (77).to_bytes(32, "big")
    [hit] = index.search(parse_query("b3:" + cid.hex()))
    assert hit.rel == "s/00077/f7.bin"
    assert index.remove("s/00077/f7.bin") is hit
    assert index.by_cid(cid) is None and index.get(hit.rel) is None
    assert [e.rel for e in index.search(parse_query("f7.bin"), limit=2)] == [
        "s/00007/f7.bin",
        "s/00017/f7.bin",
    ]
    index.put(replace(hit, size=1))  # back, and replaced in place by a second put
    index.put(replace(hit, size=2))
    assert index.get(hit.rel).size == 2 and len(index) == 3 * BLOCK  # type: ignore[union-attr]
    assert [e.rel for e in index] == sorted(e.rel for e in index)


def test_pages_list_every_file_once_in_order() -> None:
    index = Index(_entry(f"s/{d}/{n}", bytes([d, n]) * 16) for d in range(5) for n in range(50))
    seen: list[str] = []
    after = ""
    while True:
        page, after = index.page(after=after, limit=33)
        seen += [e.rel for e in page]
        if not after:
            break
    assert seen == sorted(f"s/{d}/{n}" for d in range(5) for n in range(50))
    # A folder, and a glob within it.
    page, cursor = index.page(prefix="s/3/", query=parse_query("4*"), limit=100)
    assert [e.rel for e in page] == ["s/3/4", *(f"s/3/4{n}" for n in range(10))]
    assert cursor == ""
    assert index.under("s/2") == [f"s/2/{n}" for n in sorted(map(str, range(50)))]


# --- the index's copy on disk ------------------------------------------------------------------


def test_the_copy_on_disk_round_trips_and_drops_what_left_the_shares(tmp_path: Path) -> None:
    share = (tmp_path / "share").resolve()
    _tree(share)
    index, scanner = scan([share], chunk_size=CS, exclude=[share / "downloaded"])
    db = IndexDB(tmp_path / "data" / "index.sqlite")
    db.open()
    db.write(list(index))
    db.write([Removed("share/two.iso", str(share / "two.iso"))])
    loaded = [e for batch in db.load(scanner.locate) for e in batch]
    assert sorted(loaded, key=lambda e: e.rel) == [e for e in index if e.name != "two.iso"]
    # Rows of a folder no longer shared are dropped when loaded.
    narrower = Scanner(roots([share / "a"]), CS)
    assert sorted(e.rel for b in db.load(narrower.locate) for e in b) == [
        "a/copy-of-one.txt",
        "a/one.txt",
    ]
    assert db.count() == 2
    db.close()


def test_a_damaged_copy_is_put_aside(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    path.write_bytes(b"\xff\x00 not sqlite" * 100)
    db = IndexDB(path)
    db.open()
    assert db.count() == 0
    assert (tmp_path / "index.sqlite.damaged").exists()
    db.close()
