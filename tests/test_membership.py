# The membership table under a fake clock: discovery, hello, liveness, leave, restarts, gossip.
from __future__ import annotations

from typing import Any

from zwalk.core.addresses import Endpoint
from zwalk.core.keys import node_id_for
from zwalk.core.membership import Action, Connect, Disconnect, Membership, Ping, Source, State

KEYS: dict[bytes, bytes] = {}  # node id -> the public key it is the hash of


def nid(seed: int) -> bytes:
    key = bytes([seed]) * 32
    KEYS[node_id_for(key)] = key
    return node_id_for(key)


def disc(t: Membership, node: bytes, *args: Any, **kw: Any) -> list[Action]:
    """on_discovered with the key the id is the hash of, as every real source gives it."""
    return t.on_discovered(node, *args, key=KEYS[node], **kw)


ME, A, B = nid(0), nid(0xAA), nid(0xBB)
EA, EA2, EB = Endpoint("10.0.0.1", 1), Endpoint("10.0.0.1", 2), Endpoint("10.0.0.2", 1)
INC1, INC2 = b"1" * 8, b"2" * 8


def table() -> Membership:
    return Membership(
        ME, ping_after=1.0, ping_timeout=1.0, max_missed=3, hello_timeout=3.0, retry_after=5.0
    )


def meet(t: Membership, node: bytes, ep: Endpoint, now: float, inc: bytes = INC1) -> None:
    assert disc(t, node, ep, Source.MDNS, "eth0", now) == [Connect(ep, KEYS[node])]
    t.on_hello(ep, node=node, name="n", incarnation=inc, files=3, version=1, now=now + 0.01)


def test_discovery_connects_once_and_hello_makes_alive() -> None:
    t = table()
    assert disc(t, A, EA, Source.MDNS, "eth0 (10.0.0.9)", 0) == [Connect(EA, KEYS[A])]
    assert disc(t, A, EA, Source.MDNS, "eth0 (10.0.0.9)", 0.1) == []  # churn: ignored
    assert t.alive() == []
    t.on_hello(EA, node=A, name="a", incarnation=INC1, files=5, version=1, now=0.02)
    [m] = t.alive()
    assert (m.node, m.name, m.files, m.state) == (A, "a", 5, State.ALIVE)
    assert m.rtt is not None and abs(m.rtt - 0.02) < 1e-9
    assert m.learned == {Source.MDNS: "eth0 (10.0.0.9)"}


def test_our_own_announcement_is_never_a_peer() -> None:
    t = table()
    assert disc(t, ME, EA, Source.MDNS, "", 0) == []
    assert disc(t, B, EA, Source.GOSSIP, "", 0) == []  # that endpoint is us
    assert t.by_endpoint == {}


def test_a_static_peer_that_turns_out_to_be_us_is_dropped() -> None:
    t = table()
    assert t.add_static([EA], 0) == [Connect(EA)]
    out = t.on_hello(EA, node=ME, name="me", incarnation=INC1, files=0, version=1, now=0.1)
    assert out == [Disconnect(EA, "this is our own node")]


def test_quiet_peer_is_pinged_and_dropped_after_missed_pings() -> None:
    t = table()
    meet(t, A, EA, 0)
    assert t.tick(0.5) == []
    assert t.tick(1.01) == [Ping(EA)]
    assert t.tick(1.5) == []  # one ping at a time
    assert t.tick(2.02) == [Ping(EA)]  # first missed, pinged again
    assert t.tick(3.03) == [Ping(EA)]
    out = t.tick(4.04)
    assert out == [Disconnect(EA, "stopped answering (3 pings missed)")]
    assert t.alive() == []
    [lost] = t.lost.values()  # remembered, with why, for commands to report
    assert (lost.endpoint, lost.node, lost.reason) == (EA, A, "stopped answering (3 pings missed)")


def test_any_traffic_counts_as_alive() -> None:
    t = table()
    meet(t, A, EA, 0)
    for now in (0.9, 1.8, 2.7, 3.6, 4.5):
        t.on_traffic(A, now)
        assert t.tick(now) == []
    assert t.tick(5.6) == [Ping(EA)]
    t.on_pong(EA, 5.7, files=9)
    assert t.alive()[0].files == 9 and t.alive()[0].missed == 0


