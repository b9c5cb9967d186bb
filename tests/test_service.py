"""The Litestar service through its HTTP interface (Litestar's TestClient), on a tiny random-weight bundle."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from litestar.testing import TestClient

from service.app import create_app
from service.batching import ContinuousBatcher, QueueFull
from service.engine import Engine
from service.fairness import TooManyRequests
from service.observability import JsonFormatter
from service.settings import Settings
from tests.tiny_bundle import VOCAB, tiny_variables, write_tiny_bundle
from tweetbot.params import EvaluateParams
from tweetbot.runtime import bundle
from tweetbot.runtime.bundle import BundleError
from tweetbot.runtime.errors import UserError
from tweetbot.runtime.model import CharRNN
from tweetbot.runtime.sample import Sampler, SampleRequest
from tweetbot.runtime.vocab import LINK, MENTION, RENDERED, Vocab, render

READY_TIMEOUT_S = 600  # a cold JAX compilation cache on a busy machine; warm, it takes seconds


def wait_until_ready(client: TestClient) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the service never became ready"
        time.sleep(0.1)


def settings_for(bundle_dir: Path, **overrides) -> Settings:
    # Two slots: concurrent requests share them, and only the programs of batch sizes 1 and 2 compile.
    return Settings(bundle=bundle_dir, **{"max_batch": 2, **overrides})


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("bundle") / "export")


@pytest.fixture(scope="module")
def client(bundle_dir):
    with TestClient(create_app(settings_for(bundle_dir))) as client:
        wait_until_ready(client)
        yield client


def sse_events(body: str) -> list[tuple[str, dict]]:
    """(event type, decoded data) of each event in a text/event-stream body."""
    events = []
    for block in filter(None, body.replace("\r\n", "\n").split("\n\n")):
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((fields.get("event", "message"), json.loads(fields["data"])))
    return events


def metric(client: TestClient, name: str) -> float:
    """The value of a sample in /metrics (`name` with its labels, if any), 0 when absent."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", client.get("/metrics").text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def wait_for(condition, what: str) -> None:
    """Poll `condition()` until it holds (a synchronisation point, not a timing assertion)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


# --- GET /: the original contract -------------------------------------------------------------------------


def test_root_answers_one_post_as_the_original_bot_did(client):
    response = client.get("/")
    assert response.status_code == 200
    assert set(response.json()) == {"text"}
    text = response.json()["text"]
    assert len(text) <= 280
    assert not VOCAB.unknown_chars(text.replace("\ufffd", ""))


def test_root_takes_temperature_prime_and_seed(client):
    first = client.get("/", params={"prime": "The fox", "seed": 7, "temperature": 0.7}).json()["text"]
    again = client.get("/", params={"prime": "The fox", "seed": 7, "temperature": 0.7}).json()["text"]
    other = client.get("/", params={"prime": "The fox", "seed": 8, "temperature": 0.7}).json()["text"]
    assert first.startswith("The fox")
    assert first == again
    assert other != first


def test_root_without_a_seed_gives_new_posts(client):
    texts = {client.get("/").json()["text"] for _ in range(4)}
    assert len(texts) > 1


@pytest.fixture(scope="module")
def stopping_client(tmp_path_factory):
    """A model whose end-of-post logit dwarfs the rest: every sample stops at once."""
    path = write_tiny_bundle(tmp_path_factory.mktemp("stops") / "export", eos_bias=100.0)
    with TestClient(create_app(settings_for(path))) as client:
        wait_until_ready(client)
        yield client


@pytest.fixture(scope="module")
def endless_dir(tmp_path_factory) -> Path:
    """A model that never ends a post: samples run to their length limit."""
    return write_tiny_bundle(tmp_path_factory.mktemp("endless") / "export", eos_bias=-100.0)


@pytest.fixture(scope="module")
def endless_client(endless_dir):
    with TestClient(create_app(settings_for(endless_dir))) as client:
        wait_until_ready(client)
        yield client


def test_the_default_sampling_is_the_one_the_evaluate_stage_scores(endless_client, endless_dir):
    scored = EvaluateParams()  # what `dvc exp show`'s real_words and copy_rate measure
    loaded = bundle.load(endless_dir)
    sampler = Sampler(loaded.model, loaded.variables, loaded.vocab)
    request = SampleRequest(temperature=scored.temperature, top_p=scored.top_p, seed=3)
    expected = render(sampler.generate([request])[0])
    assert expected
    assert endless_client.get("/", params={"seed": 3}).json()["text"] == expected
    assert endless_client.post("/generate", json={"seed": 3}).json()["samples"] == [expected]


def test_a_post_stops_at_the_end_of_post_symbol(stopping_client):
    assert stopping_client.get("/", params={"prime": "The fox", "seed": 1}).json() == {"text": "The fox"}
    assert stopping_client.get("/").json() == {"text": ""}


def test_a_post_is_at_most_280_characters(endless_client):
    assert len(endless_client.get("/", params={"seed": 1}).json()["text"]) == 280
    assert len(endless_client.get("/", params={"prime": "The dog", "seed": 1}).json()["text"]) == 280
    samples = endless_client.post("/generate", json={"max_length": 1000, "n": 2}).json()["samples"]
    assert [len(s) for s in samples] == [1000, 1000]


@pytest.fixture(scope="module")
def linking_client(tmp_path_factory):
    """A model that knows the link and mention tokens and writes nothing but links."""
    vocab = Vocab([*VOCAB.chars, LINK, MENTION])
    model = CharRNN(vocab_size=len(vocab), rnn_size=8, num_layers=1, cell="lstm")
    variables = tiny_variables(model)
    variables["params"]["head"]["bias"] = variables["params"]["head"]["bias"].at[vocab.index[LINK]].set(100.0)
    path = tmp_path_factory.mktemp("links") / "export"
    bundle.write(path, model, variables, vocab, metrics={}, train_params={}, data_stats={})
    with TestClient(create_app(settings_for(path))) as client:
        wait_until_ready(client)
        yield client


def test_link_and_mention_tokens_are_shown_as_people_read_them(linking_client):
    link, mention = RENDERED[LINK], RENDERED[MENTION]
    post = linking_client.get("/", params={"prime": f"{MENTION} hi ", "seed": 1}).json()["text"]
    assert post.startswith(f"{mention} hi {link}{link}")
    body = {"prime": MENTION, "max_length": 3 * len(link), "n": 2}
    assert linking_client.post("/generate", json=body).json()["samples"] == [mention + link * 3] * 2
    events = sse_events(linking_client.get("/stream", params={"prime": MENTION, "max_length": 40}).text)
    assert "".join(data["text"] for kind, data in events if kind == "message") == mention + link * 2
    assert not {LINK, MENTION} & set(post + linking_client.get("/stream", params={"max_length": 40}).text)


def test_the_length_cap_counts_what_the_client_receives(linking_client):
    """Every symbol this model writes is a link, shown as 14 characters: a cap counts those, and a link that
    would not fit ends the text (it is never cut in half)."""
    link, mention = RENDERED[LINK], RENDERED[MENTION]
    assert linking_client.get("/", params={"seed": 1}).json()["text"] == link * 20  # 280 characters
    prime = f"{MENTION} hi "  # shown as 9 characters: 19 links fit after it
    assert linking_client.get("/", params={"prime": prime, "seed": 1}).json()["text"] == f"{mention} hi " + link * 19
    long_prime = LINK * 30  # 420 characters shown: the post is cut too
    assert linking_client.get("/", params={"prime": long_prime}).json()["text"] == link * 20
    for max_length in (1, 13, 14, 100, 1000):
        fitting = link * (max_length // len(link))
        body = {"prime": "the ", "max_length": max_length, "seed": 3}
        assert linking_client.post("/generate", json=body).json()["samples"] == ["the " + fitting]
        events = sse_events(linking_client.get("/stream", params=body).text)
        assert events[-1][0] == "done"
        assert "".join(data["text"] for kind, data in events[:-1]) == "the " + fitting


# --- POST /generate ----------------------------------------------------------------------------------------


def test_generate_returns_samples_seeds_and_model_version(client, bundle_dir):
    body = {
        "prime": "the",
        "temperature": 0.8,
        "top_k": 5,
        "top_p": 0.9,
        "max_length": 40,
        "n": 3,
        "seed": 11,
    }
    response = client.post("/generate", json=body)
    assert response.status_code == 200
    answer = response.json()
    assert answer["model_version"] == bundle.load(bundle_dir).version
    assert answer["seeds"] == [11, 12, 13]
    assert len(answer["samples"]) == 3
    assert all(s.startswith("the") and len(s) <= 3 + 40 for s in answer["samples"])
    # Each sample comes back alone from its own seed.
    again = client.post("/generate", json={**body, "n": 1, "seed": 12}).json()["samples"]
    assert again == [answer["samples"][1]]


def test_generate_defaults_are_a_post(client):
    answer = client.post("/generate", json={}).json()
    assert len(answer["samples"]) == len(answer["seeds"]) == 1
    assert len(answer["samples"][0]) <= 280


BAD_BODIES = [
    ({"temperature": 0}, "temperature"),
    ({"temperature": -1}, "temperature"),
    ({"temperature": 5.01}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"max_length": 0}, "max_length"),
    ({"max_length": 1001}, "max_length"),
    ({"max_length": 2.5}, "max_length"),
    ({"n": 0}, "n"),
    ({"n": 65}, "n"),
    ({"top_k": 0}, "top_k"),
    ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**32}, "seed"),
    ({"prime": 5}, "prime"),
    ({"prime": "x" * 65}, "prime"),
    ({"prime": "naïve €"}, "prime"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES, ids=[f"{f}={b[f]!r}"[:30] for b, f in BAD_BODIES])
def test_generate_rejects_each_bad_field_with_a_400_naming_it(client, body, field):
    response = client.post("/generate", json=body)
    assert response.status_code == 400
    (problem,) = response.json()["extra"]
    assert problem["key"] == field
    assert problem["message"]


def test_unknown_prime_characters_are_named(client):
    problem = client.post("/generate", json={"prime": "naïve €"}).json()["extra"][0]
    assert "'ï'" in problem["message"] and "'€'" in problem["message"]


def test_generate_rejects_unknown_fields_by_name(client):
    response = client.post("/generate", json={"temperature": 1, "temprature": 2})
    assert response.status_code == 400
    assert "`temprature`" in response.json()["extra"][0]["message"]


@pytest.mark.parametrize(
    "content", [b"{not json", b"[]", b'"text"', b""], ids=["malformed", "array", "string", "empty"]
)
def test_generate_rejects_a_body_that_is_not_an_object(client, content):
    response = client.post("/generate", content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 400


BAD_QUERIES = [
    ("/", {"temperature": "0"}, "temperature"),
    ("/", {"temperature": "9"}, "temperature"),
    ("/", {"temperature": "nan"}, "temperature"),
    ("/", {"temperature": "warm"}, "temperature"),
    ("/", {"seed": "-3"}, "seed"),
    ("/", {"seed": "x"}, "seed"),
    ("/", {"prime": "y" * 65}, "prime"),
    ("/", {"prime": "€uro"}, "prime"),
    ("/stream", {"max_length": "0"}, "max_length"),
    ("/stream", {"max_length": "1001"}, "max_length"),
    ("/stream", {"top_p": "2"}, "top_p"),
    ("/stream", {"top_k": "0"}, "top_k"),
    ("/stream", {"prime": "€"}, "prime"),
]


@pytest.mark.parametrize(("path", "query", "field"), BAD_QUERIES, ids=[f"{p}:{f}" for p, _, f in BAD_QUERIES])
def test_query_parameters_are_validated_with_a_400_naming_them(client, path, query, field):
    response = client.get(path, params=query)
    assert response.status_code == 400
    assert response.json()["extra"][0]["key"] == field


# --- streaming and batching --------------------------------------------------------------------------------


def test_stream_sends_the_same_text_as_a_one_shot_request(client, bundle_dir):
    settings = {"prime": "fox", "temperature": 0.9, "max_length": 100, "seed": 5}
    response = client.get("/stream", params=settings)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    *chunks, (kind, done) = events
    assert kind == "done" and done == {"model_version": bundle.load(bundle_dir).version, "seed": 5}
    assert len(chunks) > 1  # the prime, then chunks of generated characters
    streamed = "".join(data["text"] for _, data in chunks)
    assert streamed == client.post("/generate", json=settings).json()["samples"][0]


def test_concurrent_requests_get_the_text_they_get_alone(client):
    bodies = [{"prime": "the", "seed": 21, "temperature": 0.5}, {"seed": 22, "top_k": 3, "max_length": 60}]
    alone = [client.post("/generate", json=b).json()["samples"] for b in bodies]
    with ThreadPoolExecutor(2) as pool:  # whether and when they overlap, each writes its own text
        together = list(pool.map(lambda b: client.post("/generate", json=b).json()["samples"], bodies))
    assert together == alone


def sampler_of(bundle_dir: Path) -> Sampler:
    loaded = bundle.load(bundle_dir)
    return Sampler(loaded.model, loaded.variables, loaded.vocab)


def run_batcher(
    engine: Engine, scenario, max_queue: int = 64, client_samples: int = 64, client_slots: int | None = None
) -> tuple[object, list[int]]:
    """`scenario(batcher)`'s result, with the busy rows of every compiled call the batcher made."""
    calls: list[int] = []

    async def main():
        batcher = ContinuousBatcher(
            engine,
            max_queue=max_queue,
            client_samples=client_samples,
            client_slots=client_slots or len(engine.owners),
            on_chunk=lambda busy, waits: calls.append(busy),
        )
        batcher.start()
        try:
            return await scenario(batcher)
        finally:
            await batcher.stop()

    return asyncio.run(main()), calls


