"""Service settings, from environment variables (the twelve-factor way: the same image runs anywhere).

TWEETBOT_BUNDLE        the exported bundle folder               (models/export)
PORT                   the port `make serve` and the image use  (8080)
TWEETBOT_CORS_ORIGINS  comma-separated allowed origins          (*: any page may fetch a post, as before)
TWEETBOT_MAX_BATCH     samples generated at once (engine slots)  (32; 1 turns batching off)
TWEETBOT_MAX_QUEUE     samples that may wait for a slot         (256; more is a 503 that says retry)
TWEETBOT_LOG_LEVEL     DEBUG, INFO, WARNING or ERROR            (INFO)
TWEETBOT_COMPILE_CACHE JAX's persistent compilation cache       (~/.cache/tweetbot/jax; empty: none)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from service.schemas import MAX_SAMPLES
from tweetbot.runtime.errors import UserError
from tweetbot.runtime.paths import BUNDLE
from tweetbot.runtime.sample import BATCH_BUCKETS

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class Settings:
    bundle: Path = BUNDLE
    port: int = 8080
    cors_origins: tuple[str, ...] = ("*",)
    max_batch: int = 32
    max_queue: int = 256
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
        if self.log_level not in LOG_LEVELS:
            raise UserError(f"TWEETBOT_LOG_LEVEL is {self.log_level!r}: use one of {', '.join(LOG_LEVELS)}")

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
