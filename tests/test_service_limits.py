"""Each client's share of the service: who a client is, its rate limit, and the 429s of the live service.

The live tests run uvicorn on 127.0.0.1 and give each client its own source address in 127.0.0.0/8, as the
service sees distinct clients in production.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import re
import socket
import time

import pytest

from service.fairness import RateLimiter, TooManyRequests, client_address
from service.settings import Settings
from tests.live_service import live_service
from tests.tiny_bundle import write_tiny_bundle

PROXIES = (ipaddress.ip_network("10.0.0.0/16"), ipaddress.ip_network("fd00::/8"))


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        ("203.0.113.7", [], "203.0.113.7"),  # no proxy
        ("203.0.113.7", ["198.51.100.1"], "203.0.113.7"),  # a header from an untrusted peer is ignored
        ("10.0.3.4", ["198.51.100.1"], "198.51.100.1"),  # the load balancer's
        ("10.0.3.4", ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),  # what the client wrote itself stays unread
        ("10.0.3.4", ["6.6.6.6", "198.51.100.1, 10.0.9.9"], "198.51.100.1"),  # two proxies, two headers
        ("10.0.3.4", ["not-an-address, 198.51.100.1"], "198.51.100.1"),
        ("10.0.3.4", [], "10.0.3.4"),  # the load balancer's own health check
        ("10.0.3.4", ["10.0.1.1"], "10.0.3.4"),
        ("2001:db8:1:2:3:4:5:6", [], "2001:db8:1:2::/64"),  # an IPv6 host is its /64
        ("fd00::1", ["2001:db8:1:2::99"], "2001:db8:1:2::/64"),
        ("testclient", [], "testclient"),
    ],
)
def test_the_client_is_the_first_untrusted_address_from_the_right(peer, forwarded_for, client):
    assert client_address(peer, forwarded_for, PROXIES) == client


def test_a_client_may_ask_for_so_many_characters_a_second():
    now = [0.0]
    limiter = RateLimiter(rate=10, burst=64, clock=lambda: now[0])
    limiter.take("a", 64)  # a full bucket at once
    with pytest.raises(TooManyRequests) as refused:
        limiter.take("a", 1)
    assert refused.value.retry_after_s == 1
    limiter.take("b", 64)  # every client has its own bucket
    now[0] = 3.0  # 30 samples later
    with pytest.raises(TooManyRequests) as refused:
        limiter.take("a", 64)
    assert refused.value.retry_after_s == 4  # 34 more samples at 10 a second
    limiter.take("a", 30)  # a refusal took nothing
    now[0] = 100.0
    limiter.take("a", 64)  # full again, never more than the burst
    with pytest.raises(TooManyRequests):
        limiter.take("a", 1)


def test_fairness_settings_from_the_environment():
    env = {
        "TWEETBOT_TRUSTED_PROXIES": "10.0.0.0/16, 192.168.1.1",
        "TWEETBOT_CLIENT_RATE": "2.5",
        "TWEETBOT_CLIENT_SAMPLES": "128",
        "TWEETBOT_CLIENT_SLOTS": "3",
    }
    settings = Settings.from_env(env)
    assert settings.trusted_proxies == (ipaddress.ip_network("10.0.0.0/16"), ipaddress.ip_network("192.168.1.1/32"))
    assert (settings.client_rate, settings.client_samples, settings.slots_per_client) == (2.5, 128, 3)
    assert settings.client_burst == 64 * 1000  # at least one largest request
    default = Settings()
    assert default.slots_per_client == 8  # a quarter of 32
    # Behind a load balancer in a VPC nothing needs setting; a public peer is never trusted.
    assert client_address("172.31.7.9", ["198.51.100.1"], default.trusted_proxies) == "198.51.100.1"
    assert client_address("203.0.113.7", ["198.51.100.1"], default.trusted_proxies) == "203.0.113.7"
    assert client_address("127.0.0.1", ["198.51.100.1"], default.trusted_proxies) == "127.0.0.1"
    assert Settings.from_env({"TWEETBOT_TRUSTED_PROXIES": ""}).trusted_proxies == ()
    assert Settings(max_batch=2).slots_per_client == 1


def call(port: int, source: str, method: str, path: str, body: dict | None = None, headers: dict | None = None):
    """(status, headers, decoded JSON body) of one request from the source address `source`."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60, source_address=(source, 0))
    try:
        payload = json.dumps(body) if body is not None else None
        connection.request(method, path, body=payload, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        connection.close()


# Asks for the whole burst (one largest request, 64 x 1000 characters): a second one right after is refused.
HEAVY = {"n": 64, "max_length": 1000}


@pytest.fixture(scope="module")
def limited_service(tmp_path_factory):
    """The live service's port: 100 characters a second per client, 127.0.0.1 a trusted proxy, and a model
    that ends every sample at once (the limits count what a request asks for, not what it got)."""
    folder = tmp_path_factory.mktemp("limits")
    env = {"TWEETBOT_CLIENT_RATE": "100", "TWEETBOT_TRUSTED_PROXIES": "127.0.0.1", "TWEETBOT_MAX_BATCH": "4"}
    with live_service(write_tiny_bundle(folder / "export", eos_bias=100.0), folder / "service.log", **env) as url:
        yield int(url.rsplit(":", 1)[1])


def test_a_client_past_its_rate_gets_429s_that_say_when_and_others_do_not(limited_service):
    port = limited_service
    assert call(port, "127.0.0.2", "POST", "/generate", HEAVY)[0] == 200  # the burst
    status, headers, body = call(port, "127.0.0.2", "POST", "/generate", HEAVY)
    assert status == 429 and int(headers["retry-after"]) > 600 and "retry in" in body["detail"]  # 64000 at 100/s
    assert call(port, "127.0.0.2", "GET", "/")[0] == 429
    for path in ("/healthz", "/readyz", "/metrics"):  # never limited: the load balancer's probes
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60, source_address=("127.0.0.2", 0))
        connection.request("GET", path)
        assert connection.getresponse().status == 200
        connection.close()
    for _ in range(5):  # other clients are served as before
        assert call(port, "127.0.0.3", "GET", "/")[0] == 200
    assert call(port, "127.0.0.5", "POST", "/generate", HEAVY)[0] == 200


