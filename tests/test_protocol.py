# The codec: every message round-trips; anything malformed raises ProtocolError and nothing else.
from __future__ import annotations

import os

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zwalk.core import protocol as p

ids = st.binary(min_size=p.ID_BYTES, max_size=p.ID_BYTES)
hashes = st.binary(min_size=p.HASH_BYTES, max_size=p.HASH_BYTES)
reqs = st.integers(0, p.MAX_REQ_ID)
texts = st.text(max_size=60)
names = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\\x7f"),
    min_size=1,
    max_size=60,
).filter(lambda s: s not in (".", ".."))
paths = st.lists(names, min_size=1, max_size=4).map("/".join)
sizes = st.integers(0, p.MAX_FILE_SIZE)
hits = st.builds(p.Hit, name=names, path=paths, size=sizes, cid=hashes)
incs = st.binary(min_size=p.INC_BYTES, max_size=p.INC_BYTES)
ports = st.integers(1, 65535)
hosts = (
    st.ip_addresses(v=4)
    .filter(lambda a: not a.is_multicast and not a.is_reserved and a not in p.THIS_NETWORK)
    .map(str)
)
peer_refs = st.builds(
    p.PeerRef, node=ids, name=texts, host=hosts, port=ports, key=st.binary(min_size=32, max_size=32)
)
members = st.builds(
    p.MemberInfo,
    node=st.none() | ids,
    name=texts,
    host=hosts,
    port=st.integers(0, 65535),
    version=st.none() | st.integers(0, 9),
    state=st.sampled_from(["alive", "connecting"]),
    learned=st.lists(
        st.builds(p.Learned, how=st.sampled_from(["mdns", "static"]), detail=texts), max_size=3
    ).map(tuple),
    first_seen_ms=st.integers(0, 2**53),
    last_seen_ms=st.integers(0, 2**53),
    rtt_us=st.none() | st.integers(0, 10**6),
    files=st.integers(0, p.MAX_COUNT),
)


@st.composite
def file_infos(draw: st.DrawFn) -> p.FileInfo:
    chunk_size = draw(st.sampled_from([p.MIN_CHUNK_SIZE, 1 << 20, p.MAX_CHUNK_SIZE]))
    size = draw(st.integers(0, chunk_size * 40))
    n = p.chunk_count(size, chunk_size)
    return p.FileInfo(
        req=draw(reqs),
        cid=draw(hashes),
        size=size,
        chunk_size=chunk_size,
        hashes=draw(st.binary(min_size=n * 32, max_size=n * 32)),
    )


walk_paths = st.lists(ids, min_size=0, max_size=5)


@st.composite
def walks(draw: st.DrawFn) -> p.Walk:
    origin = draw(peer_refs)
    return p.Walk(
        req=draw(reqs),
        qid=draw(ids),
        walker=draw(st.integers(0, p.MAX_WALKERS - 1)),
        hops=draw(st.integers(0, p.MAX_TTL)),
        path=(origin.node, *draw(walk_paths)),
        strategy=draw(st.sampled_from(list(p.WALK_STRATEGIES))),
        ttl=draw(st.integers(0, p.MAX_TTL)),
        check_every=draw(st.integers(0, 8)),
        origin=origin,
        kind=p.QueryKind.GLOB,
        pattern=draw(names),
        icase=draw(st.booleans()),
        stop_on_hit=draw(st.booleans()),
    )


walk_state = {
    "qid": ids,
    "walker": st.integers(0, p.MAX_WALKERS - 1),
    "hops": st.integers(0, p.MAX_TTL),
    "path": st.lists(ids, min_size=1, max_size=5).map(tuple),
}

holders = st.builds(p.Holder, node=ids, name=texts, host=hosts, port=ports, path=paths)
found_files = st.builds(
    p.FoundFile,
    name=names,
    size=sizes,
    cid=hashes,
    holders=st.lists(holders, max_size=3).map(tuple),
)
trace_hops = st.builds(
    p.TraceHop,
    node=st.none() | ids,
    name=texts,
    latency_us=st.integers(0, 10**9),
    verdict=st.sampled_from(["hit", "miss"]),
    hits=st.integers(0, 5),
)

