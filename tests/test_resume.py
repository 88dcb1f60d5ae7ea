# The progress record beside a .part file, and the .part file itself: the record's codec, the
# lock that gives one process the .part, verification of claimed chunks, and the whole-file hash
# fed in file order whatever order chunks arrive in.
from __future__ import annotations

import errno
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import blake3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from zwalk.core import protocol as p
from zwalk.core.units import mib
from zwalk.store import resume
from zwalk.store.downloads import DownloadError, allocated, check_room, open_part, write_error
from zwalk.store.partfile import PartFile, progress_path

CS = p.MIN_CHUNK_SIZE


def _encode(info, done):
    return resume.encode_bits(info, resume.bitmap(info, done))


def info_for(data: bytes) -> p.FileInfo:
    n = p.chunk_count(len(data), CS)
    hashes = b"".join(blake3.blake3(data[i * CS : (i + 1) * CS]).digest() for i in range(n))
    return p.FileInfo(
        req=0, cid=blake3.blake3(data).digest(), size=len(data), chunk_size=CS, hashes=hashes
    )


@given(st.integers(0, 300), st.data())
def test_record_round_trip(chunks: int, data: st.DataObject) -> None:
    info = info_for(bytes(chunks * CS))
    done = data.draw(st.sets(st.integers(0, max(0, chunks - 1)), max_size=chunks))
    assert resume.decode(_encode(info, done), info) == (done if chunks else set())


def test_records_for_other_content_torn_or_edited_are_refused() -> None:
    info = info_for(os.urandom(5 * CS))
    record = _encode(info, {0, 3})
    other = info_for(os.urandom(5 * CS))
    with pytest.raises(resume.BadRecord, match="other content"):
        resume.decode(record, other)
    lied = p.FileInfo(req=0, cid=info.cid, size=info.size, chunk_size=CS, hashes=other.hashes)
    with pytest.raises(resume.BadRecord, match="hash list"):
        resume.decode(record, lied)
    with pytest.raises(resume.BadRecord, match="checksum"):
        resume.decode(record[:-20] + bytes([record[-20] ^ 1]) + record[-19:], info)
    with pytest.raises(resume.BadRecord, match="size"):
        resume.decode(record[:10], info)


def test_only_claimed_chunks_that_still_verify_are_kept(tmp_path: Path) -> None:
    data = os.urandom(6 * CS + 100)
    info = info_for(data)
    path = tmp_path / "f.part"
    part = PartFile(path, info)
    for i in (0, 2, 5, 6):
        good, bad = part.write_frame(memoryview(data)[i * CS : (i + 1) * CS], i, 1)
        assert good == [i] and bad == []
    part.save(bytes(resume.bitmap(info, {0, 2, 5, 6})))
    part.close()
    with open(path, "r+b") as f:  # chunk 5 is damaged on disk after it was recorded
        f.seek(5 * CS + 7)
        f.write(b"\0\0\0")
    again = PartFile(path, info)
    assert again.claimed() == {0, 2, 5, 6}
    assert again.verify(again.claimed()) == {0, 2, 6}
    again.close()


@pytest.mark.skipif(
    sys.platform == "win32", reason="fcntl is POSIX (test_portability checks the lock everywhere)"
)
def test_a_second_process_cannot_take_a_part_file_in_use(tmp_path: Path) -> None:
    info = info_for(os.urandom(2 * CS))
    first = PartFile(tmp_path / "f.part", info)
    code = (
        "import sys, fcntl\n"
        "f = open(sys.argv[1], 'rb')\n"
        "try:\n"
        "    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "except OSError:\n"
        "    sys.exit(3)\n"
    )
    locked = subprocess.run([sys.executable, "-c", code, str(progress_path(first.path))])
    assert locked.returncode == 3
    first.close()  # closing gives the lock up
    free = subprocess.run([sys.executable, "-c", code, str(progress_path(first.path))])
    assert free.returncode == 0


