"""The model behind the API: the bundle, its compiled sampler, the continuous batcher and the readiness flag.

Start-up reads the bundle at once (a missing or corrupt bundle stops the service with one clear line), then
compiles the sampler's chunk program for each batch bucket in a worker thread (compiled, not run), smallest
first. Until the first is compiled `ready` is False and `/readyz` answers 503; from then on a request is served
at once, and the larger buckets, needed only when many requests arrive together, go on compiling in the
background (a bucket needed before its turn is compiled by the batcher, once). Compiled programs go to JAX's
persistent cache (`TWEETBOT_COMPILE_CACHE`), so a restart, or an image whose build warmed the cache, is ready
in seconds.
Texts leave here as people read them: link and mention tokens rendered (`tweetbot.runtime.vocab.render`), and
capped by what is shown, so a `max_length` (or a post's 280) counts the 14 characters of each link, not one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator

import jax

from service.batching import ContinuousBatcher
from service.engine import Engine
from service.fairness import RateLimiter, held_refusals
from service.observability import IN_FLIGHT, MODEL, observe_batch
from service.settings import Settings
from tweetbot.runtime import bundle
from tweetbot.runtime.sample import BATCH_BUCKETS, MAX_SEED, SampleRequest, bucket, check
from tweetbot.runtime.vocab import RENDERED, render

log = logging.getLogger("tweetbot.service")


class Shown:
    """A text as the client receives it, piece by piece: each symbol rendered, and the text cut before the first
    symbol that would take it past `limit` characters (never inside a link)."""

    def __init__(self, limit: int):
        self.left = limit
        self.full = False

    def add(self, text: str) -> str:
        shown = []
        for char in text:
            piece = RENDERED.get(char, char)
            if len(piece) > self.left:
                self.full = True
                break
            self.left -= len(piece)
            shown.append(piece)
        return "".join(shown)


def shown_limit(request: SampleRequest) -> int:
    """What a client receives of `request` by default: its prime, then at most `max_length` characters."""
    return len(render(request.prime)) + request.max_length


class Bot:
    def __init__(self, settings: Settings):
        if settings.compile_cache:
            jax.config.update("jax_compilation_cache_dir", str(settings.compile_cache))
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # cache every bucket
        self.bundle = bundle.load(settings.bundle)
        self.vocab = self.bundle.vocab
        self.version = self.bundle.version
        self.sampler = self.bundle.sampler()
        self.batcher = ContinuousBatcher(
            Engine(self.sampler, slots=settings.max_batch),
            max_queue=settings.max_queue,
            client_samples=settings.client_samples,
            client_slots=settings.slots_per_client,
            on_chunk=observe_batch,
        )
        self.rate_limiter = RateLimiter(settings.client_rate, settings.client_burst) if settings.client_rate else None
        # The batch shapes the engine can run; larger buckets are never compiled.
        self._batch_sizes = tuple(b for b in BATCH_BUCKETS if b <= bucket(settings.max_batch, BATCH_BUCKETS))
        self.ready = False
        self.draining = False
        self.problem: str | None = None
        self._warming: asyncio.Task | None = None
        MODEL.info({"version": self.version, **{k: str(v) for k, v in self.bundle.manifest["model"].items()}})
        IN_FLIGHT.set_function(lambda: self.batcher.in_flight)

    def start(self) -> None:
        """Start the batcher and, in the background, the compilation that makes the bot ready."""
        self.batcher.start()
        self._warming = asyncio.get_running_loop().create_task(self._warm_up())

    async def stop(self) -> None:
        if self._warming is not None:
            self._warming.cancel()  # the compile thread finishes on its own; nothing waits for it
        await self.batcher.stop()

    def drain(self, cut_after_s: float) -> None:
        """Stop taking work (not ready: new requests are 503s), let what is in flight go on, and cut what is
        still being written `cut_after_s` from now (service/shutdown.py)."""
        if self.draining:
            return
        self.draining, self.ready = True, False
        self.problem = "the service is shutting down: retry, another instance will answer"
        log.info("draining", extra={"fields": {"in_flight": self.batcher.in_flight, "cut_after_s": cut_after_s}})
        asyncio.get_running_loop().call_later(cut_after_s, self.batcher.interrupt)

    async def _warm_up(self) -> None:
        started = time.perf_counter()
        try:
            for size in self._batch_sizes:  # one bucket at a time, so a shutdown never waits for them all
                await asyncio.to_thread(self.sampler.warmup, (size,), one_shot=False)
                if not self.ready and not self.draining:  # the smallest bucket serves any one request
                    self.ready = True
                    fields = {"model_version": self.version, "warmup_s": round(time.perf_counter() - started, 2)}
                    log.info("ready", extra={"fields": fields})
        except Exception as error:  # stay alive and unready: /readyz says why, the orchestrator restarts us
            self.ready = False
            self.problem = f"warm-up failed: {type(error).__name__}: {error}"
            log.exception("warm-up failed")
            return
        fields = {"batch_sizes": list(self._batch_sizes), "compile_s": round(time.perf_counter() - started, 2)}
        log.info("all batch sizes compiled", extra={"fields": fields})

    def unknown_chars(self, text: str) -> list[str]:
        return self.vocab.unknown_chars(text)

    @staticmethod
    def seeds(seed: int | None, n: int) -> list[int]:
        """Row i gets `seed + i` (so a sample comes back with `seed=seeds[i], n=1`); no seed: random ones."""
        first = secrets.randbelow(MAX_SEED + 1 - n) if seed is None else seed
        return [(first + i) % (MAX_SEED + 1) for i in range(n)]

    def _admit(self, requests: list[SampleRequest], client: str) -> None:
        """A bad request is a 400, and one past the client's rate a 429, before anything is queued."""
        for request in requests:
            check(request, self.vocab)
        if self.rate_limiter:  # a request costs what it may make the engine write
            self.rate_limiter.take(client, sum(request.max_length for request in requests))

    async def generate(self, requests: list[SampleRequest], client: str, limit: int | None = None) -> list[str]:
        """Each request's prime and sample, whichever rows they share the engine's slots with, shown within
        `limit` characters (default: `shown_limit`). A row writes at most `max_length` symbols, and each shows
        as one character or more, so it always writes enough."""
        async with held_refusals():
            self._admit(requests, client)
            texts = await self.batcher.generate(requests, client)
        return [
            Shown(limit or shown_limit(request)).add(request.prime + text)
            for request, text in zip(requests, texts, strict=True)
        ]

    async def stream(self, request: SampleRequest, client: str) -> AsyncIterator[str]:
        """The sample of `request` (prime first), a chunk of characters at a time as the engine writes it, shown
        as `generate` shows it; the row leaves its slot once its text is full.

        The request is checked and queued now, not when the first chunk is due, so a bad request (400), one
        past the client's share (429) or a full queue (503) is refused before the response starts.
        """
        async with held_refusals():
            self._admit([request], client)
            texts = self.batcher.stream(request, client)

        async def chunks() -> AsyncIterator[str]:
            shown = Shown(shown_limit(request))
            async with contextlib.aclosing(texts):  # a client that leaves frees its slot at once
                if request.prime:
                    yield shown.add(request.prime)
                async for text in texts:
                    if piece := shown.add(text):  # a link or mention is one token, never split across chunks
                        yield piece
                    if shown.full:
                        break

        return chunks()
