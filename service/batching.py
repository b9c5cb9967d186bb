"""Micro-batching: concurrent requests share one compiled sampler call.

Every sample a request asks for is one row on a queue. A single worker takes the first row, then every row
already queued, then waits for more until it holds `max_batch` rows or `max_wait` has passed, and runs them
as ONE call in a worker thread (so the event loop keeps accepting requests meanwhile). Rows that arrive while
that call runs form the next batch at once, so under load batches fill up with no wait at all (`max_wait` 0,
the default); a wait only helps when the sampler is slow next to the gaps between requests. `max_batch=1`
turns batching off (one call per row), which the load benchmark compares against.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Row = TypeVar("Row")
Result = TypeVar("Result")


@dataclass
class _Pending(Generic[Row, Result]):
    row: Row
    future: asyncio.Future[Result]
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher(Generic[Row, Result]):
    def __init__(
        self,
        run_batch: Callable[[list[Row]], Sequence[Result]],
        *,
        max_batch: int,
        max_wait_s: float,
        on_batch: Callable[[int, list[float]], None] = lambda size, waits: None,
    ):
        """`run_batch` maps rows to results in order; `on_batch(size, queue_waits_s)` observes each batch."""
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Pending[Row, Result]] = asyncio.Queue()
        # One thread: sampler calls never overlap, so each gets both cores.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sampler")
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._serve(), name="micro-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        while not self._queue.empty():
            self._queue.get_nowait().future.cancel()
        self._executor.shutdown(wait=True)

    async def submit(self, rows: Sequence[Row]) -> list[Result]:
        """The results of `rows`, computed in whichever batches they land in."""
        loop = asyncio.get_running_loop()
        pending = [_Pending(row, loop.create_future()) for row in rows]
        for item in pending:
            self._queue.put_nowait(item)
        return list(await asyncio.gather(*(item.future for item in pending)))

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            started = time.perf_counter()
            batch = [item for item in batch if not item.future.done()]  # a client that left needs no sample
            if not batch:
                continue
            self._on_batch(len(batch), [started - item.enqueued for item in batch])
            try:
                results = await loop.run_in_executor(self._executor, self._run_batch, [i.row for i in batch])
            except asyncio.CancelledError:  # stopping: nobody will answer these rows
                for item in batch:
                    item.future.cancel()
                raise
            except Exception as error:  # the callers report it; the worker lives on for the next batch
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                continue
            for item, result in zip(batch, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)

    async def _gather(self) -> list[_Pending[Row, Result]]:
        batch = [await self._queue.get()]
        deadline = time.perf_counter() + self._max_wait_s
        while len(batch) < self._max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch
