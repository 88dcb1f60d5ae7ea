# The chunk scheduler, driven by hand with a fake clock: frames, byte windows and their
# adaptation, verification verdicts, failures and retries, end-game, resume, completion.
# test_transfer_link.py drives it over simulated links of given rates and round trips.
from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from zwalk.core import protocol as p
from zwalk.core.sources import MIN_RATE, STALL_FACTOR, Request, unrecorded_limit
from zwalk.core.transfer import ChunkScheduler

CS = p.MIN_CHUNK_SIZE
FRAME = 4 * CS  # four chunks a frame in these tests


def info(chunks: int, tail: int = 0) -> p.FileInfo:
    size = chunks * CS + tail
    n = p.chunk_count(size, CS)
    return p.FileInfo(req=0, cid=b"\1" * 32, size=size, chunk_size=CS, hashes=b"\0" * 32 * n)


def sched(chunks: int, sources: list[str], tail: int = 0, **kw: object) -> ChunkScheduler[str]:
    opts: dict[str, object] = {"frame_bytes": FRAME, "window": 2 * FRAME, "stall_grace": 1.0}
    opts.update(kw)
    return ChunkScheduler(info(chunks, tail), sources, **opts)  # type: ignore[arg-type]


# Before a rate is measured, a frame is late after its bytes at MIN_RATE, times STALL_FACTOR, plus
# the grace: the deadline of a first frame sent at time 0.
FIRST_DUE = STALL_FACTOR * FRAME / MIN_RATE + 1.0


def what(r: Request[str]) -> tuple[str, int, int, bool]:
    return r.source, r.index, r.count, r.duplicate


def chunks_of(r: Request[str]) -> list[int]:
    return list(range(r.index, r.index + r.count))


def test_frames_are_runs_of_chunks_and_windows_are_bytes_filled_round_robin() -> None:
    s = sched(40, ["a", "b"])
    first = s.requests(0)
    assert [(r.source, r.index, r.count) for r in first] == [
        ("a", 0, 4),
        ("b", 4, 4),
        ("a", 8, 4),
        ("b", 12, 4),
    ]
    assert s.requests(0) == []  # both windows (2 frames) full until a rate is measured
    s.on_frame("a", 0, range(4), now=0.01)  # 64 KiB in 10 ms: a's window grows at once
    more = s.requests(0.01)
    assert what(more[0]) == ("a", 16, 4, False) and {r.source for r in more} == {"a"}
    assert len(more) > 1


def test_the_last_frame_and_chunk_are_short() -> None:
    s = sched(5, ["a"], tail=100)
    assert s.count == 6 and s.span(5) == (5 * CS, 100) and s.span(4, 4) == (4 * CS, CS + 100)
    assert [(r.index, r.count) for r in s.requests(0)] == [(0, 4), (4, 2)]


def test_completion_and_byte_counts() -> None:
    s = sched(3, ["a"], tail=7)
    for r in s.requests(0):
        assert s.on_frame(r.source, r.index, chunks_of(r), now=0) == chunks_of(r)
    assert s.complete and s.bytes_done == 3 * CS + 7 and s.sources["a"].good == 4


def test_a_bad_chunk_excludes_the_source_and_its_work_goes_to_others() -> None:
    s = sched(24, ["liar", "honest"])
    reqs = s.requests(0)
    liar = [r for r in reqs if r.source == "liar"]
    # chunk 1 of its first frame is bad; the others in the frame were fine and count
    s.on_frame("liar", liar[0].index, [0, 2, 3], [1], now=1)
    assert s.sources["liar"].excluded == "sent bad data for chunk 1: hash mismatch"
    assert s.done_chunks == {0, 2, 3}
    assert not s.accepts("liar", liar[1].index)  # its other frame is not awaited any more
    now = 2.0
    pending = [r for r in reqs if r.source == "honest"]
    while not s.complete:
        pending += s.requests(now)
        r = pending.pop(0)
        assert r.source == "honest"
        s.on_frame(r.source, r.index, chunks_of(r), now=now)
        now += 1
    assert s.sources["liar"].good == 3 and not s.stuck


