"""Service settings, from environment variables (the twelve-factor way: the same image runs anywhere).

TWEETBOT_BUNDLE        the exported bundle folder               (models/export)
PORT                   the port `make serve` and the image use  (8080)
TWEETBOT_CORS_ORIGINS  comma-separated allowed origins          (*: any page may fetch a post, as before)
TWEETBOT_MAX_BATCH     samples generated at once (engine slots)  (32; 1 turns batching off)
TWEETBOT_MAX_QUEUE     samples that may wait for a slot         (256; more is a 503 that says retry)

Each client's share (service/fairness.py; a client is an IP address, an IPv6 one its /64):
TWEETBOT_TRUSTED_PROXIES  comma-separated addresses or networks (CIDR) of the proxies in front, whose
                       X-Forwarded-For names the client (the private networks, 10.0.0.0/8, 172.16.0.0/12,
                       192.168.0.0/16 and fc00::/7, where a load balancer in a VPC has its addresses: behind
                       one nothing needs setting; the VPC's CIDR narrows it; empty: trust no proxy, the
                       connection's peer is the client). A peer that is not trusted is its own client.
TWEETBOT_CLIENT_RATE   characters a second one client may ask for, n x max_length (20000: a post costs 280;
                       0: no limit), in bursts of up to twice that and at least one largest request (64 x
                       1000); beyond it a 429 with Retry-After
TWEETBOT_CLIENT_SAMPLES  samples one client may have in flight, waiting or being written (64: one largest
                       request); more is a 429
TWEETBOT_CLIENT_SLOTS  engine slots one client's samples may hold at once (a quarter of TWEETBOT_MAX_BATCH,
                       at least 1), so others' samples start within a chunk whatever one client asked for
TWEETBOT_DRAIN_S       seconds from SIGTERM to exit, at most    (20). The requests and streams in flight
                       finish; what still runs 1 s before the end is cut cleanly (a stream gets its done
                       event); see service/shutdown.py. The image passes it to uvicorn's
                       --timeout-graceful-shutdown. On ECS: stopTimeout >= TWEETBOT_DRAIN_S + 10 (the
                       default 30 s covers 20); ECS sends SIGTERM once the load balancer target has drained,
                       so its deregistration delay need only cover the longest request (a stream of 1000
                       characters: seconds; 30 s is ample), not the drain.
TWEETBOT_LOG_LEVEL     DEBUG, INFO, WARNING or ERROR            (INFO)
TWEETBOT_COMPILE_CACHE JAX's persistent compilation cache       (~/.cache/tweetbot/jax; empty: none)
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from service.fairness import Network
from service.schemas import MAX_SAMPLES
from tweetbot.runtime.errors import UserError
from tweetbot.runtime.paths import BUNDLE
from tweetbot.runtime.sample import BATCH_BUCKETS, MAX_LENGTH

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Where a load balancer in a VPC (or a proxy on a LAN) has its addresses; a public client never does.
PRIVATE_NETWORKS = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"))


@dataclass(frozen=True)
class Settings:
    bundle: Path = BUNDLE
    port: int = 8080
    cors_origins: tuple[str, ...] = ("*",)
    max_batch: int = 32
    max_queue: int = 256
    trusted_proxies: tuple[Network, ...] = PRIVATE_NETWORKS
    client_rate: float = 20_000.0
    client_samples: int = MAX_SAMPLES
    client_slots: int | None = None  # None: a quarter of max_batch (see `slots_per_client`)
    drain_s: int = 20
    log_level: str = "INFO"
    compile_cache: Path | None = Path("~/.cache/tweetbot/jax").expanduser()

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise UserError(f"PORT is {self.port}: use a port number from 1 to 65535")
        if not 1 <= self.max_batch <= BATCH_BUCKETS[-1]:
            raise UserError(f"TWEETBOT_MAX_BATCH is {self.max_batch}: use 1 (no batching) to {BATCH_BUCKETS[-1]}")
        if not MAX_SAMPLES <= self.max_queue <= 100_000:  # room for the largest request
            raise UserError(
                f"TWEETBOT_MAX_QUEUE is {self.max_queue}: use {MAX_SAMPLES} (the most samples one request"
                " may ask for) to 100000"
            )
        if not 0 <= self.client_rate <= 100_000_000:
            raise UserError(
                f"TWEETBOT_CLIENT_RATE is {self.client_rate}: use 0 (no limit) to 100000000 characters a second"
            )
        if not MAX_SAMPLES <= self.client_samples <= 100_000:
            raise UserError(
                f"TWEETBOT_CLIENT_SAMPLES is {self.client_samples}: use {MAX_SAMPLES} (the most samples one request"
                " may ask for) to 100000"
            )
        if self.client_slots is not None and not 1 <= self.client_slots <= self.max_batch:
            raise UserError(
                f"TWEETBOT_CLIENT_SLOTS is {self.client_slots}: use 1 to TWEETBOT_MAX_BATCH ({self.max_batch})"
            )
        if not 1 <= self.drain_s <= 3600:
            raise UserError(f"TWEETBOT_DRAIN_S is {self.drain_s}: use 1 to 3600 seconds")
        if self.log_level not in LOG_LEVELS:
            raise UserError(f"TWEETBOT_LOG_LEVEL is {self.log_level!r}: use one of {', '.join(LOG_LEVELS)}")

    @property
    def slots_per_client(self) -> int:
        return self.client_slots or max(self.max_batch // 4, 1)

    @property
    def client_burst(self) -> float:
        """The characters a client may ask for at once: two seconds' worth, and at least one largest request."""
        return max(2 * self.client_rate, MAX_SAMPLES * MAX_LENGTH)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        """Settings from `env`; an unset variable keeps its default, a malformed one is a UserError."""
        default = cls()
        origins = env.get("TWEETBOT_CORS_ORIGINS")
        cache = env.get("TWEETBOT_COMPILE_CACHE", str(default.compile_cache))
        return cls(
            bundle=Path(env.get("TWEETBOT_BUNDLE", default.bundle)),
            port=_number(env, "PORT", int, default.port),
            cors_origins=tuple(o.strip() for o in origins.split(",") if o.strip()) if origins else default.cors_origins,
            max_batch=_number(env, "TWEETBOT_MAX_BATCH", int, default.max_batch),
            max_queue=_number(env, "TWEETBOT_MAX_QUEUE", int, default.max_queue),
            trusted_proxies=_networks(env["TWEETBOT_TRUSTED_PROXIES"])
            if "TWEETBOT_TRUSTED_PROXIES" in env
            else default.trusted_proxies,
            client_rate=_number(env, "TWEETBOT_CLIENT_RATE", float, default.client_rate),
            client_samples=_number(env, "TWEETBOT_CLIENT_SAMPLES", int, default.client_samples),
            client_slots=_number(env, "TWEETBOT_CLIENT_SLOTS", int, default.client_slots),
            drain_s=_number(env, "TWEETBOT_DRAIN_S", int, default.drain_s),
            log_level=env.get("TWEETBOT_LOG_LEVEL", default.log_level).upper(),
            compile_cache=Path(cache).expanduser() if cache else None,
        )


def _number(env: Mapping[str, str], name: str, kind: type, default):
    if name not in env:
        return default
    try:
        return kind(env[name])
    except ValueError:
        raise UserError(f"{name} is {env[name]!r}, not a{'n integer' if kind is int else ' number'}") from None


def _networks(value: str) -> tuple[Network, ...]:
    networks = []
    for item in filter(None, (item.strip() for item in value.split(","))):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise UserError(
                f"TWEETBOT_TRUSTED_PROXIES holds {item!r}, not an address or a network: use addresses or networks"
                " like 10.0.0.0/16, separated by commas"
            ) from None
    return tuple(networks)
