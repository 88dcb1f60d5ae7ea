# What a user searches for, and whether a file name or content id matches it.
# Pure functions: the index and the walk both use them, the network never sees a Query object.
from __future__ import annotations

import fnmatch
import string
import unicodedata
from dataclasses import dataclass

from zwalk.core.protocol import MAX_PATH_BYTES, QueryKind, cid_from_text

GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True, slots=True, kw_only=True)
class Query:
    kind: QueryKind
    pattern: str
    icase: bool = False

    def matches(self, name: str, cid: bytes) -> bool:
        if self.kind is QueryKind.CID:
            return cid == cid_from_text(self.pattern)
        # One spelling of each character: a name typed on Linux (NFC) matches the same name
        # stored by macOS (NFD), and the other way round.
        name, pattern = nfc(name), nfc(self.pattern)
        if self.icase:
            name, pattern = name.casefold(), pattern.casefold()
        if self.kind is QueryKind.GLOB:
            return fnmatch.fnmatchcase(name, pattern)
        return name == pattern


def nfc(text: str) -> str:
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


def parse_query(text: str, *, icase: bool = False) -> Query:
    """A command-line query: a content id ('b3:' and 64 hex digits, or the 64 hex digits alone
    that b3sum prints), a glob, or an exact file name (in that order)."""
    text = nfc(text.strip())
    if not text:
        raise ValueError("empty query")
    if "/" in text or "\\" in text:
        raise ValueError(
            "a query matches file names, not paths: leave out the folders (or end it with '/' "
            "to fetch a whole folder, such as photos/2024/)"
        )
    if text.lower().startswith("b3:"):
        return Query(kind=QueryKind.CID, pattern="b3:" + cid_from_text(text).hex())
    if is_bare_cid(text):
        return Query(kind=QueryKind.CID, pattern="b3:" + text.lower())
    if GLOB_CHARS & set(text):
        return Query(kind=QueryKind.GLOB, pattern=text, icase=icase)
    return Query(kind=QueryKind.NAME, pattern=text, icase=icase)


def parse_folder(text: str) -> str | None:
    """A folder query: a path as `zwalk ls` shows it (the share's name first) that ends in '/',
    such as `photos/` or `photos/2024/`. Returns the prefix to list (leading '/' dropped, one
    trailing '/'), or None if `text` names no folder (it does not end in '/')."""
    text = nfc(text.strip())
    if not text.endswith("/"):
        return None
    path = text.strip("/")
    if not path:
        raise ValueError("name a folder as `zwalk ls` shows it, the share's name first: photos/")
    if "\\" in path or any(ord(c) < 0x20 or c == "\x7f" for c in path):
        raise ValueError("a folder is written with '/' between its parts, without control codes")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise ValueError("a folder's parts must not be empty, '.' or '..'")
    if len(path.encode()) + 1 > MAX_PATH_BYTES:
        raise ValueError(f"a folder path takes at most {MAX_PATH_BYTES - 1} bytes")
    return path + "/"


def is_bare_cid(text: str) -> bool:
    """64 hex digits, as b3sum prints a hash: read as a content id, not as a file name."""
    text = text.strip()
    return len(text) == 64 and all(c in string.hexdigits for c in text)


def glob_literal(pattern: str) -> str:
    """The longest run of plain characters in a glob: every name the glob matches holds it, so
    an index can look for it first (str.find) and check the whole pattern only there. Brackets
    follow fnmatch: `[!...]` and `[]...]` are sets, a `[` that never closes is a plain `[`."""
    best = run = ""
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c in "*?":
            best, run = max(best, run, key=len), ""
        elif c == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                run += c  # no closing bracket: a plain '['
            else:
                best, run = max(best, run, key=len), ""
                i = j + 1
        else:
            run += c
    return max(best, run, key=len)
