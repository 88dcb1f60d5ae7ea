"""What a node shares and what a downloader writes stay where they belong: names from the
network are single components a platform can store, a share's links do not reach outside it
unless asked, and a read serves only the file that was indexed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from zwalk.core import protocol as p
from zwalk.store.downloads import MAX_LOCAL_NAME, local_name
from zwalk.store.index import FileEntry
from zwalk.store.reading import FileChanged, read_span
from zwalk.store.scanner import scan

CS = p.MIN_CHUNK_SIZE


# --- names from the network ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../etc", "..", ".", "a/b", "/abs", "\\share\\x", "C:\\x", "a\x00b", "tab\there", "\x7f", ""],
)
def test_a_name_that_is_not_one_plain_component_is_refused(name: str) -> None:
    with pytest.raises(p.ProtocolError):
        p.file_name(name)


@pytest.mark.parametrize(
    ("name", "windows", "local"),
    [
        ("C:x.txt", True, "C_x.txt"),  # a drive letter is not a folder here
        ("CON", True, "_CON"),
        ("nul.txt", True, "_nul.txt"),
        ("com1.log", True, "_com1.log"),
        ('what?<>|"*.txt', True, "what______.txt"),
        ("trailing. . ", True, "trailing"),
        ("C:x.txt", False, "C:x.txt"),  # fine on POSIX
        ("CON", False, "CON"),
    ],
)
def test_names_a_platform_cannot_store_are_mapped(name: str, windows: bool, local: str) -> None:
    assert local_name(name, windows=windows) == local


def test_an_over_long_name_is_cut_keeping_its_extension() -> None:
    name = "é" * 120 + ".tar.gz"  # 247 bytes
    out = local_name(name)
    assert len(out.encode()) <= MAX_LOCAL_NAME and out.endswith(".gz") and out.startswith("é")
    assert "/" not in out


# --- links in a share --------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_a_link_out_of_the_share_is_not_shared_unless_asked(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("not for the LAN")
    share = tmp_path / "share"
    share.mkdir()
    (share / "real.txt").write_text("shared")
    (share / "inside-link.txt").symlink_to(share / "real.txt")
    (share / "outside-link.txt").symlink_to(outside)
    (share / "loop").symlink_to(share / "loop")  # a link to itself: never followed

    index, scanner = scan([share], chunk_size=CS)
    names = sorted(e.name for e in index.entries)
    assert names == ["inside-link.txt", "real.txt"]
    [(path, why)] = scanner.skipped.items()
    assert path.name == "outside-link.txt" and "outside the shared folder" in why
    assert "links = follow" in why  # and how to share it anyway

    followed, _ = scan([share], chunk_size=CS, links="follow")
    assert sorted(e.name for e in followed.entries) == [
        "inside-link.txt",
        "outside-link.txt",
        "real.txt",
    ]


# --- a read serves the file that was indexed ---------------------------------------------------


def _entry(share: Path, name: str) -> FileEntry:
    [entry] = [e for e in scan([share], chunk_size=CS)[0].entries if e.name == name]
    return entry


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_a_file_swapped_for_a_link_with_the_same_size_and_time_is_refused(tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    shared = share / "doc.txt"
    shared.write_bytes(b"a" * 100)
    entry = _entry(share, "doc.txt")
    other = tmp_path / "other.txt"
    other.write_bytes(b"b" * 100)
    os.utime(other, ns=(entry.mtime_ns, entry.mtime_ns))
    shared.unlink()
    shared.symlink_to(other)  # same size, same modification time, other bytes
    buf = bytearray(100)
    with pytest.raises(FileChanged, match="another file"):
        read_span(entry.path, 0, memoryview(buf), entry.mtime_ns, entry.ino, entry.dev)
    assert buf == bytearray(100)  # nothing of it was read


def test_a_file_cut_short_under_the_same_time_is_refused(tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    shared = share / "big.bin"
    shared.write_bytes(os.urandom(3 * CS))
    entry = _entry(share, "big.bin")
    os.truncate(shared, CS + 10)  # truncated during a transfer, its time put back
    os.utime(shared, ns=(entry.mtime_ns, entry.mtime_ns))
    with pytest.raises(FileChanged, match="shorter"):
        read_span(
            entry.path, CS, memoryview(bytearray(2 * CS)), entry.mtime_ns, entry.ino, entry.dev
        )
    read_span(entry.path, 0, memoryview(bytearray(CS)), entry.mtime_ns, entry.ino, entry.dev)