class SteppedEngine(Engine):
    """An engine that runs a chunk only when the test allows it, so a test knows where rows are."""

    def __init__(self, sampler: Sampler, slots: int):
        super().__init__(sampler, slots)
        self.allowed = threading.Semaphore(0)

    def advance(self):
        assert self.allowed.acquire(timeout=READY_TIMEOUT_S), "the test never allowed this chunk"
        return super().advance()


def test_a_request_that_joins_running_rows_writes_what_it_writes_alone(endless_dir):
    sampler = sampler_of(endless_dir)
    long = SampleRequest(max_length=1000, temperature=0.8, seed=1)  # 32 chunks
    late = SampleRequest(prime="The", max_length=100, top_k=5, seed=2)  # 4 chunks
    engine = SteppedEngine(sampler, slots=2)

    async def scenario(batcher):
        stream = batcher.stream(long, "a")
        engine.allowed.release()
        first = await anext(stream)  # the long row has run one chunk; the late one joins it mid-way
        late_stream = batcher.stream(late, "b")  # queued now, before the engine may go on
        engine.allowed.release(100)
        return first + "".join([text async for text in stream]), "".join([text async for text in late_stream])

    (long_text, late_text), calls = run_batcher(engine, scenario)
    assert [long_text, late_text] == sampler.generate([long]) + sampler.generate([late])
    assert calls[0] == 1 and max(calls) == 2  # it started alone, then they shared chunks
    assert len(calls) == 32  # the late row finished inside the long one's chunks: it added none


