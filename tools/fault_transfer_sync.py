"""Checking the order of a download's system calls in an `strace -f` log: each progress record
must be written after an fdatasync of the .part that began once every chunk the record claims was
written. A killed process keeps the page cache, so kills cannot show what a power loss would
lose; this order is what makes the record safe then too (tools/fault_transfer.py's power-loss).

    strace -f -qq -s 65536 -xx -e trace=openat,close,pwrite64,fdatasync,fsync -o LOG zwalk find ...
"""

from __future__ import annotations

import codecs
import re

from zwalk.core import protocol as p
from zwalk.store import resume

_LINE = re.compile(r"^(\d+)\s+(?:<\.\.\. (\w+) resumed>|(\w+)\()(.*)$")
_STR = re.compile(r'"((?:[^"\\]|\\.)*)"')
_END = re.compile(r"^(.*)\)\s+= (-?\d+|\?)")  # arguments, return value
_PWRITE = re.compile(r'^(\d+), "(?:[^"\\]|\\.)*"(?:\.\.\.)?, (\d+), (\d+)$')


def _calls(text: str) -> list[tuple[int, int, str, str, str, int]]:
    """(start line, end line, name, arguments, return value, pid) of each syscall in an
    `strace -f` log, a call split by another thread's put back together."""
    pending: dict[int, tuple[int, str, str]] = {}
    calls = []
    for n, line in enumerate(text.splitlines()):
        m = _LINE.match(line)
        if m is None:
            continue
        pid, rest = int(m[1]), m[4]
        if m[2]:  # <... name resumed>
            start, name, head = pending.pop(pid, (n, m[2], ""))
            rest = head + rest
        else:
            start, name = n, m[3]
        if rest.endswith("<unfinished ...>"):
            pending[pid] = (start, name, rest[: -len("<unfinished ...>")].rstrip())
            continue
        done = _END.match(rest)
        if done is not None:
            calls.append((start, n, name, done[1], done[2], pid))
    return calls


def _unquote(s: str) -> bytes:
    """A string as strace prints it (-xx: every byte as \\xHH), as bytes."""
    return codecs.escape_decode(s.encode())[0]  # type: ignore[no-any-return]


def sync_order(text: str, info: p.FileInfo) -> tuple[int, list[str]]:
    """Check an strace log of one download: (record writes, problems found)."""
    kind: dict[int, str] = {}
    covered: dict[int, list[tuple[int, int]]] = {}
    written_at: dict[int, int] = {}  # chunk -> line by which all of it was written
    synced: dict[int, int] = {}  # pid -> start line of its last fdatasync of the .part
    writes, problems = 0, []
    cs = info.chunk_size
    # in the order the calls ended: a chunk counts as written once its pwrite has returned
    for start, end, name, args, ret, pid in sorted(_calls(text), key=lambda c: c[1]):
        if name == "openat" and (m := _STR.search(args)) and ret.isdigit():
            path = _unquote(m[1]).decode(errors="replace")
            if path.endswith(".part") or path.endswith(".part.progress"):
                kind[int(ret)] = "progress" if path.endswith(".progress") else "part"
        elif name == "close" and args.isdigit():
            kind.pop(int(args), None)
        elif name in ("fdatasync", "fsync") and args.isdigit() and kind.get(int(args)) == "part":
            if ret == "0":
                synced[pid] = start
        elif name == "pwrite64" and (m := _PWRITE.match(args)) and ret.isdigit():
            fd, offset = int(m[1]), int(m[3])
            if kind.get(fd) == "part":
                for i in range(offset // cs, (offset + int(ret) - 1) // cs + 1):
                    covered.setdefault(i, []).append((offset, offset + int(ret)))
                    lo, hi = i * cs, min(info.size, (i + 1) * cs)
                    if i not in written_at and _union(covered[i], lo, hi) == hi - lo:
                        written_at[i] = end
            elif kind.get(fd) == "progress":
                writes += 1
                body = _unquote(_STR.search(args)[1])  # type: ignore[index]
                try:
                    claimed = resume.decode(body, info)
                except resume.BadRecord as e:
                    problems.append(f"line {start}: record unreadable ({e})")
                    continue
                sync = synced.pop(pid, None)
                if sync is None:
                    problems.append(f"line {start}: record written without an fdatasync first")
                    continue
                late = [i for i in claimed if written_at.get(i, 1 << 60) >= sync]
                if late:
                    problems.append(f"line {start}: claims {late[:3]}, written after the sync")
    return writes, problems


def _union(spans: list[tuple[int, int]], lo: int, hi: int) -> int:
    """Bytes of [lo, hi) the spans cover."""
    total, at = 0, lo
    for a, b in sorted(spans):
        a, b = max(a, at), min(b, hi)
        if b > a:
            total, at = total + b - a, b
    return total
