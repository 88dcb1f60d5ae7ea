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