def test_a_client_that_leaves_frees_its_slot(endless_dir):
    sampler = sampler_of(endless_dir)
    engine = SteppedEngine(sampler, slots=1)

    async def scenario(batcher):
        stream = batcher.stream(SampleRequest(max_length=1000, seed=3), "a")  # would hold the slot 32 chunks
        engine.allowed.release()
        await anext(stream)
        await stream.aclose()
        next_stream = batcher.stream(SampleRequest(max_length=30, seed=4), "b")  # queued before the engine goes on
        engine.allowed.release(100)
        return "".join([text async for text in next_stream])

    text, calls = run_batcher(engine, scenario)
    assert text == sampler.generate([SampleRequest(max_length=30, seed=4)])[0]
    # Its own first chunk, perhaps the one under way when it left, then the next request's only chunk.
    assert calls in ([1, 1], [1, 1, 1])


def test_rows_whose_client_left_do_not_count_against_the_queue(endless_dir):
    sampler = sampler_of(endless_dir)
    engine = SteppedEngine(sampler, slots=1)

    async def scenario(batcher):
        running = batcher.stream(SampleRequest(max_length=40, seed=1), "a")  # 2 chunks
        engine.allowed.release()
        await anext(running)  # the one slot is busy: whatever comes next waits
        # 64 waiting rows fill the queue; their clients go away while they wait.
        leaving = [asyncio.ensure_future(batcher.generate([SampleRequest(seed=i)], f"c{i}")) for i in range(48)]
        unread = [batcher.stream(SampleRequest(seed=i), f"d{i}") for i in range(16)]  # never read
        await asyncio.sleep(0)  # the readers are waiting for their text
        with pytest.raises(QueueFull):
            batcher.stream(SampleRequest(), "e")
        for task in leaving:
            task.cancel()
        await asyncio.gather(*leaving, return_exceptions=True)
        for stream in unread:
            await stream.aclose()
        in_flight = batcher.in_flight
        accepted = batcher.generate([SampleRequest(max_length=10, seed=s) for s in range(64)], "e")
        engine.allowed.release(1000)
        return in_flight, len(await accepted), "".join([text async for text in running])

    (in_flight, answered, _), calls = run_batcher(engine, scenario, max_queue=64)
    assert (in_flight, answered) == (1, 64)  # only the running row was left
    assert len(calls) == 2 + 64  # the rows that left never ran