@given(seed=st.integers(0, 2**32 - 1), chunks=st.integers(0, 12), resumed=st.integers(0, 12))
def test_the_whole_hash_is_right_whatever_order_chunks_arrive_in(
    tmp_path_factory: pytest.TempPathFactory, seed: int, chunks: int, resumed: int
) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(chunks * CS + rng.randrange(CS))
    info = info_for(data)
    n = p.chunk_count(len(data), CS)
    path = tmp_path_factory.mktemp("whole") / "f.part"
    order = list(range(n))
    rng.shuffle(order)
    earlier, now = order[: min(resumed, n)], order[min(resumed, n) :]
    if earlier:  # an earlier attempt wrote some chunks
        first = PartFile(path, info)
        for i in earlier:
            first.write_frame(memoryview(data)[i * CS : (i + 1) * CS], i, 1)
        first.close()
    part = PartFile(path, info)
    assert part.verify(set(earlier)) == set(earlier)
    for i in now + now[:2]:  # and some twice, as end-game copies are
        part.write_frame(memoryview(data)[i * CS : (i + 1) * CS], i, 1)
    assert part.whole_digest() == info.cid
    part.close()


def test_the_whole_hash_waits_for_every_chunk(tmp_path: Path) -> None:
    data = os.urandom(3 * CS)
    info = info_for(data)
    part = PartFile(tmp_path / "f.part", info)
    part.write_frame(memoryview(data)[: 2 * CS], 0, 2)
    assert part.whole_digest() is None
    good, bad = part.write_frame(memoryview(bytes(CS)), 2, 1)  # wrong bytes: not written
    assert (good, bad) == ([], [2]) and part.whole_digest() is None
    part.write_frame(memoryview(data)[2 * CS :], 2, 1)
    assert part.whole_digest() == info.cid
    part.close()


