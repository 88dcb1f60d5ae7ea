# The probe search policy, driven by hand with a fake clock and fake peers.
from __future__ import annotations

import random

from zwalk.core import protocol as p
from zwalk.core.outcome import ProbeSearch, Verdict

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


# --- k-walker random walk and flooding --------------------------------------------------------

from zwalk.core.fields import EndReason, Strategy  # noqa: E402
from zwalk.core.searches import FloodSearch, KWalkSearch  # noqa: E402
from zwalk.core.walk import (  # noqa: E402
    BUSY_REST,
    BUSY_REST_MAX,
    HANDOVER_TRIES,
    CheckBack,
    Ended,
    Forward,
    Relay,
    RelayStep,
    Walk,
)

QID = b"q" * 16


def kwalk(me: str = "s", nbrs: tuple[str, ...] = ("a", "b", "c"), **kw: object) -> KWalkSearch[str]:
    opts: dict[str, object] = {"qid": QID, "rng": random.Random(3), "now": 0.0, "deadline": 10.0}
    opts.update(kw)
    return KWalkSearch(me, nbrs, **opts)  # type: ignore[arg-type]


def test_walkers_leave_on_distinct_neighbours() -> None:
    s = kwalk(nbrs=("a", "b", "c", "d"), walkers=3)
    first = s.start(0)
    assert len(first) == 3 and len({f.to for f in first}) == 3
    assert all(f.walk.hops == 1 and f.walk.path == ("s", f.to) for f in first)
    assert {f.walk.walker for f in first} == {0, 1, 2}


def test_relay_forwards_to_an_unvisited_neighbour_and_remembers() -> None:
    relay: Relay[str] = Relay("a")
    w: Walk[str] = Walk(QID, Strategy.KWALK, 0, 10, 1, ("s", "a"), check_every=4)
    assert relay.arrive(w) is True
    assert relay.arrive(w) is False  # the node remembers the query
    rng = random.Random(0)
    seen = set()
    for _ in range(3):
        [step] = relay.next_step(w, ["s", "b", "c", "d"], rng)
        assert isinstance(step, Forward) and step.to in {"b", "c", "d"}
        seen.add(step.to)
        assert step.walk.path == ("s", "a", step.to) and step.walk.ttl == 9
    # Walkers passing through the same node spread out: all three neighbours got one.
    assert seen == {"b", "c", "d"}


def test_ttl_check_back_and_dead_end() -> None:
    relay: Relay[str] = Relay("x")
    rng = random.Random(0)
    spent: Walk[str] = Walk(QID, Strategy.KWALK, 0, 0, 9, ("s", "x"), check_every=4)
    assert relay.next_step(spent, ["y"], rng) == [Ended(spent, EndReason.TTL)]
    due: Walk[str] = Walk(QID, Strategy.KWALK, 0, 5, 4, ("s", "a", "b", "x"), check_every=4)
    assert relay.next_step(due, ["y"], rng) == [CheckBack(due)]
    [fwd] = relay.next_step(due, ["y"], rng, checked=True)
    assert isinstance(fwd, Forward) and fwd.to == "y"
    stuck: Walk[str] = Walk(QID, Strategy.KWALK, 0, 5, 3, ("s", "a", "x"), check_every=4)
    assert relay.next_step(stuck, ["s", "a"], rng) == [Ended(stuck, EndReason.DEAD_END)]


def test_a_walker_in_a_leaf_steps_back_once_then_ends() -> None:
    rng = random.Random(0)
    leaf: Relay[str] = Relay("leaf")
    w: Walk[str] = Walk(QID, Strategy.KWALK, 0, 9, 3, ("s", "a", "b", "leaf"), check_every=4)
    [back] = leaf.next_step(w, ["b"], rng, sender="b")
    assert isinstance(back, Forward) and back.to == "b" and back.walk.backtrack
    b: Relay[str] = Relay("b")
    [on] = b.next_step(back.walk, ["a", "leaf", "c"], rng, sender="leaf", first=False, checked=True)
    assert isinstance(on, Forward) and on.to == "c" and not on.walk.backtrack
    assert b.next_step(back.walk, ["a", "leaf"], rng, sender="leaf", checked=True) == [
        Ended(back.walk, EndReason.DEAD_END)
    ]