class WatchedEngine(SteppedEngine):
    """A stepped engine that notes the clients in its slots at every chunk."""

    def __init__(self, sampler: Sampler, slots: int):
        super().__init__(sampler, slots)
        self.chunks: list[list[str]] = []

    def advance(self):
        self.chunks.append(sorted(row.client for row in self.owners if row is not None))
        return super().advance()


def test_each_client_gets_a_fair_share_of_the_slots(endless_dir):
    """A heavy client's 64 samples wait beside a light client's post: the post takes a slot at the next chunk,
    and the heavy client never holds more slots than its share (2 of 4 here)."""
    sampler = sampler_of(endless_dir)
    engine = WatchedEngine(sampler, slots=4)
    heavy = [SampleRequest(max_length=100, seed=s) for s in range(64)]  # 4 chunks each
    light = SampleRequest(max_length=40, seed=99)

    async def scenario(batcher):
        flood = asyncio.ensure_future(batcher.generate(heavy, "heavy"))
        while not engine.chunks:  # the first chunk is about to run (held until the post is queued)
            await asyncio.sleep(0.001)
        post = batcher.generate([light], "light")
        engine.allowed.release(1000)
        return await post, await flood

    (post, flood), _ = run_batcher(engine, scenario, max_queue=128, client_slots=2)
    assert post == sampler.generate([light]) and flood == sampler.generate(heavy)
    assert engine.chunks[:3] == [["heavy", "heavy"], ["heavy", "heavy", "light"], ["heavy", "heavy", "light"]]
    assert all(chunk.count("heavy") == 2 for chunk in engine.chunks)


