# `zwalk find` on a terminal with several hits: ask which to fetch. Only when a person can
# answer (stdin and stderr are terminals); scripts, pipes and --json never see a question.
from __future__ import annotations

import asyncio
import contextlib
import sys
import threading

from rich.console import Console

QUIT = ("q", "quit", "n", "no")
ALL = ("a", "all")


def can_ask() -> bool:
    try:
        return sys.stdin.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):  # no stdin at all, or a closed one
        return False


def parse_answer(text: str, hits: int, many: bool = True) -> list[int] | None:
    """The hits (0-based) an answer names: empty for the first (the default), numbers from 1
    (several, with spaces or commas, if `many`), `a` for all of them (if `many`), `q` for
    none. None: not an answer; ask again."""
    text = text.strip().lower()
    if not text:
        return [0]
    if text in QUIT:
        return []
    if text in ALL:
        return list(range(hits)) if many else None
    words = text.replace(",", " ").split()
    if not all(w.isdigit() and 1 <= int(w) <= hits for w in words):
        return None
    if len(words) > 1 and not many:
        return None
    return list(dict.fromkeys(int(w) - 1 for w in words))


async def ask_which(err: Console, hits: int, many: bool = True) -> list[int]:
    """Ask on the terminal which hits to fetch, until the answer makes sense; end of input
    (Ctrl-D) fetches none."""
    choices = f"1-{hits}" + (", several, a for all" if many else "") + ", q to quit"
    while True:
        err.print(f"fetch which? ({choices}) [1] ", end="", highlight=False, markup=False)
        line = await _read_line()
        if line is None:
            err.print()
            return []
        answer = parse_answer(line, hits, many)
        if answer is not None:
            return answer
        err.print(f"{line.strip()!r} is not one of the hits", highlight=False, markup=False)


async def _read_line() -> str | None:
    """One line from stdin, read in a daemon thread: the event loop keeps serving the node
    meanwhile, and a Ctrl-C does not leave the command waiting for Enter on its way out."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[str | None] = loop.create_future()

    def read() -> None:
        try:
            line: str | None = sys.stdin.readline()
        except (OSError, ValueError):
            line = ""
        if not line:
            line = None  # end of input
        with contextlib.suppress(RuntimeError):  # the command ended meanwhile: loop closed
            loop.call_soon_threadsafe(_settle, got, line)

    threading.Thread(target=read, name="zwalk-prompt", daemon=True).start()
    return await got


def _settle(got: asyncio.Future[str | None], line: str | None) -> None:
    if not got.done():  # not cancelled meanwhile
        got.set_result(line)