def test_a_failing_source_backs_off_is_retried_and_dropped_after_three_in_a_row() -> None:
    s = sched(40, ["a", "b"], retry_after=1.0)
    reqs = s.requests(0)
    a_frames = [r.index for r in reqs if r.source == "a"]
    s.on_failure("a", a_frames[0], "timed out", 5)
    s.on_failure("a", a_frames[1], "timed out", 5)  # the same incident: already released
    assert s.sources["a"].failures == 1 and s.sources["a"].retry_at == 6.0
    assert all(r.source == "b" for r in s.requests(5.5))
    assert s.next_deadline() == FIRST_DUE  # b's first frame, sent at 0
    back = s.requests(6.0)
    # a's frames went back to the queue first; it is asked for less after a failure
    assert [(r.source, r.index) for r in back] == [("a", min(a_frames))]
    assert s.sources["a"].window == FRAME
    s.on_failure("a", back[0].index, "gone", 6.5)
    assert s.sources["a"].retry_at == 8.5  # twice as long
    s.on_failure("a", s.requests(8.5)[0].index, "gone", 9)
    assert s.sources["a"].excluded == "gone (3 times in a row)"
    assert not s.stuck  # b is still there


def test_a_good_frame_resets_the_failure_count() -> None:
    s = sched(40, ["a"], retry_after=1.0)
    s.on_failure("a", s.requests(0)[0].index, "timed out", 1)
    r = s.requests(2)[0]
    s.on_frame("a", r.index, chunks_of(r), now=2.1)
    assert s.sources["a"].failures == 0


def test_every_source_dropped_means_stuck() -> None:
    s = sched(8, ["a", "b"], max_failures=1)
    for r in s.requests(0):
        s.on_failure(r.source, r.index, "timed out", 5)
    assert s.stuck and not s.complete
    assert s.failure_reasons() == {
        "a": "timed out (1 times in a row)",
        "b": "timed out (1 times in a row)",
    }
    assert s.requests(6) == []


def test_a_source_is_late_when_nothing_arrives_for_what_its_frames_should_take() -> None:
    s = sched(8, ["a"])
    first, second = s.requests(1.0)
    assert s.next_deadline() == 1.0 + FIRST_DUE  # the oldest frame, at the assumed MIN_RATE
    assert s.overdue(1.0 + FIRST_DUE - 0.1) == []
    assert [(r.index, r.count) for r in s.overdue(1.0 + FIRST_DUE)] == [(0, 4)]  # the head
    s.on_arrival("a", first.index, first.serial, now=2.0)  # 64 KiB in one second
    assert s.sources["a"].rate == FRAME
    # the next frame's clock starts when the first arrived, at the measured rate
    assert s.next_deadline() == 2.0 + STALL_FACTOR * 1.0 + 1.0
    assert s.late_by("a", 5.0) == 3.0


def test_chunks_already_held_are_not_requested_and_holes_make_short_frames() -> None:
    s = sched(8, ["a"], have=[0, 2, 3, 99], window=4 * FRAME)
    assert [(r.index, r.count) for r in s.requests(0)] == [(1, 1), (4, 4)]
    assert s.bytes_done == 3 * CS


def test_empty_file_is_complete_at_once() -> None:
    s = sched(0, ["a"])
    assert s.complete and s.requests(0) == []


