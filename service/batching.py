"""Continuous batching: every sample is a row in one of the engine's slots; rows join and leave between chunks.

One background task owns the `Engine` (service/engine.py). It loops: move waiting rows into free
slots, run one chunk (STREAM_CHUNK steps of every busy row, one compiled call) in a worker thread so the
event loop keeps serving meanwhile, then hand each row the text it wrote. A row that ended is answered at
once and its slot takes the next waiting row before the next chunk, so a short post never waits for a long
one, and a request that arrives while others run joins them within a chunk. A row's text depends only on its
own seed and steps, so it is the text the request gets alone.

Every row belongs to a client (its address, see service/fairness.py), and the slots are shared fairly:
- a free slot goes to the waiting row of the client with the fewest rows in slots (the earliest first among
  equals), and no client holds more than `client_slots` slots, so one client's 64 long samples leave room
  for everybody else's posts to start within a chunk;
- a client may have at most `client_samples` rows in flight (waiting or in a slot); a request that would pass
  that is refused whole with `TooManyRequests` (the app answers 429).
At most `max_queue` rows wait for a slot; a request that would overflow the queue is refused whole with
`QueueFull` (503). Only live rows count: a row whose reader went away (a client that disconnected) leaves the
queue at once, or its slot after the chunk under way. `interrupt` (a shutdown's deadline) ends every row in
flight with `Stopping`, the waiting ones at once and the running ones after the chunk under way. An engine of
one slot is batching off, which the load benchmark compares against.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

from service.engine import Engine
from service.fairness import TooManyRequests
from tweetbot.runtime.sample import SampleRequest


class QueueFull(Exception):
    """More rows wait for a slot than the service accepts: the client should retry shortly."""


class Stopping(Exception):
    """The service is stopping before this row ended: the client should retry (elsewhere)."""


@dataclass(eq=False)  # a row is its own identity: the engine finds it by `==`
class _Row:
    request: SampleRequest
    client: str
    # The text of each chunk as it comes, then None once the row ended (or the error that ended it).
    texts: asyncio.Queue[str | Exception | None] = field(default_factory=asyncio.Queue)
    enqueued: float = field(default_factory=time.perf_counter)
    state: Literal["waiting", "running", "done"] = "waiting"
    left: bool = False  # nobody reads the text any more: free the slot


class _Reader:
    """The text of one row, chunk by chunk (an async iterator); `aclose` means nobody reads it any more."""

    def __init__(self, row: _Row, leave: Callable[[_Row], None]):
        self._row = row
        self._leave = leave

    def __aiter__(self) -> _Reader:
        return self

    async def __anext__(self) -> str:
        text = await self._row.texts.get()
        if text is None:
            raise StopAsyncIteration
        if isinstance(text, Exception):
            raise text
        return text

    async def text(self) -> str:
        return "".join([text async for text in self])

    async def aclose(self) -> None:
        self._leave(self._row)


class ContinuousBatcher:
    def __init__(
        self,
        engine: Engine,
        *,
        max_queue: int,
        client_samples: int,
        client_slots: int,
        on_chunk: Callable[[int, list[float]], None] = lambda busy, queue_waits_s: None,
    ):
        """`on_chunk(busy rows, queue waits of the rows that just joined)` observes each compiled call."""
        self._engine = engine
        self._max_queue = max_queue
        self._client_samples = client_samples
        self._client_slots = client_slots
        self._on_chunk = on_chunk
        self._waiting: dict[str, deque[_Row]] = {}  # each client's waiting rows, oldest first (no empty deque)
        self._queued = 0  # rows waiting, all clients together
        self._in_flight: Counter[str] = Counter()  # each client's rows waiting or in a slot
        self._in_slots: Counter[str] = Counter()  # each client's rows in a slot
        self._arrived = asyncio.Event()
        self._interrupting = False
        # One thread: compiled calls never overlap, so each gets every core.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sampler")
        self._worker: asyncio.Task | None = None

    @property
    def in_flight(self) -> int:
        """Rows waiting or in a slot."""
        return self._queued + self._engine.busy

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._serve(), name="continuous-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._executor.shutdown(wait=True)  # a chunk that was running finishes first
        self._interrupt_waiting()
        self._interrupt_running()

    def interrupt(self) -> None:
        """End every row in flight with `Stopping`; the batcher goes on serving the rows that come later."""
        self._interrupt_waiting()
        self._interrupting = True  # the worker ends the running rows between two chunks
        self._arrived.set()

    def _interrupt_waiting(self) -> None:
        for row in [row for rows in self._waiting.values() for row in rows]:
            self._leave(row)
            row.texts.put_nowait(Stopping("the service is stopping"))

    def _interrupt_running(self) -> None:
        self._interrupting = False
        for row in self._engine.owners:
            if isinstance(row, _Row):
                self._engine.drop(row)
                self._done(row)
                row.texts.put_nowait(Stopping("the service is stopping"))

    async def generate(self, requests: Sequence[SampleRequest], client: str) -> list[str]:
        """The text of each request (without its prime), whichever rows it shares the slots with."""
        readers = [_Reader(row, self._leave) for row in self._enqueue(requests, client)]
        try:
            return list(await asyncio.gather(*(reader.text() for reader in readers)))
        finally:  # a request cancelled (its client went away) or failed: its other rows leave too
            for reader in readers:
                await reader.aclose()

    def stream(self, request: SampleRequest, client: str) -> AsyncIterator[str]:
        """The text of `request`, a chunk at a time as it is written; queued now, so a refusal comes now.
        Closing it (even unread) takes the row out of the queue or its slot."""
        (row,) = self._enqueue([request], client)
        return _Reader(row, self._leave)

    def _enqueue(self, requests: Sequence[SampleRequest], client: str) -> list[_Row]:
        if self._in_flight[client] + len(requests) > self._client_samples:
            raise TooManyRequests(
                f"{self._in_flight[client]} of your samples are still being written, and one client may have"
                f" {self._client_samples} in flight: retry when they are done",
                retry_after_s=1,
            )
        if self._queued + len(requests) > self._max_queue:
            raise QueueFull(f"the service is at capacity ({self._queued} samples waiting): retry in a moment")
        rows = [_Row(request, client) for request in requests]
        self._waiting.setdefault(client, deque()).extend(rows)
        self._queued += len(rows)
        self._in_flight[client] += len(rows)
        self._arrived.set()
        return rows

    def _leave(self, row: _Row) -> None:
        """Nobody reads `row` any more: a waiting row leaves the queue now, a running one its slot after this chunk."""
        if row.left:
            return
        row.left = True
        if row.state == "waiting":
            waiting = self._waiting[row.client]
            waiting.remove(row)
            if not waiting:
                del self._waiting[row.client]
            self._queued -= 1
            self._done(row)

    def _done(self, row: _Row) -> None:
        if row.state == "running":
            self._in_slots[row.client] -= 1
        row.state = "done"
        self._in_flight[row.client] -= 1
        for counts in (self._in_flight, self._in_slots):  # no entry per client that ever came
            if counts[row.client] <= 0:
                del counts[row.client]

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._interrupting:
                self._interrupt_running()
            if not self._engine.busy and not self._queued:
                self._arrived.clear()
                await self._arrived.wait()
                continue  # an interrupt wakes the worker too
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
                    self._done(row)
                continue
            for row, text, ended in written:
                if text:
                    row.texts.put_nowait(text)
                if ended:
                    row.texts.put_nowait(None)
                    self._done(row)
                elif row.left:
                    self._engine.drop(row)
                    self._done(row)

    def _next_row(self) -> _Row | None:
        """The oldest waiting row of the client with the fewest rows in slots, among those below their share."""
        clients = [client for client in self._waiting if self._in_slots[client] < self._client_slots]
        if not clients:
            return None
        client = min(clients, key=lambda c: (self._in_slots[c], self._waiting[c][0].enqueued))
        waiting = self._waiting[client]
        row = waiting.popleft()
        if not waiting:
            del self._waiting[client]
        self._queued -= 1
        return row

    def _fill_free_slots(self) -> list[_Row]:
        joined = []
        while self._engine.free and (row := self._next_row()):
            try:
                self._engine.add(row.request, owner=row)
            except Exception as error:  # a request the sampler refuses fails alone, never the worker
                row.texts.put_nowait(error)
                self._done(row)
                continue
            row.state = "running"
            self._in_slots[row.client] += 1
            joined.append(row)
        return joined
