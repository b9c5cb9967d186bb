"""What the service tells its operators: Prometheus metrics and one JSON log line per request.

The metrics live in prometheus_client's default registry (served at `GET /metrics`), so they are created once
per process, at import, however many apps a test builds. The request line holds method, route, status and
duration only: never headers, bodies or query strings, where a token or a user's text could hide.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import Counter, Gauge, Histogram, Info

REQUESTS = Counter("tweetbot_requests", "HTTP requests answered", ["route", "method", "status"])
LATENCY = Histogram(
    "tweetbot_request_duration_seconds",
    "Time from request to the end of the response",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_SIZE = Histogram(
    "tweetbot_batch_size", "Samples in flight per compiled sampler call (one chunk)", buckets=(1, 2, 4, 8, 16, 32, 64)
)
QUEUE_WAIT = Histogram(
    "tweetbot_queue_wait_seconds",
    "Time a sample waited for a free slot",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
IN_FLIGHT = Gauge("tweetbot_samples_in_flight", "Samples waiting for a slot or being written")
MODEL = Info("tweetbot_model", "The model being served")
UNMATCHED = "<unmatched>"  # the route label of requests for a path or method the service does not have

request_log = logging.getLogger("tweetbot.requests")


def observe_batch(busy: int, queue_waits_s: list[float]) -> None:
    BATCH_SIZE.observe(busy)
    for wait in queue_waits_s:
        QUEUE_WAIT.observe(wait)


class RequestObserver(ASGIMiddleware):
    """Count, time and log every request that reaches a route (by its route template, not its raw path)."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        started = time.perf_counter()
        status = 500  # what the client sees if the response never starts

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await next_app(scope, receive, send_and_note_status)
        finally:
            elapsed = time.perf_counter() - started
            route, method = scope.get("path_template", scope["path"]), scope["method"]
            REQUESTS.labels(route, method, str(status)).inc()
            LATENCY.labels(route, method).observe(elapsed)
            fields = {"method": method, "route": route, "status": status, "duration_ms": round(elapsed * 1e3, 2)}
            request_log.info("request", extra={"fields": fields})


def observe_unmatched(method: str, status: int) -> None:
    """Count and log a request no route matched (404, 405), under one route label whatever its path (which
    could hold anything, and would make a new time series per path). No duration: the router answers such a
    request before anything here could start a clock."""
    REQUESTS.labels(UNMATCHED, method, str(status)).inc()
    request_log.info("request", extra={"fields": {"method": method, "route": UNMATCHED, "status": status}})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, plus the record's `fields` (see `extra=`)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)