def test_one_client_may_have_only_so_many_samples_in_flight(endless_dir):
    sampler = sampler_of(endless_dir)
    engine = SteppedEngine(sampler, slots=2)

    async def scenario(batcher):
        first = asyncio.ensure_future(batcher.generate([SampleRequest(max_length=10, seed=s) for s in range(6)], "a"))
        await asyncio.sleep(0)
        with pytest.raises(TooManyRequests) as refused:
            batcher.stream(SampleRequest(), "a")  # 7 > 6
        others = batcher.generate([SampleRequest(max_length=10)] * 6, "b")  # another client is not refused
        engine.allowed.release(100)
        await first
        again = await batcher.generate([SampleRequest(max_length=10)] * 6, "a")  # its samples are done
        return refused.value, len(await others), len(again)

    (refused, others, again), _ = run_batcher(engine, scenario, client_samples=6)
    assert refused.retry_after_s == 1 and "6 in flight" in str(refused)
    assert (others, again) == (6, 6)


def test_a_failed_chunk_fails_its_rows_and_the_batcher_lives_on(endless_dir):
    class FailsOnce(Engine):
        failed = False

        def advance(self):
            if not self.failed:
                self.failed = True
                raise RuntimeError("the device went away")
            return super().advance()

    sampler = sampler_of(endless_dir)
    request = SampleRequest(max_length=50, seed=5)

    async def scenario(batcher):
        with pytest.raises(RuntimeError, match="device went away"):
            await batcher.generate([request], "a")
        return await batcher.generate([request], "a")

    texts, _ = run_batcher(FailsOnce(sampler, slots=2), scenario)
    assert texts == sampler.generate([request])


