"""Property-based fuzzing of the live service from its own OpenAPI schema (schemathesis).

Every operation in `/schema` gets generated requests, valid and invalid; each response must be no 5xx and must
match the schema (status code, content type, body). The service runs under uvicorn on 127.0.0.1, and its own
Prometheus counters confirm after each operation's fuzzing that none of its requests was answered with a 5xx.
"""

from __future__ import annotations

import re
import urllib.request

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from service.app import create_app
from service.settings import Settings
from tests.live_service import live_service
from tests.tiny_bundle import VOCAB, write_tiny_bundle

EXAMPLES_PER_OPERATION = 50  # each way (valid and invalid requests): bounded, well under a minute in all
METHODS = ("get", "post", "put", "patch", "delete")
MODES = {"valid": GenerationMode.POSITIVE, "invalid": GenerationMode.NEGATIVE}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The live service's URL."""
    folder = tmp_path_factory.mktemp("fuzz")
    with live_service(write_tiny_bundle(folder / "export"), folder / "service.log", TWEETBOT_MAX_BATCH="4") as url:
        yield url


def answered(url: str) -> dict[tuple[str, str, str], float]:
    """Requests answered so far by (route, method, status), by the service's own Prometheus counters."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    counts = re.findall(r"^tweetbot_requests_total\{(.*)\} (\S+)$", metrics, re.MULTILINE)
    labelled = [(dict(re.findall(r'(\w+)="([^"]*)"', labels)), float(n)) for labels, n in counts]
    return {(labels["route"], labels["method"], labels["status"]): n for labels, n in labelled}


@pytest.fixture(scope="module")
def api_schema(service):
    return schemathesis.openapi.from_url(f"{service}/schema/openapi.json")


def prime_in_vocabulary(case):
    """Valid means a prime of characters the model knows, which the schema cannot list (the bundle does)."""
    for values in (case.query, case.body):
        if isinstance(values, dict) and isinstance(values.get("prime"), str):
            values["prime"] = "".join(c for c in values["prime"] if not VOCAB.unknown_chars(c))
    return case


def cases() -> list:
    """(mode, method, path) for every operation the app documents, both ways where it takes any input."""
    paths = create_app(Settings()).openapi_schema.paths
    found = []
    for path, item in paths.items():
        for method in METHODS:
            if operation := getattr(item, method):
                modes = list(MODES) if operation.parameters or operation.request_body else ["valid"]
                found += [pytest.param(m, method.upper(), path, id=f"{m}-{method.upper()}-{path}") for m in modes]
    return found


# Not schemathesis' pytest plugin (`from_fixture` fails on pytest 9): the same cases, drawn by Hypothesis.
@pytest.mark.parametrize(("mode", "method", "path"), cases())
def test_every_operation_answers_within_its_schema(service, api_schema, mode, method, path):
    operation = api_schema[path][method]

    strategy = operation.as_strategy(generation_mode=MODES[mode])
    if mode == "valid":
        strategy = strategy.map(prime_in_vocabulary)

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def answers_within_schema(case):
        case.call_and_validate(timeout=60)

    before = answered(service)  # what came earlier (the readiness probe's 503s while it compiled) is not counted
    answers_within_schema()
    new = {key: n - before.get(key, 0) for key, n in answered(service).items() if n > before.get(key, 0)}
    print(f"fuzzing {mode} {method} {path}: requests answered by (route, method, status): {new}")
    assert any(route == path and verb == method for route, verb, _ in new), "no request reached the operation"
    assert not {key: n for key, n in new.items() if key[2].startswith("5")}, "requests answered with a 5xx"