def test_flood_forwards_to_all_but_the_sender_and_drops_duplicates() -> None:
    relay: Relay[str] = Relay("x")
    w: Walk[str] = Walk(QID, Strategy.FLOOD, 0, 2, 1, ("s",))
    first = relay.arrive(w)
    out = relay.next_step(w, ["s", "a", "b"], random.Random(0), sender="s", first=first)
    assert sorted(f.to for f in out) == ["a", "b"]  # type: ignore[union-attr]
    assert all(f.walk.ttl == 1 for f in out)  # type: ignore[union-attr]
    again = relay.arrive(w)
    assert relay.next_step(w, ["s", "a"], random.Random(0), sender="a", first=again) == []
    last: Walk[str] = Walk(b"other" * 4, Strategy.FLOOD, 0, 0, 3, ("s",))
    assert relay.next_step(last, ["a"], random.Random(0), first=relay.arrive(last)) == []


def test_searcher_checks_back_stops_when_satisfied_and_dedups_by_content_id() -> None:
    s = kwalk(walkers=2, want=1)
    a, b = s.start(0)
    assert s.on_check(a.walk, a.to, 1.0)[0] is True
    h = p.Hit(name="f.iso", path="share/f.iso", size=1, cid=CID_A)
    s.on_hits(b.walk, b.to, [h], 1.5)
    s.on_hits(a.walk, a.to, [h], 1.6)  # the same content elsewhere: one hit, two holders
    assert len(s.found) == 1 and set(s.found[CID_A].holders) == {a.to, b.to}
    assert s.on_check(a.walk, a.to, 2.0) == (False, [])
    assert s.done(2.0) and s.first_hit_hops == 1


def test_adaptive_walkers_double_while_nothing_is_found() -> None:
    s = kwalk(nbrs=tuple("abcdefghij"), walkers=8, initial=2)
    first = s.start(0)
    assert len(first) == 2
    go, more = s.on_check(first[0].walk, first[0].to, 1.0)
    assert go and len(more) == 2  # doubled to 4
    _, more2 = s.on_check(first[1].walk, first[1].to, 1.1)
    assert len(more2) == 4  # doubled to 8
    assert s.on_check(first[1].walk, first[1].to, 1.2)[1] == []  # at the maximum
    assert len({f.to for f in first + more + more2}) == 8


def test_not_found_ends_when_every_walker_ended_with_full_coverage() -> None:
    s = kwalk(nbrs=("a", "b"), walkers=2, known=3)
    a, b = s.start(0)
    wa = Walk(QID, Strategy.KWALK, a.walk.walker, 5, 3, ("s", "a", "c", "b"), 4)
    wb = Walk(QID, Strategy.KWALK, b.walk.walker, 5, 2, ("s", "b", "c"), 4)
    assert s.on_end(wa, "b", EndReason.DEAD_END, 1.0) == []
    assert not s.done(1.0)
    s.on_end(wb, "c", EndReason.DEAD_END, 1.1)
    assert s.done(1.1) and not s.found
    assert s.coverage == 1.0 and s.visited == {"a", "b", "c"}
    assert s.messages == 3 + 2  # each walker's hops


def test_a_lost_first_hop_is_replaced_elsewhere_and_the_deadline_ends_all() -> None:
    s = kwalk(nbrs=("a", "b", "c"), walkers=1)
    [f] = s.start(0)
    [again] = s.on_lost(f.walk.walker, f.to, 0.5)
    assert again.to != f.to and again.walk.walker != f.walk.walker
    assert s.on_lost(f.walk.walker, f.to, 0.6) == []  # reported twice: nothing more
    assert s.active == {again.walk.walker}
    assert not s.done(9.9)
    assert s.done(10.0)


def test_a_busy_first_hop_rests_and_is_asked_again_while_the_search_runs() -> None:
    """Busy passes: the walker goes elsewhere, or waits for the rest of a busy node to end,
    and keeps its number. It used to be lost with the node dropped as a first hop, so a search
    whose neighbours were all busy (a storm of walks at the node holding the file) ended
    at once with nothing found (the load scenario's second finding)."""
    s = kwalk(nbrs=("a", "b"), walkers=1)
    [f] = s.start(0)
    [elsewhere] = s.on_busy(f.walk, f.to, 0.0)
    other = "b" if f.to == "a" else "a"
    assert elsewhere.to == other and elsewhere.walk.walker == f.walk.walker
    assert elsewhere.walk.path == ("s", other) and elsewhere.walk.hops == 1
    assert s.on_busy(elsewhere.walk, other, 0.1) == []  # both rest: it waits
    assert not s.done(0.2) and s.active == {f.walk.walker} and s.lost == 0
    assert s.next_due() == BUSY_REST and s.due(0.2) == []
    [again] = s.due(BUSY_REST)  # the first one's rest is over
    assert again.to == f.to and again.walk.walker == f.walk.walker
    # With one neighbour: each refusal doubles its rest, up to the maximum, and the deadline
    # ends it all.
    one = kwalk(nbrs=("a",), walkers=1)
    [f] = one.start(0)
    t = 0.0
    for n in range(1, 7):
        assert one.on_busy(f.walk, "a", t) == []
        rest = min(BUSY_REST_MAX, BUSY_REST * 2 ** (n - 1))
        assert one.next_due() == t + rest and one.due(t + rest - 0.01) == []
        t += rest
        [f] = one.due(t)
    assert one.on_busy(f.walk, "a", 10.0) == [] and one.due(10.0) == [] and one.done(10.0)
    assert one.launched == 1 and one.messages == 1  # one walker, its one hop counted once