def test_end_game_duplicates_the_oldest_frame_and_the_first_answer_wins() -> None:
    s = sched(12, ["slow", "fast"])
    reqs = s.requests(0)  # slow: 0, 8; fast: 4
    assert [(r.source, r.index) for r in reqs] == [("slow", 0), ("fast", 4), ("slow", 8)]
    s.on_frame("fast", 4, range(4, 8), now=1)
    dup = s.requests(1)  # nothing left to hand out: fast copies slow's oldest frame
    assert [what(r) for r in dup] == [("fast", 0, 4, True)] and s.duplicates == 1
    assert s.requests(1) == []  # one copy per frame, and fast is busy again
    s.on_frame("fast", 0, range(4), now=2)
    assert not s.accepts("slow", 0)  # slow's copy is not awaited any more
    assert [what(r) for r in s.requests(2)] == [("fast", 8, 4, True)]
    s.on_frame("slow", 8, range(8, 12), now=3)  # the original came back first this time
    assert s.complete and not s.accepts("fast", 8)
    assert s.sources["fast"].good == 8 and s.sources["slow"].good == 4


def test_frame_and_window_follow_the_measured_rate_and_round_trip() -> None:
    s = ChunkScheduler(info(100_000), [], frame_bytes=256 * CS, max_window=1 << 30)
    s.add_source("a", rtt=0.01)
    now = 0.0

    def deliver(rate: float, frames: int) -> None:
        """Answer every frame out, as a link of `rate` bytes/s would, a few windows long."""
        nonlocal now
        for _ in range(frames):
            s.requests(now)
            o = min(s.sources["a"].outstanding.values(), key=lambda o: o.serial)
            now += o.nbytes / rate
            s.on_frame("a", o.index, range(o.index, o.index + o.count), now=now, serial=o.serial)

    deliver(1e6, 40)  # 1 MB/s: a frame is two chunks (~125 ms of it at most)
    a = s.sources["a"]
    assert a.rate is not None and 0.9e6 <= a.rate <= 1.1e6
    assert a.frame_chunks == int(a.rate * 0.125) // CS
    assert a.window == int(a.frame_chunks * CS + a.rate * (0.01 + 0.25))
    deliver(100e6, 300)  # 100 MB/s: frames as large as allowed, a quarter second in flight
    assert a.rate is not None and 90e6 <= a.rate <= 110e6
    assert a.frame_chunks == 256
    assert a.window == int(256 * CS + a.rate * 0.26)
    deliver(1e6, 40)  # the share dropped again: so do frame and window, once samples age
    assert a.rate is not None and a.rate <= 1.1e6 and a.frame_chunks <= 8


def test_a_slow_link_gets_one_frame_at_a_time_and_a_long_round_trip_two() -> None:
    """A chunk that takes longer than the queue target to send is a frame on its own; the next
    is asked for when it arrives, unless the round trip would leave the link idle too long."""
    for rtt, frames in ((0.001, 1), (0.05, 2)):
        s = ChunkScheduler(info(400), [], frame_bytes=FRAME)
        s.add_source("a", rtt=rtt)
        first = s.requests(0)[0]
        s.on_arrival("a", first.index, first.serial, now=first.count * CS / 50_000)  # 50 KB/s
        assert s.sources["a"].frame_chunks == 1
        assert s.sources["a"].window // CS == frames, rtt


