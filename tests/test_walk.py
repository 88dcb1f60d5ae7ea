# The probe search policy, driven by hand with a fake clock and fake peers.
from __future__ import annotations

import random

from zwalk import protocol as p
from zwalk.walk import ProbeSearch, Verdict

CID_A, CID_B = b"\xaa" * 32, b"\xbb" * 32


def hit(cid: bytes, name: str = "f.iso") -> p.Hit:
    return p.Hit(name=name, path=f"share/{name}", size=10, cid=cid)


def make(peers: list[str], **kw: object) -> ProbeSearch[str]:
    return ProbeSearch(peers, rng=random.Random(1), now=0.0, deadline=10.0, **kw)  # type: ignore[arg-type]


def test_asks_one_peer_at_a_time_in_random_order_until_a_hit() -> None:
    s = make(["a", "b", "c", "d"])
    asked = []
    t = 0.0
    while (peer := s.next_ask(t)) is not None:
        assert s.next_ask(t) is None  # one outstanding question at a time
        asked.append(peer)
        t += 0.5
        s.on_reply(peer, [hit(CID_A)] if peer == "c" else [], t)
    assert asked[-1] == "c" and len(asked) == len(set(asked))
    assert s.done(t)
    assert s.messages == len(asked) and s.first_hit_hops == len(asked)
    assert [h.verdict for h in s.trace][-1] is Verdict.HIT
    assert all(h.latency == 0.5 for h in s.trace)
    assert s.ranked()[0].holders == {"c": "share/f.iso"}


def test_order_depends_on_the_rng() -> None:
    orders = set()
    for seed in range(20):
        s = ProbeSearch(["a", "b", "c", "d"], rng=random.Random(seed), now=0, deadline=9)
        order = []
        while (peer := s.next_ask(0)) is not None:
            order.append(peer)
            s.on_reply(peer, [], 0)
        orders.add(tuple(order))
    assert len(orders) > 5


def test_not_found_reports_full_coverage() -> None:
    s = make(["a", "b", "c"])
    while (peer := s.next_ask(1)) is not None:
        s.on_reply(peer, [], 1)
    assert s.done(1) and not s.found
    assert s.visited == 3 and s.coverage == 1.0


def test_timeouts_and_errors_move_on_and_do_not_count_as_visited() -> None:
    s = make(["a", "b"])
    first = s.next_ask(0)
    assert first is not None
    s.on_failure(first, 2.0, timeout=True)
    second = s.next_ask(2.0)
    assert second is not None and second != first
    s.on_failure(second, 2.5, timeout=False)
    assert s.done(2.5)
    assert [h.verdict for h in s.trace] == [Verdict.TIMEOUT, Verdict.ERROR]
    assert s.visited == 0 and s.coverage == 0.0


def test_deadline_ends_the_search() -> None:
    s = make(["a", "b", "c"])
    peer = s.next_ask(0)
    assert peer is not None
    s.on_reply(peer, [], 10.0)
    assert s.next_ask(10.0) is None and s.done(10.0)


def test_late_replies_are_ignored() -> None:
    s = make(["a", "b"])
    s.on_reply("b", [hit(CID_A)], 0)  # never asked
    assert not s.found and not s.trace


def test_want_many_collects_holders_and_dedups_by_content_id() -> None:
    s = make(["a", "b", "c"], want=1000)
    while (peer := s.next_ask(0)) is not None:
        hits = {"a": [hit(CID_A)], "b": [hit(CID_A, "copy.iso"), hit(CID_B, "b.iso")], "c": []}
        s.on_reply(peer, hits[peer], 0)
    ranked = s.ranked()
    assert [f.cid for f in ranked] == [CID_A, CID_B]  # more holders first
    assert set(ranked[0].holders) == {"a", "b"}