messages = st.one_of(
    st.builds(
        p.Find,
        req=reqs,
        token=st.binary(min_size=16, max_size=16),
        kind=st.just(p.QueryKind.NAME),
        pattern=names,
        icase=st.booleans(),
        strategy=st.sampled_from(list(p.Strategy)),
        walkers=st.integers(1, 64),
        initial=st.integers(1, 64),
        ttl=st.integers(1, p.MAX_TTL),
        check_every=st.integers(0, 8),
        timeout_ms=st.integers(1, 60_000),
        want=st.integers(1, p.MAX_HITS),
    ),
    st.builds(
        p.FindOk,
        req=reqs,
        found=st.lists(found_files, max_size=3).map(tuple),
        messages=st.integers(0, 1000),
        hops=st.integers(0, 1000),
        first_hit_hops=st.none() | st.integers(0, 100),
        visited=st.integers(0, 100),
        known=st.integers(0, 100),
        elapsed_us=st.integers(0, 10**9),
        trace=st.lists(trace_hops, max_size=3).map(tuple),
    ),
    walks(),
    st.builds(p.WalkOk, req=reqs),
    st.builds(p.WalkHits, req=reqs, hits=st.lists(hits, max_size=3).map(tuple), **walk_state),
    st.builds(p.WalkCheck, req=reqs, **walk_state),
    st.builds(p.WalkGo, req=reqs, go=st.booleans(), avoid=st.lists(ids, max_size=4).map(tuple)),
    st.builds(p.WalkEnd, req=reqs, reason=st.sampled_from(list(p.EndReason)), **walk_state),
    st.builds(p.Hello, req=reqs, node=ids, name=texts, port=st.integers(0, 65535), inc=incs),
    st.builds(
        p.HelloOk,
        req=reqs,
        node=ids,
        name=texts,
        files=st.integers(0, p.MAX_COUNT),
        port=st.integers(0, 65535),
        inc=incs,
        peers=st.lists(peer_refs, max_size=3).map(tuple),
        features=st.lists(st.sampled_from(["list", "x-other"]), max_size=2).map(tuple),
    ),
    st.builds(p.Ping, req=reqs, files=st.none() | st.integers(0, p.MAX_COUNT)),
    st.builds(
        p.List,
        req=reqs,
        after=paths | st.just(""),
        prefix=paths | st.just(""),
        pattern=names | st.just("*.iso"),
        icase=st.booleans(),
        limit=st.integers(1, p.MAX_LIST),
    ),
    st.builds(
        p.ListOk,
        req=reqs,
        files=st.lists(hits, max_size=5).map(tuple),
        next=paths | st.just(""),
        total=st.integers(0, p.MAX_COUNT),
    ),
    st.builds(p.Pong, req=reqs, files=st.integers(0, p.MAX_COUNT)),
    st.builds(p.Bye, req=reqs),
    st.builds(p.Status, req=reqs, token=st.binary(min_size=16, max_size=16)),
    st.builds(
        p.StatusOk,
        req=reqs,
        node=ids,
        name=texts,
        endpoints=st.lists(peer_refs, max_size=2).map(tuple),
        files=st.integers(0, 10**6),
        bytes=st.integers(0, 2**40),
        members=st.lists(members, max_size=3).map(tuple),
        sent=st.integers(0, 10**9),
    ),
    st.builds(
        p.Search,
        req=reqs,
        qid=ids,
        kind=st.sampled_from([p.QueryKind.NAME, p.QueryKind.GLOB]),
        pattern=names,
        icase=st.booleans(),
        limit=st.integers(1, p.MAX_HITS),
    ),
    st.builds(
        p.Search,
        req=reqs,
        qid=ids,
        kind=st.just(p.QueryKind.CID),
        pattern=hashes.map(p.cid_to_text),
    ),
    st.builds(p.Hits, req=reqs, qid=ids, hits=st.lists(hits, max_size=5).map(tuple)),
    st.builds(p.GetInfo, req=reqs, cid=hashes),
    file_infos(),
    st.builds(
        p.GetChunks,
        req=reqs,
        cid=hashes,
        index=st.integers(0, p.MAX_CHUNKS - 1),
        count=st.integers(1, 64),
    ),
    st.builds(
        p.Chunks,
        req=reqs,
        cid=hashes,
        index=st.integers(0, p.MAX_CHUNKS - 1),
        count=st.integers(1, 64),
        payload=st.binary(max_size=4096),
    ),
    st.builds(p.Error, req=reqs, code=st.sampled_from(list(p.ErrorCode)), reason=texts),
)