def test_a_slow_source_gets_less_work() -> None:
    """Two sources, one answering a frame in 1 time unit and one in 4, each one frame at a time
    (as a link does): the fast one ends up with about four times the chunks."""
    s = sched(400, ["fast", "slow"], window=2 * FRAME)
    pace = {"fast": 1.0, "slow": 4.0}
    due: list[tuple[float, Request[str]]] = []
    free = {"fast": 0.0, "slow": 0.0}  # when each source's link is next idle
    now = 0.0
    while not s.complete:
        for r in s.requests(now):
            free[r.source] = max(free[r.source], now) + pace[r.source]
            due.append((free[r.source], r))
        due.sort(key=lambda x: x[0])
        now, r = due.pop(0)
        if s.accepts(r.source, r.index):
            s.on_frame(r.source, r.index, chunks_of(r), now=now)
    ratio = s.sources["fast"].good / s.sources["slow"].good
    assert 3.0 <= ratio <= 5.0, ratio


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    chunks=st.integers(0, 60),
    sources=st.integers(1, 4),
    have=st.sets(st.integers(0, 59), max_size=20),
)
def test_random_answers_never_break_the_bookkeeping(
    seed: int, chunks: int, sources: int, have: set[int]
) -> None:
    """Any mix of good frames, bad chunks, wrong replies, busy answers, failures, late sources,
    slow writes, replies that come after they were given up on, and time passing, driven as
    the download loop does (arrival first, the write later): memory stays within max_total,
    windows are never overfilled, no chunk is out to two sources but as an end-game copy,
    nothing done is asked for again, there is always something to wait for, and the download
    completes while the honest source is left (or is stuck once every source is dropped)."""
    rng = random.Random(seed)
    names = [f"s{i}" for i in range(sources)]
    honest = names[0]  # never lies, and fails only now and then
    s = sched(chunks, names, have=have, max_total=5 * FRAME, window=2 * FRAME, retry_after=0.5)
    now = 0.0
    out: list[Request[str]] = []  # every request sent and not yet answered, stale ones too
    writing: list[Request[str]] = []  # arrived, being verified and written
    for _ in range(3000):
        if s.complete or s.stuck:
            break
        for late in s.overdue(now):
            s.on_failure(late.source, late.index, "late", now, late.serial)
        asked = s.requests(now)
        for r in asked:
            assert all(i not in s.done_chunks for i in chunks_of(r))
            out.append(r)
        assert sum(x.held for x in s.sources.values()) <= s.max_total
        for name in {r.source for r in asked}:  # a window may shrink, but is never overfilled
            x = s.sources[name]
            assert x.in_flight <= x.window or len([r for r in asked if r.source == name]) == 1
        owners: dict[int, str] = {}
        for name, x in s.sources.items():
            for o in x.outstanding.values():
                for i in range(o.index, o.index + o.count):
                    if not o.duplicate:  # (a chunk a late copy brought meanwhile may be done)
                        assert owners.setdefault(i, name) == name
        due = s.next_deadline()
        assert out or writing or due is not None, "nothing out or due: the download would hang"
        if not out and not writing:
            assert due is not None
            now = max(now, due)  # the loop sleeps until something is due
            continue
        now += rng.random()
        if writing and (not out or rng.random() < 0.3):  # a write is done
            r = writing.pop(0)
            s.on_frame(r.source, r.index, chunks_of(r), now=now, serial=r.serial)
            continue
        r = out.pop(rng.randrange(len(out)))
        roll = rng.random()
        if roll < 0.08 and (r.source != honest or rng.random() < 0.3):
            s.on_failure(r.source, r.index, "timed out", now, r.serial)
        elif roll < 0.12:
            s.on_busy(r.source, r.index, now, r.serial)
        elif roll < 0.18 and r.source != honest:
            s.on_frame(
                r.source, r.index, chunks_of(r)[1:], chunks_of(r)[:1], now=now, serial=r.serial
            )
        elif roll < 0.22 and r.source != honest:  # a reply of the wrong length: nothing usable
            s.on_frame(r.source, r.index, [], chunks_of(r), now=now, serial=r.serial)
        elif s.accepts(r.source, r.index, r.serial):
            s.on_arrival(r.source, r.index, r.serial, now=now)
            writing.append(r)
        else:  # given up on, and here after all: the shell keeps what is still missing
            s.on_stale_arrival(r.source, now)
            todo = [i for i in chunks_of(r) if i not in s.done_chunks]
            if todo:
                s.on_frame(r.source, r.index, todo, now=now, serial=r.serial)
    assert s.complete or s.stuck
    if s.stuck:
        assert s.sources[honest].excluded is not None
    else:
        assert (
            s.bytes_done
            == info(chunks).size
            == sum(x.bytes for x in s.sources.values())
            + sum(s.span(i)[1] for i in have if i < s.count)
        )


