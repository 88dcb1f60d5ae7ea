# What a user searches for, and whether a file name or content id matches it.
# Pure functions: the index and the walk both use them, the network never sees a Query object.
from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from zwalk.protocol import QueryKind, cid_from_text

GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True, slots=True, kw_only=True)
class Query:
    kind: QueryKind
    pattern: str
    icase: bool = False

    def matches(self, name: str, cid: bytes) -> bool:
        if self.kind is QueryKind.CID:
            return cid == cid_from_text(self.pattern)
        if self.icase:
            name, pattern = name.casefold(), self.pattern.casefold()
        else:
            pattern = self.pattern
        if self.kind is QueryKind.GLOB:
            return fnmatch.fnmatchcase(name, pattern)
        return name == pattern


def parse_query(text: str, *, icase: bool = False) -> Query:
    """A command-line query: a content id, a glob, or an exact file name (in that order)."""
    text = text.strip()
    if not text:
        raise ValueError("empty query")
    if "/" in text or "\\" in text:
        raise ValueError("a query matches file names, not paths: leave out the folders")
    if text.lower().startswith("b3:"):
        return Query(kind=QueryKind.CID, pattern="b3:" + cid_from_text(text).hex())
    if GLOB_CHARS & set(text):
        return Query(kind=QueryKind.GLOB, pattern=text, icase=icase)
    return Query(kind=QueryKind.NAME, pattern=text, icase=icase)