def test_bye_and_mdns_goodbye_drop_at_once() -> None:
    t = table()
    meet(t, A, EA, 0)
    meet(t, B, EB, 0)
    assert t.on_bye(A, 1) == [Disconnect(EA, "left")]
    assert t.on_mdns_removed(B, 1) == [Disconnect(EB, "left (mDNS goodbye)")]
    assert t.by_endpoint == {}


def test_mdns_goodbye_keeps_a_static_peer() -> None:
    t = table()
    t.add_static([EA], 0)
    disc(t, A, EA, Source.MDNS, "eth0", 0)
    t.on_hello(EA, node=A, name="a", incarnation=INC1, files=0, version=1, now=0.1)
    assert t.on_mdns_removed(A, 1) == []
    assert Source.MDNS not in t.alive()[0].learned


def test_unanswered_hello_is_dropped_and_static_peers_are_retried() -> None:
    t = table()
    assert t.add_static([EA], 0) == [Connect(EA)]
    assert t.tick(2.9) == []
    assert t.tick(3.0) == [Disconnect(EA, "no answer to hello within 3 s")]
    assert t.lost[EA].learned == {Source.STATIC: ""}
    assert t.tick(7.9) == []
    assert t.tick(8.0) == [Connect(EA)]
    t.on_hello(EA, node=A, name="a", incarnation=INC1, files=0, version=1, now=8.1)
    assert EA not in t.lost  # it answers now


def test_a_named_peer_is_met_at_once_and_not_retried_after_it_fails() -> None:
    t = table()
    assert t.add_named([EA], 0) == [Connect(EA)]
    assert t.on_unreachable(EA, "connection refused", 0.1) == [Disconnect(EA, "connection refused")]
    assert t.lost[EA].reason == "connection refused" and t.lost[EA].learned == {Source.NAMED: ""}
    assert t.tick(10) == []  # not static: no retry
    assert t.add_named([EA], 0.2) == [Connect(EA)]  # named again: tried again, at once


def test_leaving_is_not_a_failure_and_the_lost_list_is_bounded() -> None:
    t = table()
    meet(t, A, EA, 0)
    t.on_bye(A, 1)
    assert t.lost == {}
    for port in range(1, 200):
        ep = Endpoint("10.0.0.3", port)
        t.add_named([ep], 2)
        t.on_unreachable(ep, "refused", 2)
    assert len(t.lost) == 64 and list(t.lost)[-1] == Endpoint("10.0.0.3", 199)


def test_restart_on_a_new_port_is_one_peer_not_two() -> None:
    t = table()
    meet(t, A, EA, 0)
    out = disc(t, A, EA2, Source.MDNS, "eth0", 5)
    assert out == [Disconnect(EA, "moved to 10.0.0.1:2"), Connect(EA2, KEYS[A])]
    t.on_hello(EA2, node=A, name="n", incarnation=INC2, files=3, version=1, now=5.1)
    assert [m.endpoint for m in t.alive()] == [EA2]


def test_restart_on_the_same_port_is_noticed_by_incarnation() -> None:
    t = table()
    meet(t, A, EA, 0)
    out = disc(t, A, EA, Source.INBOUND, "", 5, incarnation=INC2)
    assert out == [Disconnect(EA, "restarted"), Connect(EA, KEYS[A])]
    assert t.by_endpoint[EA].learned.keys() >= {Source.MDNS, Source.INBOUND}
    t.on_hello(EA, node=A, name="n", incarnation=INC2, files=3, version=1, now=5.1)
    # The same run saying hello again is not a restart.
    assert disc(t, A, EA, Source.INBOUND, "", 6, incarnation=INC2) == []
    assert [m.incarnation for m in t.alive()] == [INC2]


def test_same_node_at_two_endpoints_is_kept_once() -> None:
    t = table()
    meet(t, A, EA, 0)
    assert disc(t, A, EB, Source.GOSSIP, "via b", 1) == []  # known elsewhere: noted
    assert t.by_endpoint[EA].learned.keys() == {Source.MDNS, Source.GOSSIP}
    t.add_static([EB], 1)
    out = t.on_hello(EB, node=A, name="n", incarnation=INC1, files=3, version=1, now=1.1)
    assert out == [Disconnect(EB, "same node as 10.0.0.1:1")]
    assert len(t.alive()) == 1 and Source.STATIC in t.alive()[0].learned