def test_a_reply_that_brought_the_wrong_thing_puts_the_whole_frame_back() -> None:
    s = sched(16, ["a", "b"])
    s.requests(0)
    s.on_frame("a", 0, [], [0], now=1, reason="sent 5 bytes")  # a short payload: nothing usable
    assert s.sources["a"].excluded
    now = 2.0
    while not s.complete:
        batch = s.requests(now)
        assert batch or s.sources["b"].outstanding, "chunks lost: nothing left to ask for"
        for o in list(s.sources["b"].outstanding.values()):
            s.on_frame("b", o.index, range(o.index, o.index + o.count), now=now)
        now += 1
    assert s.done_chunks == set(range(16))


def test_a_stale_timeout_does_not_hit_a_newer_request_for_the_same_chunks() -> None:
    s = sched(8, ["a"], retry_after=1.0)
    old = s.requests(0)
    s.on_failure("a", old[0].index, "timed out", 10, old[0].serial)  # releases both frames
    new = s.requests(11)
    s.on_frame("a", new[0].index, chunks_of(new[0]), now=11.001, serial=new[0].serial)
    new += s.requests(11.001)
    assert {r.index for r in new} == {r.index for r in old}
    s.on_failure("a", old[1].index, "timed out", 15, old[1].serial)  # the old second timeout
    assert s.sources["a"].failures == 0 and s.accepts("a", new[1].index, new[1].serial)
    assert not s.accepts("a", old[0].index, old[0].serial)


def test_a_pause_that_is_over_is_no_deadline_and_busy_is_not_a_failure() -> None:
    s = sched(8, ["a", "b"], retry_after=1.0)
    reqs = s.requests(0)
    a = [r for r in reqs if r.source == "a"]
    s.on_busy("a", a[0].index, 1.0, a[0].serial)
    assert s.sources["a"].failures == 0 and s.sources["a"].window == FRAME  # halved
    assert s.sources["a"].retry_at == 1.25
    for r in reqs:
        if r.source == "b":
            s.on_frame("b", r.index, chunks_of(r), now=1.1)
    s.requests(2.0)  # a is usable again
    deadline = s.next_deadline()
    assert deadline is not None and deadline > 2.0  # a frame's timeout, not a pause long over


def test_a_reply_waiting_for_the_disk_does_not_time_the_source_out() -> None:
    s = sched(8, ["a"])
    first, second = s.requests(0)
    s.on_arrival("a", first.index, first.serial, now=0.5)  # here, but the disk is slow
    assert s.sources["a"].in_flight == FRAME  # room for another frame on the link ...
    assert s.sources["a"].held == 2 * FRAME  # ... but its bytes count until written
    due = s.next_deadline()
    assert due is not None and [(r.index, r.count) for r in s.overdue(due)] == [
        (second.index, second.count)  # only the frame still on its way can be late
    ]
    s.on_frame("a", first.index, chunks_of(first), now=100, serial=first.serial)
    assert s.sources["a"].failures == 0 and set(chunks_of(first)) <= s.done_chunks


def test_a_reply_given_up_on_that_comes_after_all_moves_the_deadline() -> None:
    s = sched(16, ["a"])
    old = s.requests(0)
    s.on_failure("a", old[0].index, "late", 10.0, old[0].serial)  # gives up on both frames
    assert s.requests(11.0)
    due = s.next_deadline()
    s.on_stale_arrival("a", 12.0)  # one of the old frames arrives: the link is delivering
    assert s.next_deadline() == due + 1.0  # type: ignore[operator]


def test_a_failure_keeps_frames_that_arrived_and_wait_for_the_disk() -> None:
    s = sched(16, ["a", "b"])
    reqs = [r for r in s.requests(0) if r.source == "a"]
    s.on_arrival("a", reqs[0].index, reqs[0].serial, now=0.1)
    s.on_failure("a", reqs[1].index, "link closed", 0.2, reqs[1].serial)
    assert s.accepts("a", reqs[0].index, reqs[0].serial)  # being written: still ours
    assert not s.accepts("a", reqs[1].index, reqs[1].serial)
    assert s.on_frame("a", reqs[0].index, chunks_of(reqs[0]), now=0.3, serial=reqs[0].serial)


