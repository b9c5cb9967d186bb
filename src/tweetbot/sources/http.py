"""One JSON-over-HTTP server as the Mastodon and Bluesky sources read it, through httpx.

`Server.get` waits out rate limits and retries server failures, so a source only sees answers it can act on:

- 429: wait until the reset the server names (`X-RateLimit-Reset`, an ISO 8601 time, on Mastodon;
  `RateLimit-Reset`, Unix seconds, on Bluesky; or `Retry-After`), saying so, then ask again;
- a success whose `X-RateLimit-Remaining` / `RateLimit-Remaining` is 0: wait until the reset before the next
  request, rather than be refused;
- 500, 502, 503, 504 and dropped connections: retry with exponential backoff, `RETRIES` times, then a UserError;
- anything else (200, 4xx) goes back to the source, which knows what a 404 means for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime

import httpx

from tweetbot.runtime.errors import UserError

RETRIES = 5
BACKOFF_S = 1.0  # the first retry's wait; each next one waits twice as long
NO_RESET_WAIT_S = 60.0  # a 429 that names no reset: try again after this
TIMEOUT_S = 30.0
RETRIED_STATUSES = {500, 502, 503, 504}
USER_AGENT = "tweetbot/0.1 (reads the public posts of one account)"


class Server:
    """A base URL to GET JSON from, with the waits and retries above; `name` names it in messages."""

    def __init__(self, base_url: str, name: str, say: Callable[[str], None], headers: Mapping[str, str] | None = None):
        self.base_url = base_url.rstrip("/")
        self.name = name
        self.say = say
        self.client = httpx.Client(
            timeout=TIMEOUT_S, follow_redirects=True, headers={"User-Agent": USER_AGENT, **(headers or {})}
        )
        self.wait_before_next = 0.0  # the rate limit was used up by the last answer: wait this long first

    def get(self, path: str, params: Mapping[str, object] | None = None) -> httpx.Response:
        """GET `path` (under the base URL, or a full URL); the answer once it is neither a 429 nor a failure."""
        url = path if path.startswith(("http://", "https://")) else f"{self.base_url}{path}"
        query = {key: _query_value(value) for key, value in (params or {}).items() if value is not None}
        failures = 0
        while True:
            if self.wait_before_next > 0:
                self._wait(self.wait_before_next, "rate limit used up")
                self.wait_before_next = 0.0
            try:
                response = self.client.get(url, params=query)
            except httpx.TransportError as error:
                failures += 1
                if failures > RETRIES:
                    raise UserError(
                        f"could not reach {self.name} at {url} ({type(error).__name__}): check the network "
                        "connection and fetch.api_url"
                    ) from None
                self._wait(BACKOFF_S * 2 ** (failures - 1), f"{type(error).__name__}, retry {failures}")
                continue
            if response.status_code == 429:
                self._wait(_reset_wait(response.headers) or NO_RESET_WAIT_S, "rate limit reached (429)")
                continue
            if response.status_code in RETRIED_STATUSES:
                failures += 1
                if failures > RETRIES:
                    raise UserError(
                        f"{self.name} failed {failures} times ({response.status_code} "
                        f"{response.reason_phrase}): try again later"
                    )
                self._wait(BACKOFF_S * 2 ** (failures - 1), f"{response.status_code}, retry {failures}")
                continue
            remaining = response.headers.get("x-ratelimit-remaining") or response.headers.get("ratelimit-remaining")
            if remaining is not None and remaining.strip() == "0":
                self.wait_before_next = _reset_wait(response.headers) or 0.0
            return response

    def json(self, response: httpx.Response, what: str) -> object:
        """The JSON body of `response`; anything else is a UserError saying the server's answer is malformed."""
        try:
            return response.json()
        except ValueError:
            raise self.malformed(response, f"{what} is not JSON") from None

    def malformed(self, response: httpx.Response, detail: str) -> UserError:
        return UserError(
            f"{self.name} gave a malformed answer to {response.request.url.copy_with(query=None)} ({detail}): "
            "check that fetch.api_url names a server speaking its API, or try again later"
        )

    def _wait(self, seconds: float, why: str) -> None:
        seconds = max(seconds, 0.0)
        until = time.strftime("%H:%M:%S", time.localtime(time.time() + seconds))
        self.say(f"{self.name}: {why}: waiting {seconds:.0f} s (until {until}), then going on")
        time.sleep(seconds)


def _reset_wait(headers: httpx.Headers) -> float | None:
    """Seconds until the rate limit resets, from whichever header the server sent; None if none says."""
    retry_after = headers.get("retry-after")
    if retry_after and retry_after.strip().isdigit():
        return float(retry_after)
    reset = headers.get("x-ratelimit-reset") or headers.get("ratelimit-reset")
    if not reset:
        return None
    reset = reset.strip()
    try:
        moment = float(reset) if reset.replace(".", "", 1).isdigit() else datetime.fromisoformat(reset).timestamp()
    except ValueError:
        return None
    # At least a second: if our clock is ahead of the server's, it answers 429 again and we wait again.
    return max(moment - time.time(), 1.0)


def _query_value(value: object) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)