def test_gossip_about_a_peer_that_just_failed_waits() -> None:
    t = table()
    disc(t, A, EA, Source.GOSSIP, "via b", 0)
    t.tick(3.0)  # hello unanswered: dropped
    assert disc(t, A, EA, Source.GOSSIP, "via b", 4.0) == []
    assert disc(t, A, EA, Source.GOSSIP, "via b", 8.1) == [Connect(EA, KEYS[A])]
    # mDNS is first-hand: it is believed at once.
    t2 = table()
    disc(t2, A, EA, Source.GOSSIP, "via b", 0)
    t2.tick(3.0)
    assert disc(t2, A, EA, Source.MDNS, "eth0", 3.1) == [Connect(EA, KEYS[A])]


def test_next_wakeup_follows_the_earliest_deadline() -> None:
    t = table()
    assert t.next_wakeup(0) == 1.0
    t.add_static([EA], 0)
    assert t.next_wakeup(0) == 1.0
    t.on_hello(EA, node=A, name="a", incarnation=INC1, files=0, version=1, now=0.5)
    assert t.next_wakeup(0.6) == 1.5


def test_gossip_claiming_our_own_id_does_not_block_the_endpoint() -> None:
    t = table()
    assert disc(t, ME, EA, Source.GOSSIP, "via liar", 0) == []
    assert disc(t, A, EA, Source.MDNS, "eth0", 0.1) == [Connect(EA, KEYS[A])]


def test_a_restart_reported_at_our_own_endpoint_does_not_break_the_table() -> None:
    t = table()
    assert disc(t, ME, EB, Source.MDNS, "eth0", 0) == []  # our own announcement
    meet(t, A, EA, 0)
    out = disc(t, A, EB, Source.INBOUND, "", 1, incarnation=INC2)
    assert out == [Disconnect(EA, "restarted")]
    assert t.by_endpoint == {}


def test_the_table_is_bounded_but_named_peers_still_get_in() -> None:
    t = Membership(ME, max_members=3)
    for i in range(5):
        disc(t, nid(i + 1), Endpoint("10.0.1.1", 100 + i), Source.GOSSIP, "", 0)
    assert len(t.by_endpoint) == 3
    assert disc(t, B, EB, Source.MDNS, "eth0", 0) == []  # a flood of announcements
    assert t.add_static([EB], 0) == [Connect(EB)]  # the user's own choice always gets in


def test_long_details_are_trimmed() -> None:
    t = table()
    disc(t, A, EA, Source.GOSSIP, "via " + "x" * 5000, 0)
    assert len(t.by_endpoint[EA].learned[Source.GOSSIP]) <= 200


def test_busy_peers_are_still_pinged_now_and_then_to_refresh_their_counts() -> None:
    t = Membership(ME, ping_after=1.0, refresh_after=10.0)
    meet(t, A, EA, 0)
    pings = []
    for step in range(1, 121):  # 12 s of steady traffic from A
        now = step / 10
        t.on_traffic(A, now)
        for action in t.tick(now):
            pings.append(now)
            assert action == Ping(EA)
            t.on_pong(EA, now + 0.01, files=42)
    assert len(pings) == 1 and 10.0 <= pings[0] <= 10.2
    assert t.alive()[0].files == 42


def test_a_record_whose_id_is_not_its_keys_hash_is_ignored() -> None:
    """mDNS, gossip and hellos name a node and its key: the id must be the key's hash, or the
    record is a forgery (someone claiming another node's id with a key of their own)."""
    t = table()
    for how in (Source.MDNS, Source.GOSSIP, Source.INBOUND):
        assert t.on_discovered(A, EA, how, "", 0, key=KEYS[B]) == []
        assert t.on_discovered(A, EA, how, "", 0, key=None) == []
    assert t.by_endpoint == {}
    meet(t, A, EA, 0)
    assert t.on_discovered(A, EB, Source.MDNS, "eth0", 1, key=KEYS[B]) == []  # A stays put
    assert [m.endpoint for m in t.alive()] == [EA]


def test_a_hello_ok_must_name_the_node_of_the_key_it_proved() -> None:
    t = table()
    disc(t, A, EA, Source.MDNS, "eth0", 0)
    out = t.on_hello(EA, node=B, name="b", incarnation=INC1, files=0, version=2, now=0.1)
    assert out == [Disconnect(EA, "its hello-ok names another node than the key it proved")]
    assert t.alive() == []


