# The share index: content ids are what b3sum prints, chunk hashes are right, the cache works,
# and what must not be shared is not.
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import blake3
import pytest

from zwalk.core import protocol as p
from zwalk.core.query import parse_query
from zwalk.store import index as ix

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
    index = ix.scan([share], chunk_size=CS, exclude=[share / "downloaded"])
    rels = sorted(e.rel for e in index.entries)
    assert rels == ["share/a/copy-of-one.txt", "share/a/one.txt", "share/two.iso"]
    two = next(e for e in index.entries if e.name == "two.iso")
    assert index.by_cid(two.cid) is two
    assert [e.name for e in index.search(parse_query("*.ISO", icase=True))] == ["two.iso"]
    # Two paths with the same bytes are one hit.
    assert len(index.search(parse_query("*.txt"))) == 1


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this platform")
def test_scan_skips_pipes_instead_of_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "file").write_bytes(b"x")
    index = ix.scan([tmp_path], chunk_size=CS)
    assert [e.name for e in index.entries] == ["file"]


def test_unchanged_tree_is_not_rehashed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    share, cache = tmp_path / "share", tmp_path / "data" / "cache.cbor"
    _tree(share)
    first = ix.scan([share], chunk_size=CS, cache_path=cache)
    calls: list[Path] = []
    real = ix.hash_file

    def counting(
        path: Path, chunk_size: int, size: int, stop: object = None
    ) -> tuple[bytes, bytes]:
        calls.append(path)
        return real(path, chunk_size, size)

    monkeypatch.setattr(ix, "hash_file", counting)
    second = ix.scan([share], chunk_size=CS, cache_path=cache)
    assert calls == []
    assert [(e.path, e.cid, e.hashes) for e in second.entries] == [
        (e.path, e.cid, e.hashes) for e in first.entries
    ]
    # A changed file is hashed again, and only that one.
    target = share / "a" / "one.txt"
    target.write_bytes(b"changed")
    os.utime(target, ns=(1, 1))
    third = ix.scan([share], chunk_size=CS, cache_path=cache)
    assert calls == [target]
    assert (
        next(e for e in third.entries if e.path == target).cid == blake3.blake3(b"changed").digest()
    )


def test_damaged_cache_is_ignored(tmp_path: Path) -> None:
    share, cache = tmp_path / "share", tmp_path / "cache.cbor"
    _tree(share)
    cache.write_bytes(b"\xff\x00 not cbor")
    index = ix.scan([share], chunk_size=CS, cache_path=cache)
    assert len(index) == 4  # includes the download folder: nothing excluded here
    assert ix.load_cache(cache)  # and the cache was rewritten


def test_undecodable_file_names_are_skipped_not_fatal(tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    (share / "fine.txt").write_bytes(b"x")
    try:
        (share / os.fsdecode(b"bad-\xff.bin")).write_bytes(b"y")
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system refuses non-UTF-8 names")
    cache = tmp_path / "cache.cbor"
    index = ix.scan([share], chunk_size=CS, cache_path=cache)
    assert [e.name for e in index.entries] == ["fine.txt"]
    assert "cannot be shared" in index.skipped[0][1]
    assert ix.load_cache(cache)


def test_a_scan_stops_when_asked(tmp_path: Path) -> None:
    import threading

    (tmp_path / "a").write_bytes(b"x" * CS * 3)
    stop = threading.Event()
    stop.set()
    with pytest.raises(ix.Stopped):
        ix.scan([tmp_path], chunk_size=CS, stop=stop)
