"""Requests queue for one generation thread (a CPU runs one forward pass well, not several at once).

Admission is bounded: at most `max_waiting` requests wait behind the one running, beyond that a request is
refused at once (503), so a burst cannot grow the server's memory without limit. A request whose client has
gone away (or that is cancelled while it waits) gives its place back and stops at its next token.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
Work = Callable[[Callable[[], bool]], Iterator[T]]  # given "am I cancelled?", yields results
DISCONNECT_POLL_S = 0.5


class QueueFull(Exception):
    status_code = 503

    def __init__(self, limit: int) -> None:
        super().__init__(f"The server is busy: {limit} requests are already waiting for the model. "
                         "Retry later.")
        self.message = str(self)


class Scheduler:
    def __init__(self, max_waiting: int) -> None:
        self.max_waiting = max_waiting
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generation")
        self._admitted = 0  # waiting or running
        self._lock = threading.Lock()

    @property
    def admitted(self) -> int:
        with self._lock:
            return self._admitted

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """A place in the queue for the duration of the block, or QueueFull."""
        with self._lock:
            if self._admitted >= self.max_waiting + 1:
                raise QueueFull(self.max_waiting)
            self._admitted += 1
        try:
            yield
        finally:
            with self._lock:
                self._admitted -= 1

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` on the generation thread (after what is queued) and wait for its result."""
        return await asyncio.wrap_future(self._executor.submit(fn, *args))

    async def stream(self, work: Work[T],
                     client_gone: Callable[[], Awaitable[bool]] | None = None) -> AsyncIterator[T]:
        """Run `work` on the generation thread and hand its results over as they come. Leaving the iteration
        early (the client went away, or `client_gone` says so while we wait) cancels the work."""
        loop = asyncio.get_running_loop()
        results: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancelled = threading.Event()

        def deliver(kind: str, value: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening any more
                loop.call_soon_threadsafe(results.put_nowait, (kind, value))

        def run() -> None:
            try:
                if cancelled.is_set():
                    return
                items = work(cancelled.is_set)
                try:
                    for item in items:
                        deliver("item", item)
                        if cancelled.is_set():
                            break
                finally:
                    close = getattr(items, "close", None)  # a generator's own cleanup runs on this thread
                    if close is not None:
                        close()
            except BaseException as exc:
                deliver("error", exc)
            finally:
                deliver("end", None)

        self._executor.submit(run)
        try:
            while True:
                try:
                    kind, value = await asyncio.wait_for(results.get(), DISCONNECT_POLL_S)
                except TimeoutError:
                    if client_gone is not None and await client_gone():
                        return
                    continue
                if kind == "end":
                    return
                if kind == "error":
                    raise value
                yield value
        finally:
            cancelled.set()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