def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_share(limited_service):
    port = limited_service

    def via_proxy(forwarded_for: str) -> int:
        return call(port, "127.0.0.1", "POST", "/generate", HEAVY, {"X-Forwarded-For": forwarded_for})[0]

    assert via_proxy("198.51.100.1") == 200
    assert via_proxy("198.51.100.1") == 429
    assert via_proxy("6.6.6.6, 198.51.100.1") == 429  # what the client writes in the header changes nothing
    assert via_proxy("198.51.100.2") == 200  # another client behind the same proxy
    # An untrusted peer's header is ignored: it is a client of its own.
    assert call(port, "127.0.0.4", "POST", "/generate", HEAVY, {"X-Forwarded-For": "198.51.100.9"})[0] == 200
    assert call(port, "127.0.0.4", "POST", "/generate", HEAVY, {"X-Forwarded-For": "198.51.100.8"})[0] == 429


def metric(port: int, name: str) -> float:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    connection.close()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_a_client_that_disconnects_takes_its_samples_out_of_the_engine(tmp_path):
    """64 samples of 1000 characters in one slot are 2048 chunks; the client leaves after the first ones."""
    env = {"TWEETBOT_MAX_BATCH": "1"}
    with live_service(write_tiny_bundle(tmp_path / "export", eos_bias=-100.0), tmp_path / "service.log", **env) as url:
        port = int(url.rsplit(":", 1)[1])
        leaving = socket.create_connection(("127.0.0.1", port))
        body = json.dumps(HEAVY).encode()
        head = f"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
        leaving.sendall(head.encode() + b"\r\n\r\n" + body)
        deadline = time.monotonic() + 120
        while metric(port, "tweetbot_batch_size_count") < 3:  # it is being written
            assert time.monotonic() < deadline, "the request never started"
            time.sleep(0.01)
        leaving.close()
        while metric(port, "tweetbot_samples_in_flight"):
            assert time.monotonic() < deadline, "its samples never left"
            time.sleep(0.01)
        chunks = metric(port, "tweetbot_batch_size_count")
        assert chunks < 100  # of 2048
        assert metric(port, 'tweetbot_requests_total{method="POST",route="/generate",status="499"}') == 1
        assert call(port, "127.0.0.1", "GET", "/")[0] == 200  # the client's share is free again
