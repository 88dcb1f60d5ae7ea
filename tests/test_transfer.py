# The chunk scheduler, driven by hand: windows, verification verdicts, failures, completion.
from __future__ import annotations

from zwalk import protocol as p
from zwalk.transfer import ChunkScheduler

CS = p.MIN_CHUNK_SIZE


def info(chunks: int, tail: int = 0) -> p.FileInfo:
    size = chunks * CS + tail
    n = p.chunk_count(size, CS)
    return p.FileInfo(
        req=0,
        cid=b"\1" * 32,
        size=size,
        chunk_size=CS,
        hashes=bytes(range(n)) * 32 if n < 256 else b"\0" * 32 * n,
    )


def test_windows_are_filled_round_robin_and_refilled() -> None:
    s = ChunkScheduler(info(10), ["a", "b"], window=3, timeout=5)
    first = s.requests(0)
    assert len(first) == 6
    assert sorted(i for _, i in first) == list(range(6))
    assert {src for src, _ in first} == {"a", "b"}
    assert s.requests(0) == []  # windows full
    src, i = first[0]
    s.on_good(src, i, 1)
    again = s.requests(1)
    assert again == [(src, 6)]


def test_last_chunk_is_short() -> None:
    s = ChunkScheduler(info(2, tail=100), ["a"], window=8, timeout=5)
    assert s.count == 3 and s.span(2) == (2 * CS, 100)


def test_completion_and_byte_counts() -> None:
    s = ChunkScheduler(info(3, tail=7), ["a"], window=8, timeout=5)
    for src, i in s.requests(0):
        s.on_good(src, i, 0)
    assert s.complete and s.bytes_done == 3 * CS + 7
    assert s.sources["a"].good == 4


def test_bad_chunk_excludes_the_source_and_its_work_goes_to_others() -> None:
    s = ChunkScheduler(info(6), ["liar", "honest"], window=2, timeout=5)
    reqs = s.requests(0)
    liar_chunks = [i for src, i in reqs if src == "liar"]
    s.on_bad("liar", liar_chunks[0], "hash mismatch", 1)
    assert s.sources["liar"].excluded and "hash mismatch" in s.sources["liar"].excluded
    assert not s.accepts("liar", liar_chunks[1])
    for src, i in reqs:
        if src == "honest":
            s.on_good(src, i, 1)
    while not s.complete:
        batch = s.requests(2)
        assert batch and all(src == "honest" for src, _ in batch)
        for src, i in batch:
            s.on_good(src, i, 2)
    assert s.sources["liar"].good == 0 and not s.stuck


def test_every_source_failing_means_stuck() -> None:
    s = ChunkScheduler(info(4), ["a", "b"], window=1, timeout=5)
    for src, i in s.requests(0):
        s.on_failure(src, i, "timed out", 5)
    assert s.stuck and not s.complete
    assert s.failure_reasons() == {"a": "timed out", "b": "timed out"}
    assert s.requests(6) == []


def test_overdue_and_deadline() -> None:
    s = ChunkScheduler(info(2), ["a"], window=2, timeout=5)
    s.requests(1.0)
    assert s.next_deadline() == 6.0
    assert s.overdue(5.9) == []
    assert sorted(s.overdue(6.0)) == [("a", 0), ("a", 1)]


def test_chunks_already_held_are_not_requested() -> None:
    s = ChunkScheduler(info(4), ["a"], window=8, timeout=5, have=[0, 2, 99])
    assert sorted(i for _, i in s.requests(0)) == [1, 3]
    assert s.bytes_done == 2 * CS


def test_empty_file_is_complete_at_once() -> None:
    s = ChunkScheduler(info(0), ["a"], window=8, timeout=5)
    assert s.complete and s.requests(0) == []