@given(messages)
def test_every_message_round_trips(msg: p.Message) -> None:
    frames = p.encode(msg)
    back = p.decode(frames)
    assert back == msg
    assert type(back) is type(msg)
    if isinstance(msg, p.Chunks):
        assert len(frames) == 2 and bytes(back.payload) == bytes(msg.payload)  # type: ignore[attr-defined]
    else:
        assert len(frames) == 1


def test_all_message_types_are_covered() -> None:
    # The strategy above must grow with the protocol.
    covered = {
        "ping",
        "pong",
        "walk",
        "walk-ok",
        "walk-hits",
        "walk-check",
        "walk-go",
        "walk-end",
        "find",
        "find-ok",
        "bye",
        "status",
        "status-ok",
        "hello",
        "hello-ok",
        "search",
        "hits",
        "get-info",
        "file-info",
        "get-chunks",
        "chunks",
        "error",
        "list",
        "list-ok",
    }
    assert set(p.MESSAGE_TYPES) == covered


def _decode_only_protocol_errors(frames: list[bytes]) -> p.ProtocolError | None:
    """Decode; a ProtocolError is returned, anything else (DecoderBug: our own bug) fails."""
    try:
        p.decode(frames)
    except p.ProtocolError as e:
        assert e.reason and e.code in p.ErrorCode
        return e
    return None


@settings(max_examples=500)
@given(st.lists(st.binary(max_size=300), min_size=0, max_size=3))
def test_random_bytes_raise_only_protocol_error(frames: list[bytes]) -> None:
    err = _decode_only_protocol_errors(frames)
    if err is None:  # bytes that happen to be a message must be exactly that message
        msg = p.decode(frames)
        assert p.encode(msg)[0] == cbor2.dumps(cbor2.loads(frames[0]))
    else:
        assert err.req is None or 0 <= err.req <= p.MAX_REQ_ID


def test_a_bug_of_ours_in_decoding_is_not_the_peers_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    """h11's split: a check that crashes is our bug (DecoderBug, cause kept), not bad-request."""
    frames = p.encode(p.Ping(req=7))

    def broken(v: object) -> int:
        raise TypeError("a bug in a check")

    monkeypatch.setitem(p.Pong.SCHEMA, "files", broken)
    monkeypatch.setattr(p.Ping, "SCHEMA", {"x": broken})
    monkeypatch.setattr(p.Ping, "DEFAULTS", {"x": 0})
    with pytest.raises(p.DecoderBug) as caught:
        p.decode(frames)
    assert caught.value.req == 7 and isinstance(caught.value.__cause__, TypeError)
    assert not isinstance(caught.value, p.ProtocolError)


cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=500)
@given(messages, st.data())
def test_wrong_field_types_are_rejected(msg: p.Message, data: st.DataObject) -> None:
    body = cbor2.loads(p.encode(msg)[0])
    key = data.draw(st.sampled_from(sorted(body)))
    bad = data.draw(cbor_values)
    body[key] = bad
    frames = [cbor2.dumps(body)] + ([b"x"] if isinstance(msg, p.Chunks) else [])
    err = _decode_only_protocol_errors(frames)
    if err is None:
        # The replacement happened to be valid: the message now carries exactly that value.
        assert cbor2.loads(p.encode(p.decode(frames))[0])[key] == bad
    else:
        assert err.req in (None, msg.req)  # an error reply never names another request