def test_waiting_walkers_are_lost_when_no_first_hop_is_left() -> None:
    s = kwalk(nbrs=("a", "b"), walkers=2)
    w0, w1 = s.start(0)
    [moved] = s.on_busy(w0.walk, w0.to, 0.0)  # w0 goes to w1's node
    assert moved.to == w1.to
    assert s.on_busy(w1.walk, w1.to, 0.0) == []  # both rest: w1 waits
    [w2] = s.on_lost(0, w1.to, 0.1)  # w0 could not reach it at all: gone as a first hop
    assert w2.to == w0.to and w2.walk.walker == 2
    assert s.on_lost(2, w0.to, 0.2) == []  # and the other too: no first hop is left
    assert s.active == {1} and not s.done(0.3)
    assert s.due(0.3) == [] and not s.active and s.lost == 3
    assert s.done(0.3)


def test_flood_searcher_counts_its_first_copies() -> None:
    s: FloodSearch[str] = FloodSearch("s", ["a", "b", "s"], qid=QID, now=0, deadline=5, ttl=2)
    out = s.start(0)
    assert sorted(f.to for f in out) == ["a", "b"] and s.messages == 2
    assert not s.done(1) and s.done(1, quiet=True)


def test_no_more_walkers_once_everything_known_was_visited() -> None:
    s = kwalk(nbrs=("a", "b", "c"), walkers=16, initial=1)
    [f] = s.start(0)
    w = Walk(QID, Strategy.KWALK, f.walk.walker, 60, 3, ("s", "a", "b", "c"), 4)
    assert s.on_end(w, "c", EndReason.DEAD_END, 0.1) == []  # all 3 visited: no widening
    assert s.done(0.1) and s.coverage == 1.0 and s.launched == 1


def test_a_walker_stuck_at_a_dead_end_is_replaced_but_not_forever() -> None:
    s = kwalk(nbrs=tuple("abcd"), walkers=2, known=100)
    first = s.start(0)
    ends = 0
    while s.active:
        walker = min(s.active)
        w = Walk(QID, Strategy.KWALK, walker, 60, 2, ("s", "a"), 4)
        again = s.on_end(w, "a", EndReason.DEAD_END, 0.1 * ends)
        ends += 1
        assert len(again) <= 1 and len(s.active) <= 2  # one for one: never more than 2 out
    assert len(first) == 2 and s.launched == 4 and ends == 4  # 2 places, filled twice each
    assert s.done(1.0) and not s.found
    walker_ttl = kwalk(nbrs=tuple("abcd"), walkers=2, known=100)
    f = walker_ttl.start(0)[0]
    spent = Walk(QID, Strategy.KWALK, f.walk.walker, 0, 64, ("s", "a"), 4)
    assert walker_ttl.on_end(spent, "a", EndReason.TTL, 1.0) == []  # its budget is spent


def test_a_search_for_every_hit_ends_a_while_after_the_first_even_with_walkers_out() -> None:
    """Walkers lost at a dead peer never end; a search that wants every version of a name
    must not wait for them until its deadline."""
    s = kwalk(nbrs=("a", "b", "c", "d"), walkers=2, want=p.MAX_HITS)
    s.linger = 1.0
    first = s.start(0)
    s.on_hits(first[0].walk, first[0].to, [hit(CID_A)], 0.2)
    assert not s.done(1.1) and s.active  # walkers still out, and 1 s has not passed
    assert s.done(1.2) and s.ended_at == 1.2
    slow = kwalk(nbrs=("a", "b"), want=p.MAX_HITS)
    slow.linger = 1.0
    w = slow.start(0)[0]
    slow.on_hits(w.walk, w.to, [hit(CID_A)], 2.0)  # the first hit took 2 s: wait 2 s more
    assert not slow.done(3.9) and slow.done(4.0)
    plain = kwalk(nbrs=("a", "b"), want=p.MAX_HITS)  # no linger: the deadline, or coverage
    w = plain.start(0)[0]
    plain.on_hits(w.walk, w.to, [hit(CID_A)], 0.2)
    assert not plain.done(5.0)


