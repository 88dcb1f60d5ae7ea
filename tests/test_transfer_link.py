# The chunk scheduler over simulated links (linksim.py), on a simulated clock: it fills every
# link from 1 Mbit/s to 10 Gbit/s, keeps what waits toward a source within a bounded time,
# shares a link between downloads without failing any, and gives up on a source that stops.
from __future__ import annotations

import pytest
from linksim import Link, Net, file_info, mbit

from zwalk.core.sources import DEFAULTS, STALL_FACTOR

MIB = 1 << 20
CHUNK = MIB
RATES = [1, 2, 16, 100, 1000, 10_000]  # Mbit/s


def size_for(rate_mbit: float, seconds: float = 40) -> int:
    """A file that takes about `seconds` on the link, in whole chunks (4 to 2048 of them: the
    simulation's cost follows the number of frames)."""
    return min(2048, max(4, int(mbit(rate_mbit) * seconds) // CHUNK)) * CHUNK


@pytest.mark.parametrize("rtt", [0.0005, 0.02], ids=["lan", "20ms"])
@pytest.mark.parametrize("rate", RATES)
def test_one_source_fills_its_link_and_keeps_little_waiting(rate: float, rtt: float) -> None:
    net = Net()
    link = Link(mbit(rate), rtt=rtt)
    size = size_for(rate)
    d = net.download(file_info(size), {"a": link})
    net.run()
    assert d.finished is not None and d.late == 0
    utilisation = size / link.rate / d.finished
    assert utilisation >= 0.95, utilisation
    # What waits toward the source: at most one frame (at least a chunk, which on a slow link
    # takes longer than the target), the round trip and the queue target -- once the rate is
    # measured; the largest window caps it on the fastest links.
    frame_time = max(CHUNK / link.rate, DEFAULTS.queue_target / 2)
    bound = frame_time + rtt + DEFAULTS.queue_target
    assert d.worst_in_flight["a"] <= bound * 1.05, (d.worst_in_flight, bound)


@pytest.mark.parametrize("rate", [2, 16, 40, 1000])
def test_downloads_that_share_a_link_split_it_and_none_is_taken_for_failing(rate: float) -> None:
    """Three downloads of one size T (in seconds of the whole link), starting at 0, T/4 and
    T/2. Shared evenly while they overlap (processor sharing), they end at 2.375 T, 2.875 T
    and 3 T; a link that served one after another would end the first at T."""
    net = Net()
    link = Link(mbit(rate))
    size = size_for(rate, 10)
    alone = size / link.rate
    downloads = [net.download(file_info(size), {"a": link}, start=alone * k / 4) for k in (0, 1, 2)]
    net.run()
    assert all(d.late == 0 for d in net.downloads)
    ends = [d.finished for d in downloads]
    assert all(e is not None for e in ends)
    for end, even in zip(ends, (2.375, 2.875, 3.0), strict=True):
        assert abs(end / alone - even) <= 0.1, [e / alone for e in ends]  # type: ignore[operator]


def test_a_share_that_drops_eightfold_at_once_is_not_taken_for_a_dead_source() -> None:
    """Seven more downloads start on the same slow link at once: the first one's frame in
    flight now takes eight times as long, which its deadline allows for (STALL_FACTOR)."""
    assert STALL_FACTOR >= 8
    net = Net()
    link = Link(mbit(16))
    size = size_for(16, 20)
    first = net.download(file_info(size), {"a": link})
    for _ in range(7):
        net.download(file_info(size // 4), {"a": link}, start=5.0)
    net.run()
    assert [d.late for d in net.downloads] == [0] * 8
    assert first.finished is not None


@pytest.mark.parametrize("rate", [16, 200])
def test_three_sources_give_three_times_one(rate: float) -> None:
    size = size_for(rate, 30)
    one = Net()
    d1 = one.download(file_info(size), {"x": Link(mbit(rate))})
    one.run()
    three = Net()
    d3 = three.download(file_info(size), {n: Link(mbit(rate)) for n in "xyz"})
    three.run()
    assert d1.finished is not None and d3.finished is not None
    assert d1.finished / d3.finished >= 2.85


def test_a_slow_source_gets_work_in_proportion_to_its_rate() -> None:
    net = Net()
    d = net.download(file_info(64 * MIB), {"fast": Link(mbit(80)), "slow": Link(mbit(8))})
    net.run()
    assert d.finished is not None
    assert d.finished <= 64 * MIB / mbit(88) * 1.05  # both links kept busy to the end
    fast, slow = d.sched.sources["fast"].bytes, d.sched.sources["slow"].bytes
    assert 7 <= fast / slow <= 14, (fast, slow)


@pytest.mark.parametrize(("before", "after"), [(16, 2), (16, 0.5), (100, 2), (1000, 10)])
def test_a_link_that_slows_down_a_lot_is_still_used_to_the_end(before: float, after: float) -> None:
    """The link's rate drops 8 to 100 times in the middle of a download from it alone: a
    frame may be declared late, but the replies still on their way are kept, and the source is
    never dropped for being slow."""
    net = Net()
    link = Link(mbit(before))
    size = size_for(before, 4) * 2
    d = net.download(file_info(size), {"a": link})
    advance = net._advance

    def slowing(until: float) -> None:
        if link.rate == mbit(before) and until >= 2.0:
            advance(2.0)
            link.rate = mbit(after)
        advance(until)

    net._advance = slowing  # type: ignore[method-assign]
    net.run(limit=100_000)
    st = d.sched.sources["a"]
    assert d.finished is not None and st.excluded is None and st.failures == 0


def test_a_source_that_stops_sending_is_given_up_on_and_another_finishes() -> None:
    net = Net()
    stops = Link(mbit(16), stop_at=4.0)
    d = net.download(file_info(32 * MIB), {"stops": stops, "other": Link(mbit(16))})
    net.run()
    assert d.finished is not None and d.late >= 1
    # Late after about STALL_FACTOR times a frame's time at its measured rate, plus the grace:
    # with 1 MiB frames at 2 MB/s, about 6 s; the rest comes from the other source meanwhile.
    assert d.sched.sources["stops"].failures >= 1 or d.sched.sources["stops"].excluded
    assert d.finished < 32 * MIB / mbit(16) + 12


def test_a_source_frozen_for_good_is_dropped_and_the_download_fails_cleanly() -> None:
    net = Net()
    d = net.download(file_info(8 * MIB), {"a": Link(mbit(16), stop_at=1.0)})
    net.run()
    assert d.finished is None and d.sched.stuck
    assert d.sched.sources["a"].excluded == "late (3 times in a row)"