def test_a_full_queue_is_a_503_that_says_retry(bundle_dir, monkeypatch):
    gate = threading.Event()
    advance = Engine.advance

    def gated_advance(self):
        gate.wait(READY_TIMEOUT_S)
        return advance(self)

    monkeypatch.setattr(Engine, "advance", gated_advance)
    # One client may have more samples in flight than the queue holds, so the queue is what refuses.
    with TestClient(create_app(settings_for(bundle_dir, max_batch=1, max_queue=64, client_samples=128))) as client:
        wait_until_ready(client)
        chunks = metric(client, "tweetbot_batch_size_count")
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(client.post, "/generate", json={"n": 64, "max_length": 5})
            # One row runs (held at the gate), 63 wait: a request for 2 more overflows the queue of 64.
            wait_for(lambda: metric(client, "tweetbot_batch_size_count") > chunks, "the first chunk started")
            refused = client.post("/generate", json={"n": 2})
            gate.set()
            assert refused.status_code == 503
            assert "retry" in refused.json()["detail"] and refused.headers["retry-after"] == "1"
            assert first.result().status_code == 200 and len(first.result().json()["samples"]) == 64
        assert client.post("/generate", json={"n": 2}).status_code == 200  # the queue drained


# --- health, readiness, schema, metrics, CORS, logs --------------------------------------------------------


def test_health_readiness_and_version(client, bundle_dir):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {
        "ready": True,
        "model_version": bundle.load(bundle_dir).version,
        "detail": None,
    }


def test_not_ready_until_the_sampler_is_compiled(bundle_dir, monkeypatch):
    gate = threading.Event()
    warmup = Sampler.warmup

    def gated_warmup(self, *args, **kwargs):
        gate.wait(READY_TIMEOUT_S)
        return warmup(self, *args, **kwargs)

    monkeypatch.setattr(Sampler, "warmup", gated_warmup)
    with TestClient(create_app(settings_for(bundle_dir))) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 503
        response = client.get("/")
        assert response.status_code == 503
        assert "retry" in response.json()["detail"] and response.headers["retry-after"] == "1"
        assert client.post("/generate", json={}).status_code == 503
        gate.set()
        wait_until_ready(client)
        assert client.get("/").status_code == 200


def test_a_draining_service_is_not_ready_and_refuses_new_work(bundle_dir):
    """What SIGTERM starts (tests/test_service_shutdown.py sends the signal to the real server)."""
    with TestClient(create_app(settings_for(bundle_dir))) as client:
        wait_until_ready(client)
        client.blocking_portal.call(client.app.state.bot.drain, 60.0)
        readiness = client.get("/readyz")
        assert readiness.status_code == 503 and "shutting down" in readiness.json()["detail"]
        for refused in (client.get("/"), client.post("/generate", json={}), client.get("/stream")):
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert client.get("/healthz").status_code == 200  # alive until it exits


def test_ready_once_the_smallest_batch_compiles_while_the_larger_ones_go_on(bundle_dir, monkeypatch):
    gate, compiled = threading.Event(), []
    warmup = Sampler.warmup

    def larger_sizes_wait(self, batch_sizes, **kwargs):
        if batch_sizes[0] > 1:
            gate.wait(READY_TIMEOUT_S)
        warmup(self, batch_sizes, **kwargs)
        compiled.extend(batch_sizes)

    monkeypatch.setattr(Sampler, "warmup", larger_sizes_wait)
    with TestClient(create_app(settings_for(bundle_dir, max_batch=4))) as client:
        wait_until_ready(client)
        assert compiled == [1]
        assert client.get("/").status_code == 200
        several = client.post("/generate", json={"n": 3, "max_length": 20})  # batch size 4: not compiled yet
        assert several.status_code == 200 and len(several.json()["samples"]) == 3
        assert compiled == [1]
        gate.set()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while compiled != [1, 2, 4]:
            assert time.monotonic() < deadline, f"the larger batch sizes never compiled: {compiled}"
            time.sleep(0.05)
        assert client.get("/readyz").status_code == 200


def test_a_missing_bundle_stops_start_up_with_one_clear_error(tmp_path):
    with pytest.raises(BaseExceptionGroup) as failure, TestClient(create_app(settings_for(tmp_path))):
        pass
    assert failure.group_contains(BundleError, match="no model bundle at .*: run `dvc repro export`")


@pytest.mark.parametrize(
    ("env", "error"),
    [
        (
            {"TWEETBOT_BUNDLE": "/nowhere"},
            "error: no model bundle at /nowhere (no manifest.json): run `dvc repro export`",
        ),
        ({"TWEETBOT_MAX_BATCH": "0"}, "error: TWEETBOT_MAX_BATCH is 0: use 1 (no batching) to 64"),
    ],
    ids=["missing-bundle", "bad-setting"],
)
def test_bare_uvicorn_with_a_bad_start_is_one_line_and_a_failure(env, error, bundle_dir):
    command = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app", "--port", "0"]
    environment = {**os.environ, "TWEETBOT_BUNDLE": str(bundle_dir), **env}
    started = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120)
    assert started.returncode == 2
    assert started.stdout == ""
    assert started.stderr.startswith(error) and started.stderr.count("\n") == 1, started.stderr


