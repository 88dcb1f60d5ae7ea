# Showing things to a person: sizes in one unit, columns that hold wide characters, peers by
# name and id, and the progress bar of a download. Transfer code never imports rich: the bar is
# driven by the download's progress callback.
from __future__ import annotations

import collections
import time
from types import TracebackType

from rich.cells import cell_len
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn
from rich.text import Text

from zwalk.core.units import mib

RATE_SPAN = 3.0  # seconds of progress the shown rate is taken over


def pad(text: str, width: int) -> str:
    """`text` padded to `width` terminal cells (a CJK character takes two)."""
    return text + " " * max(0, width - cell_len(text))


def peer_label(name: str, node: bytes | None, endpoint: str = "") -> str:
    """'h1 (0fdcb51f506b)': a name alone is ambiguous, an id alone unreadable."""
    short = node.hex()[:12] if node else ""
    if name and short:
        return f"{name} ({short})"
    return name or short or endpoint or "?"


def mib_per_s(rate: float) -> str:
    return f"{rate / (1 << 20):.1f} MiB/s"


class _Sizes(ProgressColumn):
    def render(self, task: Task) -> Text:
        total = int(task.total or 0)
        done = int(task.completed)
        pct = 100 * done / total if total else 100.0
        return Text(f"{mib(done)[:-4]}/{mib(total)} {pct:3.0f}%")


class _Rate(ProgressColumn):
    """Our own rate, over the last few seconds of this run only: not rich's estimate, which
    counts the resumed part of the file as if it had just arrived."""

    def render(self, task: Task) -> Text:
        rate = task.fields.get("rate")
        return Text(
            mib_per_s(rate) if rate is not None else "…  MiB/s", style="progress.data.speed"
        )


class _Left(ProgressColumn):
    def render(self, task: Task) -> Text:
        rate = task.fields.get("rate")
        left = (task.total or 0) - task.completed
        if not rate or left <= 0:
            return Text("")
        s = int(left / rate)
        return Text(
            f"{s // 60}:{s % 60:02d} left"
            if s < 3600
            else f"{s // 3600}h{s % 3600 // 60:02d}m left"
        )


class TransferBar:
    """A progress bar for one download on the error console; `update` is the download's
    progress callback. The bar starts at what a resumed download already had."""

    def __init__(self, console: Console, name: str) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            _Sizes(),
            _Rate(),
            _Left(),
            TextColumn("{task.fields[sources]}"),
            console=console,
            transient=True,
        )
        self._name = name
        self._task: TaskID | None = None
        self._samples: collections.deque[tuple[float, int]] = collections.deque()

    def __enter__(self) -> TransferBar:
        self._progress.__enter__()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.__exit__(t, e, tb)

    def update(self, done: int, total: int, sources: int) -> None:
        now = time.monotonic()
        label = f"{sources} source" if sources == 1 else f"{sources} sources"
        if self._task is None:
            what = f"resuming {self._name}" if done else self._name
            self._task = self._progress.add_task(
                what, total=total, completed=done, sources=label, rate=None
            )
        samples = self._samples
        samples.append((now, done))
        while len(samples) > 2 and samples[1][0] < now - RATE_SPAN:
            samples.popleft()
        t0, d0 = samples[0]
        rate = (done - d0) / (now - t0) if now - t0 >= 0.5 else None
        self._progress.update(self._task, completed=done, total=total, sources=label, rate=rate)