# --- the relay step: what the node's walk shell and walksim both drive ----------------------


def test_relay_step_checks_back_then_stops_when_the_searcher_says_so() -> None:
    due: Walk[str] = Walk(QID, Strategy.KWALK, 0, 5, 4, ("s", "a", "b", "x"), check_every=4)
    step = RelayStep(Relay("x"), due, random.Random(0), sender="b")
    assert step.first  # the index is checked the first time only
    assert step.start(["b", "y"], found_here=False) == [CheckBack(due)]
    assert step.on_check(False) == [Ended(due, EndReason.STOPPED)]


def test_relay_step_goes_on_away_from_what_the_searcher_names() -> None:
    due: Walk[str] = Walk(QID, Strategy.KWALK, 0, 5, 4, ("s", "a", "b", "x"), check_every=4)
    step = RelayStep(Relay("x"), due, random.Random(0), sender="b")
    step.start(["b", "y", "z"], found_here=False)
    [fwd] = step.on_check(True, avoid=("y",))  # another walker was at y
    assert isinstance(fwd, Forward) and fwd.to == "z"
    assert fwd.walk.path == ("s", "a", "b", "x", "y", "z") and fwd.walk.hops == 5
    assert not RelayStep(step.relay, due, random.Random(0), sender="b").first  # seen at x


def test_relay_step_retries_another_neighbour_then_ends_at_a_dead_end() -> None:
    w: Walk[str] = Walk(QID, Strategy.KWALK, 0, 9, 1, ("s", "a"), check_every=0)
    nbrs = ["b", "c", "d", "e", "f", "g"]
    step = RelayStep(Relay("a"), w, random.Random(1), sender="s")
    [fwd] = step.start(nbrs, found_here=False)
    tried = [fwd.to]
    for _ in range(HANDOVER_TRIES):  # each refused hand-over: the next neighbour
        [fwd] = step.on_refused(tried[-1])
        assert isinstance(fwd, Forward) and fwd.to not in tried
        tried.append(fwd.to)
    assert step.on_refused(tried[-1]) == [Ended(w, EndReason.DEAD_END)]
    assert len(tried) == HANDOVER_TRIES + 1


def test_relay_step_rests_after_a_busy_answer_before_the_next_neighbour() -> None:
    """A relay whose neighbours all answered busy ended the copy at a dead end within a few
    milliseconds; under a storm of walks every copy through it did, and a search burned all
    its walkers in under a second (the load scenario). After a busy answer the next try now
    waits, 0.25 s doubling; the refused neighbour is still left out, as step 4.5 says."""
    w: Walk[str] = Walk(QID, Strategy.KWALK, 0, 9, 1, ("s", "a"), check_every=0)
    step = RelayStep(Relay("a"), w, random.Random(1), sender="s")
    [fwd] = step.start(["b", "c", "d", "e", "f"], found_here=False)
    assert step.rest == 0.0
    rests, tried = [], [fwd.to]
    for _ in range(HANDOVER_TRIES):
        [fwd] = step.on_refused(tried[-1], busy=True)
        assert isinstance(fwd, Forward) and fwd.to not in tried
        tried.append(fwd.to)
        rests.append(step.rest)
    assert rests == [BUSY_REST, 2 * BUSY_REST, 4 * BUSY_REST] and 4 * BUSY_REST <= BUSY_REST_MAX
    assert step.on_refused(tried[-1], busy=True) == [Ended(w, EndReason.DEAD_END)]
    other = RelayStep(Relay("a"), w, random.Random(1), sender="s")
    [fwd] = other.start(["b", "c"], found_here=False)
    other.on_refused(fwd.to)  # gone or silent, not busy: no rest
    assert other.rest == 0.0


def test_relay_step_ends_where_a_hit_is_found_when_one_is_wanted() -> None:
    w: Walk[str] = Walk(QID, Strategy.KWALK, 0, 9, 1, ("s", "a"), stop_on_hit=True)
    step = RelayStep(Relay("a"), w, random.Random(1), sender="s")
    assert step.start(["b"], found_here=True) == [Ended(w, EndReason.FOUND)]


def test_relay_step_floods_every_neighbour_once() -> None:
    w: Walk[str] = Walk(QID, Strategy.FLOOD, 0, 2, 1, ("s",))
    relay: Relay[str] = Relay("a")
    step = RelayStep(relay, w, random.Random(1), sender="s")
    assert sorted(f.to for f in step.start(["s", "b", "c"], found_here=False)) == ["b", "c"]
    dup = RelayStep(relay, w, random.Random(1), sender="b")
    assert not dup.first and dup.start(["s", "b", "c"], found_here=False) == []
