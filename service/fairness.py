"""Who a request comes from, and how much one client may ask for: the service's share of it for everybody.

A client is an IP address (an IPv6 one: its /64): the connection's peer, or, when the peer is a trusted proxy
(`TWEETBOT_TRUSTED_PROXIES`: behind a load balancer every connection comes from it), the address that proxy
put in `X-Forwarded-For`. A proxy appends the address it got the request from, so the header is read from the
right and the first address that is not a trusted proxy is the client: what a client writes in the header
itself stays on the left, unread.

Each client gets a token bucket of characters (`RateLimiter`): `rate` a second, in bursts of up to `burst`.
A request costs the characters it asks for, what the engine may have to write for it: `GET /` its 280 (less
its prime), `POST /generate` n x max_length. Beyond that a request is refused with `TooManyRequests` (429, and
`Retry-After`: the seconds until the bucket holds enough again). The batcher adds the per-client limits on
samples in flight and on engine slots (service/batching.py). A refusal is answered after REFUSAL_HOLD_S
(`held_refusals`): a client that retries at once, Retry-After or not, then makes one request a second per
connection instead of hundreds, whose handling took half of the engine's chunks from everybody else (2-core
machine, benchmarks/fairness_speed.py). Litestar's RateLimitConfig counts requests in whole-second windows and
sends no `Retry-After`; and a request of 64 x 1000 characters is not one of a post.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
REFUSAL_HOLD_S = 1.0  # the least Retry-After
MAX_CLIENTS = 10_000  # buckets kept: the least recently seen client beyond these is forgotten


class TooManyRequests(Exception):
    """The client asked for more than its share: it should retry after `retry_after_s` seconds."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


@contextlib.asynccontextmanager
async def held_refusals() -> AsyncIterator[None]:
    """A TooManyRequests raised inside leaves after REFUSAL_HOLD_S (see the module doc)."""
    try:
        yield
    except TooManyRequests:
        await asyncio.sleep(REFUSAL_HOLD_S)
        raise


def _trusted(address: str, proxies: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:  # not an address: nobody we trust
        return False
    return any(ip in network for network in proxies)


def client_address(peer: str, forwarded_for: Sequence[str], proxies: Sequence[Network]) -> str:
    """The client of a request from `peer` carrying the `X-Forwarded-For` header values `forwarded_for`."""
    client = peer
    if _trusted(peer, proxies):
        hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
        untrusted = [hop for hop in hops if not _trusted(hop, proxies)]
        client = untrusted[-1] if untrusted else peer  # none: the proxy's own request (its health check)
    try:
        ip = ipaddress.ip_address(client)
    except ValueError:
        return client
    # One IPv6 host gets a whole /64 to pick addresses from: it is one client.
    return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else str(ip)


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Per-client token buckets: `rate` units (characters) a second, at most `burst` saved up."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, client: str, cost: int) -> None:
        """Take `cost` from `client`'s bucket, or raise TooManyRequests (and take nothing)."""
        now = self._clock()
        bucket = self._buckets.pop(client, None) or _Bucket(tokens=self.burst, updated=now)
        self._buckets[client] = bucket  # the most recently seen client last
        while len(self._buckets) > MAX_CLIENTS:  # forget the least recently seen
            del self._buckets[next(iter(self._buckets))]
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens < cost:
            wait = math.ceil((cost - bucket.tokens) / self.rate)
            raise TooManyRequests(
                f"too much asked for: one client may ask for {self.rate:g} characters a second: retry in {wait} s",
                retry_after_s=wait,
            )
        bucket.tokens -= cost