def test_openapi_schema_lists_every_route(client):
    schema = client.get("/schema").json()
    assert schema["openapi"].startswith("3.")
    assert {"/", "/generate", "/stream", "/healthz", "/readyz"} <= set(schema["paths"])
    body = schema["components"]["schemas"]["GenerateRequest"]
    assert body["properties"]["temperature"]["exclusiveMinimum"] == 0
    assert body["properties"]["n"]["maximum"] == 64


QUERY_FIELDS = {
    "/": ("temperature", "prime", "seed"),
    "/stream": ("temperature", "prime", "top_k", "top_p", "max_length", "seed"),
}


def test_query_parameters_have_the_bounds_of_the_body_fields(client):
    schema = client.get("/schema").json()
    body = schema["components"]["schemas"]["GenerateRequest"]["properties"]
    for path, fields in QUERY_FIELDS.items():
        parameters = {p["name"]: p["schema"] for p in schema["paths"][path]["get"]["parameters"]}
        assert set(parameters) == set(fields)
        for field in fields:
            assert parameters[field] == body[field], f"{path} {field}"


def test_the_schema_publishes_the_alphabet_the_prime_must_use(client):
    schema = client.get("/schema").json()
    body = schema["components"]["schemas"]["GenerateRequest"]["properties"]["prime"]
    patterns = {body["pattern"]} | {
        p["schema"]["pattern"]
        for path in QUERY_FIELDS
        for p in schema["paths"][path]["get"]["parameters"]
        if p["name"] == "prime"
    }
    (pattern,) = patterns
    assert re.fullmatch(pattern, "".join(VOCAB.chars)) and re.fullmatch(pattern, "")
    for outside in ["€", "Z", "\f", "\n", "]", "^", "\\", "\ue000"]:  # unknown to the tiny model
        assert not re.fullmatch(pattern, f"the {outside}"), outside
        assert client.get("/", params={"prime": f"the {outside}"}).status_code == 400
    assert client.get("/", params={"prime": "-.:/ 09#@'!?"}).status_code == 200  # known, special in a class


def test_metrics_count_requests_by_route_and_show_the_model(client, bundle_dir):
    client.get("/")
    client.get("/healthz")
    text = client.get("/metrics").text
    assert re.search(r'tweetbot_requests_total\{method="GET",route="/healthz",status="200"\} [1-9]', text)
    assert re.search(r'tweetbot_request_duration_seconds_count\{method="GET",route="/"\} [1-9]', text)
    # The model metric is the process's, as a service holds one model: an app of its own, loaded last, shows its
    # model (the module's other apps may have loaded theirs after `client`'s, in a random order).
    with TestClient(create_app(settings_for(bundle_dir))) as own:
        assert f'version="{bundle.load(bundle_dir).version}"' in own.get("/metrics").text
    assert "tweetbot_batch_size_bucket" in text and "tweetbot_queue_wait_seconds_bucket" in text


def test_cors_is_open_by_default(client):
    response = client.get("/", headers={"Origin": "https://somebody.example"})
    assert response.headers["access-control-allow-origin"] == "*"


def test_cors_origins_come_from_settings(bundle_dir):
    app = create_app(settings_for(bundle_dir, cors_origins=("https://bot.example",)))
    with TestClient(app) as client:
        allowed = client.get("/healthz", headers={"Origin": "https://bot.example"})
        other = client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://bot.example"
    assert "access-control-allow-origin" not in other.headers


def test_one_json_log_line_per_request_without_query_or_headers(client):
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(JsonFormatter().format(record))
    logger = logging.getLogger("tweetbot.requests")
    logger.addHandler(handler)
    try:
        client.get("/", params={"prime": "secret fox"}, headers={"Authorization": "Bearer hunter2"})
        client.post("/generate", json={"n": 0})
    finally:
        logger.removeHandler(handler)
    records = [json.loads(line) for line in lines]
    assert [(r["method"], r["route"], r["status"]) for r in records] == [
        ("GET", "/", 200),
        ("POST", "/generate", 400),
    ]
    assert all(r["duration_ms"] > 0 and r["level"] == "INFO" for r in records)
    assert not any("secret" in line or "hunter2" in line for line in lines)


