# Who owns a task, and how a thread's work survives our cancellation: the two idioms of the
# asyncio shell, written once.
#
# Every task has an owner that awaits it: the node's TaskGroup (`Node.spawn`), or a TaskSet held
# by one piece of work (a download, a find) that cancels and awaits what is left when it ends. A
# CancelledError is never swallowed: a TaskSet waits for its tasks without catching ours.
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from types import TracebackType
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class TaskSet:
    """Tasks started for one piece of work; `async with` cancels and awaits those still
    running when the work ends, however it ends. A task that fails is logged, not lost."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a task of %s failed", self.what, exc_info=task.exception())

    async def __aenter__(self) -> TaskSet:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            # asyncio.wait never raises for the tasks' own ends, and lets our cancellation through.
            await asyncio.wait(tasks)


async def in_thread(
    fn: Callable[..., T],
    *args: object,
    executor: Executor | None = None,
) -> T:
    """Run `fn(*args)` in a worker thread. If we are cancelled meanwhile, wait for the thread
    to finish before the CancelledError goes on: its buffers and files are released by the
    caller on the way out, and must not be while the thread still uses them."""
    loop = asyncio.get_running_loop()
    work = loop.run_in_executor(executor, fn, *args)
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        await asyncio.wait([work])
        raise