@given(messages, st.integers(-(2**63), 2**64 - 1).filter(lambda v: v != p.PROTOCOL_VERSION))
def test_unknown_versions_are_rejected(msg: p.Message, version: int) -> None:
    body = cbor2.loads(p.encode(msg)[0])
    body["v"] = version
    frames = [cbor2.dumps(body)] + ([b"x"] if isinstance(msg, p.Chunks) else [])
    err = _decode_only_protocol_errors(frames)
    assert err is not None and err.code is p.ErrorCode.UNSUPPORTED_VERSION
    assert err.req == msg.req  # so the error reply can name the request


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "x" * (p.MAX_TEXT_BYTES + 1)),
        ("name", "é" * (p.MAX_TEXT_BYTES // 2 + 1)),  # the bound is in bytes, not characters
        ("node", b"\0" * (p.ID_BYTES + 1)),
        ("req", p.MAX_REQ_ID + 1),
        ("req", -1),
        ("req", True),
        ("port", 65536),
        ("inc", b"\0" * 9),
    ],
)
def test_oversized_or_mistyped_hello_fields(field: str, value: object) -> None:
    body = {
        "v": p.PROTOCOL_VERSION,
        "t": "hello",
        "req": 1,
        "node": b"\0" * p.ID_BYTES,
        "name": "n",
        "port": 1,
        "inc": b"\0" * 8,
    }
    body[field] = value
    assert _decode_only_protocol_errors([cbor2.dumps(body)]) is not None


@pytest.mark.parametrize(
    "name", ["../etc/passwd", "a/b", "a\\b", "..", ".", "", "a\x00b", "x\nrm", "z" * 256]
)
def test_hit_names_that_could_escape_the_download_folder_are_rejected(name: str) -> None:
    hit = {"name": name, "path": "share/x", "size": 1, "cid": b"\1" * 32}
    body = {"v": p.PROTOCOL_VERSION, "t": "hits", "req": 1, "qid": b"\0" * 16, "hits": [hit]}
    err = _decode_only_protocol_errors([cbor2.dumps(body)])
    assert err is not None and "name" in err.reason


@pytest.mark.parametrize("path", ["/abs", "a/../b", "a//b", "./a", "a\\b"])
def test_hit_paths_must_be_relative_and_plain(path: str) -> None:
    hit = {"name": "x", "path": path, "size": 1, "cid": b"\1" * 32}
    body = {"v": p.PROTOCOL_VERSION, "t": "hits", "req": 1, "qid": b"\0" * 16, "hits": [hit]}
    assert _decode_only_protocol_errors([cbor2.dumps(body)]) is not None


def test_file_info_hash_count_must_match_size() -> None:
    body = {
        "v": p.PROTOCOL_VERSION,
        "t": "file-info",
        "req": 1,
        "cid": b"\1" * 32,
        "size": 3 * p.MIN_CHUNK_SIZE,
        "chunk_size": p.MIN_CHUNK_SIZE,
        "hashes": b"\0" * 64,
    }
    err = _decode_only_protocol_errors([cbor2.dumps(body)])
    assert err is not None and "3 chunk hashes" in err.reason


def test_too_many_hits_are_rejected() -> None:
    hit = {"name": "x", "path": "s/x", "size": 1, "cid": b"\1" * 32}
    body = {
        "v": p.PROTOCOL_VERSION,
        "t": "hits",
        "req": 1,
        "qid": b"\0" * 16,
        "hits": [hit] * (p.MAX_HITS + 1),
    }
    assert _decode_only_protocol_errors([cbor2.dumps(body)]) is not None


@pytest.mark.parametrize(
    "raw",
    [
        bytes.fromhex("c11a514b67b0"),  # a tagged datetime
        bytes.fromhex("9bffffffffffffffff"),  # an array claiming 2**64-1 items
        bytes.fromhex("bf617601ff"),  # an indefinite-length map
        b"\x81" * 10_000 + b"\x00",  # deep nesting
        cbor2.dumps({"v": p.PROTOCOL_VERSION, "t": "hello", "t2": 1}),
        cbor2.dumps([1, "hello"]),
        cbor2.dumps({"v": p.PROTOCOL_VERSION, "t": "no-such-type", "req": 1}),
        bytes.fromhex("a3617601617401617401"),  # duplicate key
    ],
)
def test_hostile_cbor_is_rejected(raw: bytes) -> None:
    assert _decode_only_protocol_errors([raw]) is not None


def test_oversized_header_is_rejected_before_parsing() -> None:
    err = _decode_only_protocol_errors([b"\0" * (p.MAX_HEADER + 1)])
    assert err is not None and err.code is p.ErrorCode.TOO_LARGE


def test_payload_frame_rules() -> None:
    chunks = p.Chunks(req=1, cid=b"\1" * 32, index=0, count=1, payload=b"data")
    header = p.encode(chunks)[0]
    assert _decode_only_protocol_errors([header]) is not None  # payload missing
    hello = p.encode(p.Hello(req=1, node=os.urandom(16), name="n", port=0, inc=b"i" * 8))[0]
    assert _decode_only_protocol_errors([hello, b"extra"]) is not None


def test_locally_built_messages_are_validated_too() -> None:
    with pytest.raises(p.ProtocolError):
        p.Hit(name="../x", path="a", size=1, cid=b"\1" * 32)
    with pytest.raises(p.ProtocolError):
        p.Search(req=1, qid=b"\0" * 16, kind=p.QueryKind.CID, pattern="b3:xyz")


def test_cid_text_round_trip() -> None:
    cid = bytes(range(32))
    assert p.cid_from_text(p.cid_to_text(cid).upper().replace("B3:", "b3:")) == cid
    with pytest.raises(ValueError):
        p.cid_from_text("b3:1234")


@pytest.mark.parametrize(
    "raw",
    [
        cbor2.dumps({"v": 10**1000, "t": "hello", "req": 1}),  # a bignum (tag 2)
        cbor2.dumps({"v": 1.0, "t": "hello", "req": 1}),  # a float
        cbor2.dumps({"v": p.PROTOCOL_VERSION, "t": "hello", "req": 1}) + b"\x00",  # trailing bytes
        bytes.fromhex("d8236161"),  # tag 35 (regex)
        bytes.fromhex("d9d9f7a0"),  # self-describe tag 55799
        bytes.fromhex("a1617601f7"),  # 'undefined'
    ],
)
def test_tags_floats_and_trailing_bytes_are_refused_before_parsing(raw: bytes) -> None:
    with pytest.raises(p.ProtocolError):
        p.check_wellformed(raw)
    assert _decode_only_protocol_errors([raw]) is not None


def test_error_reasons_stay_within_bounds() -> None:
    body = {"v": 10**300, "t": "hello", "req": 5}
    err = p.ProtocolError("x" * 5000)
    assert len(err.reason) <= p.MAX_REASON_CHARS
    # Whatever the input, the error reply we would build from it is a valid message.
    raw = cbor2.dumps(body)
    e = _decode_only_protocol_errors([raw])
    assert e is not None
    p.encode(p.Error(req=e.req or 0, code=e.code, reason=e.reason))


def test_names_that_are_not_unicode_are_refused() -> None:
    with pytest.raises(p.ProtocolError):
        p.Hit(name="bad\udcff", path="s/x", size=1, cid=b"\1" * 32)


@pytest.mark.parametrize(
    "host",
    [
        "224.0.0.251",
        "0.0.0.0",  # noqa: S104
        "0.1.2.3",
        "240.0.0.1",
        "255.255.255.255",
        "example.com",
        "::1",
        "1.2.3",
        "01.2.3.4",
    ],
)
def test_gossiped_addresses_must_be_unicast_ipv4(host: str) -> None:
    ref = {"node": b"\1" * 16, "name": "x", "host": host, "port": 1}
    body = {
        "v": p.PROTOCOL_VERSION,
        "t": "hello-ok",
        "req": 1,
        "node": b"\0" * 16,
        "name": "n",
        "files": 0,
        "port": 1,
        "inc": b"\0" * 8,
        "peers": [ref],
    }
    assert _decode_only_protocol_errors([cbor2.dumps(body)]) is not None