# --- peers lost and back: a frozen laptop, a pulled cable (core/parking.py) ----------------------
def silence(t: Membership, node: bytes, ep: Endpoint, since: float) -> float:
    """Let a met peer go silent from `since` until it is dropped; returns when it was."""
    now = since
    while t.by_node(node) is not None:
        now = round(now + 0.25, 2)
        t.tick(now)
    return now


def test_a_peer_dropped_for_silence_is_met_again_at_its_first_sign_of_life() -> None:
    """A node thawed after SIGSTOP still holds us alive and pings us, but says no hello; its mDNS
    record never changed. Before, nothing brought it back into our table."""
    t = table()
    meet(t, A, EA, 0)
    dropped = silence(t, A, EA, 0)
    assert dropped <= 4.25 and t.alive() == []
    assert t.on_traffic(A, dropped + 0.1) == [Connect(EA, KEYS[A])]  # its ping: meet it again
    assert t.on_traffic(A, dropped + 0.2) == []  # once
    assert t.by_endpoint[EA].name == "n"  # named as before while it is tried
    t.on_hello(EA, node=A, name="a", incarnation=INC1, files=3, version=1, now=dropped + 0.3)
    [m] = t.alive()
    assert m.learned == {Source.MDNS: "eth0"} and EA not in t.lost
    assert t.on_traffic(B, 5) == []  # a node we never knew: nothing to go on


def test_a_lost_peer_that_mdns_still_lists_is_tried_again_ever_more_slowly() -> None:
    """A pulled cable: both sides drop each other, neither sends again, and mDNS says nothing
    new when the cable is back. So the lost peer is tried again, 1 s after the loss at first,
    then a tenth of the time it has been gone, at most every 30 s."""
    t = table()
    meet(t, A, EA, 0)
    lost = silence(t, A, EA, 0)
    tries = []
    now = lost
    while now < lost + 600:
        now = round(now + 0.25, 2)
        if Connect(EA, KEYS[A]) in t.tick(now):
            tries.append(now)
            t.on_unreachable(EA, "no answer", now + 3.0, retry=True)  # 3 s later: nothing
    gaps = [round(b - a - 3.0, 2) for a, b in zip(tries, tries[1:], strict=False)]
    assert tries[0] == lost + 1.0
    assert all(1.0 <= g <= 30.25 for g in gaps) and gaps == sorted(gaps)
    assert gaps[-1] >= 29.75 and 30 <= len(tries) <= 45  # bounded: a dead peer costs little
    # It comes back: the next try finds it, with what we knew of it.
    while Connect(EA, KEYS[A]) not in t.tick(now := round(now + 0.25, 2)):
        pass
    t.on_hello(EA, node=A, name="a", incarnation=INC1, files=3, version=1, now=now + 0.01)
    assert [m.learned for m in t.alive()] == [{Source.MDNS: "eth0"}]
    assert t.tick(now + 100) in ([], [Ping(EA)]) and len(t.parked) == 0


def test_an_mdns_goodbye_or_a_bye_ends_the_tries() -> None:
    t = table()
    meet(t, A, EA, 0)
    meet(t, B, EB, 0)
    silence(t, A, EA, 0)  # both lost (B as well: the same silence)
    assert len(t.parked) == 2
    t.on_mdns_removed(A, 5)
    t.on_bye(B, 5)
    assert all(not isinstance(a, Connect) for now in range(6, 100) for a in t.tick(now))
    assert t.on_traffic(A, 100) == [] and t.on_traffic(B, 100) == []


def test_a_lost_peer_known_only_from_gossip_comes_back_by_its_traffic_not_by_tries() -> None:
    t = table()
    disc(t, A, EA, Source.GOSSIP, "via b", 0)
    t.on_hello(EA, node=A, name="a", incarnation=INC1, files=0, version=2, now=0.01)
    silence(t, A, EA, 0)
    assert all(not isinstance(a, Connect) for now in range(5, 100) for a in t.tick(now))
    assert t.on_traffic(A, 100) == [Connect(EA, KEYS[A])]


