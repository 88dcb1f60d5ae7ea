# Listing what a peer shares (docs/PROTOCOL.md sections 6.23 and 6.24): `list` asks for one page
# of files in path order, `list-ok` answers it with a cursor for the next. An optional request:
# a node that answers it says "list" in its hello-ok's `features` (section 3).
from __future__ import annotations

from dataclasses import dataclass

from zwalk.core.fields import Message, QueryKind, _fail, boolean, struct_list, text, uint
from zwalk.core.limits import MAX_COUNT, MAX_LIST, MAX_PATH_BYTES, MAX_PATTERN_BYTES
from zwalk.core.messages import Hit

FEATURE_LIST = "list"


@dataclass(frozen=True, slots=True, kw_only=True)
class List(Message):
    """One page of the files a peer shares: those whose path sorts after `after` (the cursor
    of the previous page; '' for the first) and starts with `prefix`, and whose name matches
    `pattern` (a glob; '' for any)."""

    TYPE = "list"
    SCHEMA = {
        "after": text(MAX_PATH_BYTES),
        "prefix": text(MAX_PATH_BYTES),
        "pattern": text(MAX_PATTERN_BYTES),
        "icase": boolean,
        "limit": uint(MAX_LIST, minimum=1),
    }
    DEFAULTS = {"after": "", "prefix": "", "pattern": "", "icase": False, "limit": MAX_LIST}
    after: str = ""
    prefix: str = ""
    pattern: str = ""
    icase: bool = False
    limit: int = MAX_LIST

    @property
    def kind(self) -> QueryKind:
        return QueryKind.GLOB if any(c in self.pattern for c in "*?[") else QueryKind.NAME

    def validate(self) -> None:
        if "\n" in self.pattern:
            raise _fail("pattern must be one line")


@dataclass(frozen=True, slots=True, kw_only=True)
class ListOk(Message):
    """A page of files in path order, and where the next one starts ('' after the last)."""

    TYPE = "list-ok"
    SCHEMA = {
        "files": struct_list(Hit, MAX_LIST),
        "next": text(MAX_PATH_BYTES),
        "total": uint(MAX_COUNT),
    }
    files: tuple[Hit, ...]
    next: str
    total: int  # files the node shares in all (not only those matching)