def test_a_download_that_cannot_fit_is_refused_before_it_starts(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(DownloadError, match="not enough space"):
        check_room(tmp_path / "dl", tmp_path / "dl" / "x.part", free + (1 << 30))
    check_room(tmp_path / "dl", tmp_path / "dl" / "x.part", 1 << 20)  # this much fits


def test_two_copies_of_a_chunk_ahead_of_the_hash_are_held_once(tmp_path: Path) -> None:
    data = os.urandom(3 * CS)
    info = info_for(data)
    part = PartFile(tmp_path / "f.part", info)
    view = memoryview(data)
    for _ in range(2):  # an end-game copy of chunk 2 arrives twice, both ahead of chunk 0
        part.write_frame(view[2 * CS :], 2, 1)
    assert part._held == CS
    part.write_frame(view[: 2 * CS], 0, 2)
    assert part._held == 0 and part.whole_digest() == info.cid
    part.close()


def test_the_part_file_is_allocated_in_full_up_front_on_linux(tmp_path: Path) -> None:
    data = os.urandom(6 * CS + 100)
    part = PartFile(tmp_path / "f.part", info_for(data))
    try:
        st = os.fstat(part.fd)
        assert st.st_size == len(data)
        if sys.platform == "linux":  # fallocate: a too-full disk fails at the start
            assert st.st_blocks * 512 >= len(data)
    finally:
        part.close()


SHM = Path("/dev/shm")  # noqa: S108 - a private folder is made inside it


@pytest.mark.skipif(
    sys.platform != "linux" or not SHM.is_dir() or shutil.disk_usage(SHM).total >= p.MAX_FILE_SIZE,
    reason="needs Linux (fallocate) and a tmpfs smaller than the largest file",
)
def test_a_part_file_the_disk_cannot_hold_fails_at_once_and_leaves_nothing() -> None:
    # tmpfs checks its size limit before it allocates anything, so nothing fills up here
    shm = Path(tempfile.mkdtemp(dir=SHM))
    try:
        n = p.MAX_FILE_SIZE // p.MAX_CHUNK_SIZE
        huge = p.FileInfo(
            req=0, cid=bytes(32), size=p.MAX_FILE_SIZE, chunk_size=p.MAX_CHUNK_SIZE,
            hashes=bytes(32 * n),
        )  # fmt: skip
        with pytest.raises(OSError) as e:
            PartFile(shm / "f.part", huge)
        assert e.value.errno == errno.ENOSPC
        assert list(shm.iterdir()) == []
        # and a download says so as a full disk, not as a failed write
        with pytest.raises(DownloadError, match=f"not enough space in {shm}: the file needs"):
            open_part(shm, "f", huge.cid, huge)
        assert list(shm.iterdir()) == []
    finally:
        shutil.rmtree(shm)


def test_a_record_is_written_only_after_the_data_it_names_is_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a power loss relies on (a killed process keeps the page cache; a lost one does not):
    the .part's data is flushed before the record that claims it is written."""
    from zwalk.store import partfile

    data = os.urandom(2 * CS)
    info = info_for(data)
    part = PartFile(tmp_path / "f.part", info)
    calls: list[tuple[str, int]] = []
    write, sync = partfile._pwrite_all, getattr(os, "fdatasync", os.fsync)

    def logged_write(fd: int, data: bytes | memoryview, offset: int) -> None:
        calls.append(("write", fd))
        write(fd, data, offset)

    def logged_sync(fd: int) -> None:
        calls.append(("sync", fd))
        sync(fd)

    monkeypatch.setattr(partfile, "_pwrite_all", logged_write)
    monkeypatch.setattr(os, "fdatasync", logged_sync, raising=False)  # fsync's stand-in if none
    part.write_frame(memoryview(data)[:CS], 0, 1)
    part.save(bytes(resume.bitmap(info, {0})))
    record = part._rfd
    part.close()
    assert calls == [("write", part.fd), ("sync", part.fd), ("write", record)]
    assert resume.decode(progress_path(part.path).read_bytes(), info) == {0}


def test_a_record_is_due_at_once_when_more_than_the_limit_is_unrecorded(tmp_path: Path) -> None:
    """Records every SAVE_EVERY seconds alone let a crash on a fast link lose more than a window
    (measured: 3 MiB after a kill, the window 2.2 MiB); past the limit one is written at once."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from zwalk.net.saver import SAVE_EVERY, ProgressSaver

    class CountingPart(PartFile):
        saves: list[bytes] = []

        def save(self, bits: bytes) -> None:
            super().save(bits)
            self.saves.append(bits)

    data = os.urandom(4 * CS)
    part = CountingPart(tmp_path / "f.part", info_for(data))

    async def main() -> list[int]:
        saved = []
        with ThreadPoolExecutor(1) as pool:
            saver = ProgressSaver(part, pool)
            for i in range(4):
                part.write_frame(memoryview(data)[i * CS : (i + 1) * CS], i, 1)
                part.bits[0] |= 1 << i
                saver.mark(CS, limit=2 * CS)
                await asyncio.sleep(SAVE_EVERY / 10)  # well within SAVE_EVERY of each other
                saved.append(len(part.saves))
            await saver.flush()
        return saved

    # the first chunk is recorded at once, the second waits (under the limit), the third makes
    # two unrecorded and is recorded at once, the fourth waits again
    assert asyncio.run(main()) == [1, 1, 2, 2]
    part.close()


def test_a_disk_that_fills_up_mid_download_is_named_with_the_space_and_the_part_kept(
    tmp_path: Path,
) -> None:
    """Seen in the disk-full scenario: ENOSPC while writing said only "cannot write X.part:
    [Errno 28] ..." and claimed nothing kept, though the .part held verified chunks."""
    data = os.urandom(4 * CS)
    info = info_for(data)
    part = PartFile(tmp_path / "f.part", info)
    part.write_frame(memoryview(data)[CS : 2 * CS], 1, 1)
    part.bits[0] |= 1 << 1
    e = write_error(part, OSError(errno.ENOSPC, "No space left on device"))
    part.close()
    more = mib(len(data) - allocated(part.path))
    assert str(e).startswith(f"not enough space in {tmp_path}: the file needs {more} more, ")
    assert (e.part, e.kept, e.allocated) == (part.path, CS, allocated(part.path))
    own = PartFile(tmp_path / "g.part", info, private=True)  # removed on failure: keeps nothing
    e = write_error(own, OSError(errno.EIO, "Input/output error"))
    own.close()
    assert str(e) == f"cannot write {own.path}: Input/output error" and e.part is None
