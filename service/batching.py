"""Continuous batching: every sample is a row in one of the engine's slots; rows join and leave between chunks.

One background task owns the sampler's `Engine` (tweetbot.runtime.sample). It loops: move waiting rows into free
slots, run one chunk (STREAM_CHUNK steps of every busy row, one compiled call) in a worker thread so the
event loop keeps serving meanwhile, then hand each row the text it wrote. A row that ended is answered at
once and its slot takes the next waiting row before the next chunk, so a short post never waits for a long
one, and a request that arrives while others run joins them within a chunk. A row's text depends only on its
own seed and steps, so it is the text the request gets alone.

At most `max_queue` rows wait for a slot; a request that would overflow the queue is refused whole with
`QueueFull` (the app answers 503). An engine of one slot is batching off, which the load benchmark compares
against.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tweetbot.runtime.sample import Engine, SampleRequest


class QueueFull(Exception):
    """More rows wait for a slot than the service accepts: the client should retry shortly."""


@dataclass(eq=False)  # a row is its own identity: the engine finds it by `==`
class _Row:
    request: SampleRequest
    # The text of each chunk as it comes, then None once the row ended (or the error that ended it).
    texts: asyncio.Queue[str | Exception | None] = field(default_factory=asyncio.Queue)
    enqueued: float = field(default_factory=time.perf_counter)
    left: bool = False  # nobody reads the text any more: free the slot


class ContinuousBatcher:
    def __init__(
        self,
        engine: Engine,
        *,
        max_queue: int,
        on_chunk: Callable[[int, list[float]], None] = lambda busy, queue_waits_s: None,
    ):
        """`on_chunk(busy rows, queue waits of the rows that just joined)` observes each compiled call."""
        self._engine = engine
        self._max_queue = max_queue
        self._on_chunk = on_chunk
        self._waiting: deque[_Row] = deque()
        self._arrived = asyncio.Event()
        # One thread: compiled calls never overlap, so each gets every core.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sampler")
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._serve(), name="continuous-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._executor.shutdown(wait=True)  # a chunk that was running finishes first
        stopped = RuntimeError("the service is stopping")
        for row in [*self._waiting, *self._engine.owners]:
            if isinstance(row, _Row):
                row.texts.put_nowait(stopped)

    async def generate(self, requests: Sequence[SampleRequest]) -> list[str]:
        """The text of each request (without its prime), whichever rows it shares the slots with."""
        rows = self._enqueue(requests)
        return list(await asyncio.gather(*(self._text(row) for row in rows)))

    def stream(self, request: SampleRequest) -> AsyncIterator[str]:
        """The text of `request`, a chunk at a time as it is written; queued now, so QueueFull comes now."""
        (row,) = self._enqueue([request])
        return self._chunks(row)

    def _enqueue(self, requests: Sequence[SampleRequest]) -> list[_Row]:
        if len(self._waiting) + len(requests) > self._max_queue:
            raise QueueFull(f"the service is at capacity ({len(self._waiting)} samples waiting): retry in a moment")
        rows = [_Row(request) for request in requests]
        self._waiting.extend(rows)
        self._arrived.set()
        return rows

    async def _chunks(self, row: _Row) -> AsyncIterator[str]:
        try:
            while (text := await row.texts.get()) is not None:
                if isinstance(text, Exception):
                    raise text
                yield text
        finally:
            row.left = True  # also when the reader stops early (a client that went away)

    async def _text(self, row: _Row) -> str:
        return "".join([text async for text in self._chunks(row)])

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._engine.busy and not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
            joined = self._fill_free_slots()
            rows = [row for row in self._engine.owners if row is not None]
            if not rows:
                continue  # every waiting row had left
            self._on_chunk(len(rows), [time.perf_counter() - row.enqueued for row in joined])
            try:
                written = await loop.run_in_executor(self._executor, self._engine.advance)
            except Exception as error:  # these rows cannot go on; the worker lives on for the next ones
                for row in rows:
                    row.texts.put_nowait(error)
                    self._engine.drop(row)
                continue
            for row, text, ended in written:
                if text:
                    row.texts.put_nowait(text)
                if ended:
                    row.texts.put_nowait(None)
                elif row.left:
                    self._engine.drop(row)

    def _fill_free_slots(self) -> list[_Row]:
        joined = []
        while self._waiting and self._engine.free:
            row = self._waiting.popleft()
            if row.left:
                continue
            try:
                self._engine.add(row.request, owner=row)
            except Exception as error:  # a request the sampler refuses fails alone, never the worker
                row.texts.put_nowait(error)
                continue
            joined.append(row)
        return joined
