from __future__ import annotations

import pytest

from zwalk.core.protocol import QueryKind
from zwalk.core.query import parse_query

CID = "b3:" + "ab" * 32


def test_parse_picks_the_kind() -> None:
    assert parse_query("report.pdf").kind is QueryKind.NAME
    assert parse_query("*.iso").kind is QueryKind.GLOB
    assert parse_query("report-202?.pdf").kind is QueryKind.GLOB
    q = parse_query(CID.upper().replace("B3:", "b3:"))
    assert q.kind is QueryKind.CID and q.pattern == CID


def test_the_bare_hex_b3sum_prints_is_a_content_id() -> None:
    q = parse_query("AB" * 32)
    assert q.kind is QueryKind.CID and q.pattern == CID
    assert parse_query("ab" * 31).kind is QueryKind.NAME  # 62 digits: a name like any other


def test_names_match_whatever_unicode_form_they_are_spelled_in() -> None:
    nfc, nfd = "caf\u00e9.txt", "cafe\u0301.txt"  # é as one code point, and as e + accent
    other = bytes(32)
    assert parse_query(nfd).matches(nfc, other) and parse_query(nfc).matches(nfd, other)
    assert parse_query("caf\u00e9*").matches(nfd, other)
    assert parse_query("CAFE\u0301.TXT", icase=True).matches(nfc, other)


@pytest.mark.parametrize("bad", ["", "   ", "dir/file", "b3:nothex", "a\\b"])
def test_parse_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_query(bad)


def test_matching() -> None:
    cid = bytes.fromhex("ab" * 32)
    other = bytes(32)
    assert parse_query("Report.pdf").matches("Report.pdf", other)
    assert not parse_query("report.pdf").matches("Report.pdf", other)
    assert parse_query("report.pdf", icase=True).matches("REPORT.PDF", other)
    assert parse_query("*.iso").matches("debian.iso", other)
    assert not parse_query("*.iso").matches("debian.ISO", other)
    assert parse_query("*.iso", icase=True).matches("debian.ISO", other)
    assert parse_query("report-202?.pdf").matches("report-2024.pdf", other)
    assert parse_query(CID).matches("anything", cid)
    assert not parse_query(CID).matches("anything", other)