def _seeded_run(seed: int) -> None:
    """One random download as the loop drives it, writes finishing out of order; asserts the
    bookkeeping after every step."""
    rng = random.Random(seed)
    n = rng.randint(1, 80)
    names = [f"s{i}" for i in range(rng.randint(1, 4))]
    s = sched(n, names, window=2 * FRAME, max_total=6 * FRAME, retry_after=0.5, stall_grace=0.5)
    for name in names:
        s.add_source(name, rtt=rng.random() * 0.01)
    now = 0.0
    out: list[Request[str]] = []
    writing: list[Request[str]] = []
    for _ in range(5000):
        if s.complete or s.stuck:
            break
        for late in s.overdue(now):
            s.on_failure(late.source, late.index, "late", now, late.serial)
        out += s.requests(now)
        assert sum(x.held for x in s.sources.values()) <= s.max_total
        owners: dict[int, int] = {}
        for x in s.sources.values():
            for o in x.outstanding.values():
                for i in range(o.index, o.index + o.count):
                    if not o.duplicate:
                        assert owners.setdefault(i, o.serial) == o.serial, (seed, i)
        taken = {i for x in s.sources.values() for o in x.outstanding.values()
                 for i in range(o.index, o.index + o.count)}  # fmt: skip
        waiting = set(s._missing[s._next :]) | set(s._requeued) | taken | s.done_chunks
        assert waiting >= set(range(s.count)), (seed, "a chunk nobody will ask for")
        due = s.next_deadline()
        assert out or writing or due is not None, (seed, "hang")
        event = rng.random()
        now += rng.random() * 0.3
        if writing and event < 0.3:
            r = writing.pop(rng.randrange(len(writing)))
            bad = [] if rng.random() < 0.9 or r.source == "s0" else [r.index]
            good = [i for i in chunks_of(r) if i not in bad]
            s.on_frame(r.source, r.index, good, bad, now=now, serial=r.serial)
        elif out:
            r = out.pop(rng.randrange(len(out)))
            if not s.accepts(r.source, r.index, r.serial):
                continue
            roll = rng.random()
            if roll < 0.05 and r.source != "s0":
                s.on_failure(r.source, r.index, "err", now, r.serial)
            elif roll < 0.08:
                s.on_busy(r.source, r.index, now, r.serial)
            elif roll < 0.1 and r.source != "s0":
                s.exclude(r.source, "gone")
            else:
                s.on_arrival(r.source, r.index, r.serial, now=now)
                writing.append(r)
        elif due is not None:
            now = max(now, due)
    assert s.complete or s.stuck, seed


def test_seeded_runs_never_give_a_chunk_to_two_sources_or_lose_one() -> None:
    for seed in range(400):
        _seeded_run(seed)


def test_a_progress_record_is_due_after_half_the_windows_of_the_sources_at_work() -> None:
    """What a crash may cost stays within one window: a record is due, whatever the time, once
    half the windows are verified and unrecorded (the measured loss was 3 MiB for a 2.2 MiB
    window with a record every 0.5 s only)."""
    s = sched(40, ["a", "b"])  # windows of 2 frames (8 chunks) each before a rate is known
    assert unrecorded_limit(s.sources.values(), CS) == 8 * CS
    s.requests(0)
    s.on_frame("a", 0, range(4), now=0.01)  # a's rate is measured: its window grows
    assert unrecorded_limit(s.sources.values(), CS) > 8 * CS
    s.exclude("a", "gone")
    assert unrecorded_limit(s.sources.values(), CS) == 4 * CS  # only b's counts now
    s.exclude("b", "gone")
    assert unrecorded_limit(s.sources.values(), CS) == CS  # never less than a chunk