def test_unknown_paths_and_methods_are_counted_and_logged_without_their_path(client):
    counted = {
        status: f'tweetbot_requests_total{{method="{method}",route="<unmatched>",status="{status}"}}'
        for method, status in (("GET", 404), ("DELETE", 405))
    }
    before = {status: metric(client, name) for status, name in counted.items()}
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(JsonFormatter().format(record))
    logger = logging.getLogger("tweetbot.requests")
    logger.addHandler(handler)
    try:
        missing = client.get("/no/such/page-token-hunter2")
        wrong_method = client.delete("/")
    finally:
        logger.removeHandler(handler)
    assert missing.status_code == 404 and missing.json() == {"status_code": 404, "detail": "Not Found"}
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"]
    records = [json.loads(line) for line in lines]
    assert [(r["method"], r["route"], r["status"]) for r in records] == [
        ("GET", "<unmatched>", 404),
        ("DELETE", "<unmatched>", 405),
    ]
    assert not any("hunter2" in line for line in lines)
    assert {status: metric(client, name) - before[status] for status, name in counted.items()} == {404: 1, 405: 1}


def test_web_page_is_one_self_contained_html_file(client):
    response = client.get("/app")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert not re.search(r"""(src|href)=["']https?://""", response.text)  # no CDN


# --- settings ----------------------------------------------------------------------------------------------


def test_settings_defaults_and_environment():
    assert Settings.from_env({}) == Settings()
    assert Settings().port == 8080 and Settings().cors_origins == ("*",)
    env = {
        "TWEETBOT_BUNDLE": "/srv/bundle",
        "PORT": "9000",
        "TWEETBOT_CORS_ORIGINS": "https://a.example, https://b.example",
        "TWEETBOT_MAX_BATCH": "1",
        "TWEETBOT_MAX_QUEUE": "1000",
        "TWEETBOT_LOG_LEVEL": "debug",
        "TWEETBOT_COMPILE_CACHE": "",
        "TWEETBOT_DRAIN_S": "45",
    }
    assert Settings.from_env(env) == Settings(
        bundle=Path("/srv/bundle"),
        port=9000,
        cors_origins=("https://a.example", "https://b.example"),
        max_batch=1,
        max_queue=1000,
        log_level="DEBUG",
        compile_cache=None,
        drain_s=45,
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PORT": "eighty"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"TWEETBOT_MAX_BATCH": "0"}, "TWEETBOT_MAX_BATCH"),
        ({"TWEETBOT_MAX_BATCH": "65"}, "TWEETBOT_MAX_BATCH"),
        ({"TWEETBOT_MAX_QUEUE": "63"}, "TWEETBOT_MAX_QUEUE"),
        ({"TWEETBOT_MAX_QUEUE": "many"}, "TWEETBOT_MAX_QUEUE"),
        ({"TWEETBOT_LOG_LEVEL": "LOUD"}, "TWEETBOT_LOG_LEVEL"),
        ({"TWEETBOT_TRUSTED_PROXIES": "10.0.0.0/16,lb.internal"}, "TWEETBOT_TRUSTED_PROXIES holds 'lb.internal'"),
        ({"TWEETBOT_CLIENT_RATE": "-1"}, "TWEETBOT_CLIENT_RATE is -1.0"),
        ({"TWEETBOT_CLIENT_RATE": "fast"}, "TWEETBOT_CLIENT_RATE is 'fast', not a number"),
        ({"TWEETBOT_CLIENT_SAMPLES": "10"}, "TWEETBOT_CLIENT_SAMPLES is 10: use 64"),
        ({"TWEETBOT_CLIENT_SLOTS": "33"}, r"TWEETBOT_CLIENT_SLOTS is 33: use 1 to TWEETBOT_MAX_BATCH \(32\)"),
        ({"TWEETBOT_DRAIN_S": "0"}, "TWEETBOT_DRAIN_S is 0: use 1 to 3600 seconds"),
        ({"TWEETBOT_DRAIN_S": "2.5"}, "TWEETBOT_DRAIN_S is '2.5', not an integer"),
    ],
)
def test_bad_settings_are_one_clear_error(env, named):
    with pytest.raises(UserError, match=named):
        Settings.from_env(env)