def test_a_restarted_node_met_again_where_it_was_is_followed_to_its_new_run() -> None:
    """Killed and started again on a new port: its first hello reaches us before its new mDNS
    record. Met again at its old endpoint, the row keeps the old run's incarnation, so the
    hello of the new run is a restart, not a second node."""
    t = table()
    meet(t, A, EA, 0, inc=INC1)
    lost = silence(t, A, EA, 0)
    assert t.on_traffic(A, lost + 1) == [Connect(EA, KEYS[A])]  # the hello's header frame
    out = disc(t, A, EA2, Source.INBOUND, "", lost + 1, incarnation=INC2)
    assert out == [Disconnect(EA, "restarted"), Connect(EA2, KEYS[A])]
    assert list(t.by_endpoint) == [EA2]


def test_a_peer_met_again_elsewhere_is_no_longer_parked_and_parking_is_bounded() -> None:
    t = table()
    meet(t, A, EA, 0)
    silence(t, A, EA, 0)
    disc(t, A, EA2, Source.MDNS, "eth0", 6)  # announced at a new endpoint
    assert len(t.parked) == 0
    small = Membership(ME, max_members=3)
    for i in range(6):
        node, ep = nid(0x10 + i), Endpoint("10.0.2.1", 100 + i)
        disc(small, node, ep, Source.MDNS, "eth0", 0)
        small.on_unreachable(ep, "refused", 0.1)
        assert len(small.by_endpoint) == 0
    assert len(small.parked) == 3


def test_a_peer_whose_connection_closed_is_dropped_at_once_if_nothing_listens_there() -> None:
    """A killed process closes its sockets: our link's connection drops, and a test connection
    is refused. Before, its row stayed alive until three pings were missed (4 s), and walks and
    downloads were handed to it meanwhile."""
    t = table()
    meet(t, A, EA, 0)
    meet(t, B, EB, 0)
    out = t.on_connection_lost(EA, False, 0.5)
    assert out == [Disconnect(EA, "its connection closed and nothing listens there now")]
    assert t.lost[EA].reason.startswith("its connection closed") and len(t.parked) == 1
    # Something still listens (a restart on the same port), or we cannot tell: a ping, now.
    assert t.on_connection_lost(EB, True, 0.5) == [Ping(EB)]
    assert t.on_connection_lost(EB, None, 0.6) == []  # one ping at a time
    t.on_pong(EB, 0.7)
    assert t.on_connection_lost(EB, None, 0.8) == [Ping(EB)]
    assert t.on_connection_lost(EA, False, 0.9) == []  # no row: nothing to do


def test_a_node_that_was_stopped_pings_every_peer_at_once_and_counts_no_misses() -> None:
    """SIGSTOP for 30 s: on waking, the node may first read the pongs its peers sent before it
    stopped, and then waited a second to ping anyone, while every peer had dropped it and was
    waiting for a sign of life. Now a tick after a gap longer than the liveness bound pings
    every peer at once, and counts no miss for what it could not hear."""
    t = table()
    meet(t, A, EA, 0)
    meet(t, B, EB, 0)
    assert t.liveness_bound == 4.0
    assert t.tick(1.01) == [Ping(EA), Ping(EB)]
    t.on_pong(EA, 1.02)  # B's pong is in our socket, unread, when we are stopped
    t.on_pong(EA, 31.0)  # awake: A's next pong is read first, so A looks fresh
    assert t.tick(31.0) == [Ping(EA), Ping(EB)]
    assert [m.missed for m in t.alive()] == [0, 0]
    assert t.tick(31.5) == []  # a normal gap: nothing special


def test_a_lost_peer_that_takes_connections_but_does_not_answer_waits_for_its_sign_of_life() -> (
    None
):
    """A stopped process: its host's kernel takes our connections into the accept queue, and
    each try would wait there (filling it, so the first try after it wakes lost its SYN and
    waited a second). It is not tried again unasked; its first message brings it back."""
    t = table()
    meet(t, A, EA, 0)
    lost = silence(t, A, EA, 0)
    assert t.tick(lost + 1.0) == [Connect(EA, KEYS[A])]  # one try (it may be a cut cable)
    t.on_unreachable(EA, "no answer to hello, though it accepts connections", lost + 4.0)
    assert all(not isinstance(a, Connect) for now in range(10, 100) for a in t.tick(now))
    assert t.on_traffic(A, 100) == [Connect(EA, KEYS[A])]
