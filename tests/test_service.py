"""The Litestar service through its HTTP interface (Litestar's TestClient), on a tiny random-weight bundle."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from litestar.testing import TestClient

from service.app import create_app
from service.batching import MicroBatcher
from service.observability import JsonFormatter
from service.settings import Settings
from tests.tiny_bundle import VOCAB, write_tiny_bundle
from tweetbot import bundle
from tweetbot.bundle import BundleError
from tweetbot.errors import UserError
from tweetbot.sample import Sampler

READY_TIMEOUT_S = 600  # a cold JAX compilation cache on a busy machine; warm, it takes seconds


def wait_until_ready(client: TestClient) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the service never became ready"
        time.sleep(0.1)


def settings_for(bundle_dir: Path, **overrides) -> Settings:
    # Up to 2 rows per batch and a long wait, so two concurrent requests always share a batch.
    return Settings(bundle=bundle_dir, **{"max_batch": 2, "max_wait_ms": 300.0, **overrides})


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
    """The value of an unlabelled sample in /metrics, 0 when absent."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", client.get("/metrics").text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


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
def endless_client(tmp_path_factory):
    """A model that never ends a post: samples run to their length limit."""
    path = write_tiny_bundle(tmp_path_factory.mktemp("endless") / "export", eos_bias=-100.0)
    with TestClient(create_app(settings_for(path))) as client:
        wait_until_ready(client)
        yield client


def test_a_post_stops_at_the_end_of_post_symbol(stopping_client):
    assert stopping_client.get("/", params={"prime": "The fox", "seed": 1}).json() == {"text": "The fox"}
    assert stopping_client.get("/").json() == {"text": ""}


def test_a_post_is_at_most_280_characters(endless_client):
    assert len(endless_client.get("/", params={"seed": 1}).json()["text"]) == 280
    assert len(endless_client.get("/", params={"prime": "The dog", "seed": 1}).json()["text"]) == 280
    samples = endless_client.post("/generate", json={"max_length": 1000, "n": 2}).json()["samples"]
    assert [len(s) for s in samples] == [1000, 1000]


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


def test_concurrent_requests_share_a_batch_and_get_the_text_they_get_alone(client):
    bodies = [{"prime": "the", "seed": 21, "temperature": 0.5}, {"seed": 22, "top_k": 3, "max_length": 60}]
    alone = [client.post("/generate", json=b).json()["samples"] for b in bodies]
    batches, rows = metric(client, "tweetbot_batch_size_count"), metric(client, "tweetbot_batch_size_sum")
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda b: client.post("/generate", json=b).json()["samples"], bodies))
    assert together == alone
    # Two rows, one sampler call: the batcher waited for the second request.
    assert metric(client, "tweetbot_batch_size_count") - batches == 1
    assert metric(client, "tweetbot_batch_size_sum") - rows == 2


def test_micro_batcher_groups_rows_up_to_the_limit_and_keeps_their_order():
    calls: list[list[int]] = []

    def square(rows: list[int]) -> list[int]:
        calls.append(rows)
        return [r * r for r in rows]

    async def scenario() -> list[list[int]]:
        batcher = MicroBatcher(square, max_batch=2, max_wait_s=0.2)
        batcher.start()
        try:
            return await asyncio.gather(batcher.submit([1, 2, 3]), batcher.submit([4, 5]))
        finally:
            await batcher.stop()

    assert asyncio.run(scenario()) == [[1, 4, 9], [16, 25]]
    assert [len(c) for c in calls] == [2, 2, 1]
    assert sorted(r for c in calls for r in c) == [1, 2, 3, 4, 5]


def test_micro_batcher_reports_a_failed_batch_to_its_callers_and_lives_on():
    def fails_on_negative(rows: list[int]) -> list[int]:
        if any(r < 0 for r in rows):
            raise ValueError("negative row")
        return rows

    async def scenario():
        batcher = MicroBatcher(fails_on_negative, max_batch=1, max_wait_s=0)
        batcher.start()
        try:
            with pytest.raises(ValueError, match="negative row"):
                await batcher.submit([-1])
            return await batcher.submit([7])
        finally:
            await batcher.stop()

    assert asyncio.run(scenario()) == [7]


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


def test_a_missing_bundle_stops_start_up_with_one_clear_error(tmp_path):
    with pytest.raises(BaseExceptionGroup) as failure, TestClient(create_app(settings_for(tmp_path))):
        pass
    assert failure.group_contains(BundleError, match="no model bundle at .*: run `tweetbot export`")


def test_openapi_schema_lists_every_route(client):
    schema = client.get("/schema").json()
    assert schema["openapi"].startswith("3.")
    assert {"/", "/generate", "/stream", "/healthz", "/readyz"} <= set(schema["paths"])
    body = schema["components"]["schemas"]["GenerateRequest"]
    assert body["properties"]["temperature"]["exclusiveMinimum"] == 0
    assert body["properties"]["n"]["maximum"] == 64


def test_metrics_count_requests_by_route_and_show_the_model(client, bundle_dir):
    client.get("/healthz")
    text = client.get("/metrics").text
    assert re.search(r'tweetbot_requests_total\{method="GET",route="/healthz",status="200"\} [1-9]', text)
    assert re.search(r'tweetbot_request_duration_seconds_count\{method="GET",route="/"\} [1-9]', text)
    assert f'version="{bundle.load(bundle_dir).version}"' in text
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
        "TWEETBOT_MAX_WAIT_MS": "0.5",
        "TWEETBOT_LOG_LEVEL": "debug",
        "TWEETBOT_COMPILE_CACHE": "",
    }
    assert Settings.from_env(env) == Settings(
        bundle=Path("/srv/bundle"),
        port=9000,
        cors_origins=("https://a.example", "https://b.example"),
        max_batch=1,
        max_wait_ms=0.5,
        log_level="DEBUG",
        compile_cache=None,
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PORT": "eighty"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"TWEETBOT_MAX_BATCH": "0"}, "TWEETBOT_MAX_BATCH"),
        ({"TWEETBOT_MAX_WAIT_MS": "-1"}, "TWEETBOT_MAX_WAIT_MS"),
        ({"TWEETBOT_LOG_LEVEL": "LOUD"}, "TWEETBOT_LOG_LEVEL"),
    ],
)
def test_bad_settings_are_one_clear_error(env, named):
    with pytest.raises(UserError, match=named):
        Settings.from_env(env)
