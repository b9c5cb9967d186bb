"""Request and response bodies: msgspec structs whose bounds Litestar checks before a handler runs.

A value out of bounds, of the wrong type or an unknown field is a 400 that names the field; the one rule that
needs the model (prime characters must be in the vocabulary) is checked by the handler the same way.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from tweetbot.runtime.sample import MAX_LENGTH, MAX_SEED, PRIME_BUCKET

MAX_POST_CHARS = 280  # a post, as `GET /` has always returned it
MAX_PRIME_CHARS = PRIME_BUCKET  # the longest prime the compiled sampler takes

MAX_SAMPLES = 64  # the most samples one POST /generate may ask for
MAX_TOP_K = 1000  # a character vocabulary is smaller: any k at or above its size keeps every character

Temperature = Annotated[float, Meta(gt=0, le=5, description="softmax temperature: low is safe, high is wild")]
Prime = Annotated[
    str,
    Meta(max_length=MAX_PRIME_CHARS, description="text the sample starts with, in characters the model knows"),
]
# Litestar drops a bound of 0 from the OpenAPI schema of an optional field (it tests the bound for truth), so
# the seed's lower bound is stated again for the schema; msgspec enforces `ge=0` itself.
SEED_SCHEMA = {"minimum": 0}
Seed = Annotated[
    int, Meta(ge=0, le=MAX_SEED, description="same seed, same text", extra_json_schema={"extra": SEED_SCHEMA})
]


class GenerateRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    prime: Prime = ""
    temperature: Temperature = 1.0
    top_k: Annotated[int, Meta(ge=1, le=MAX_TOP_K, description="only the k likeliest characters")] | None = None
    top_p: Annotated[float, Meta(gt=0, le=1, description="nucleus: the smallest set of this much mass")] = 1.0
    max_length: Annotated[int, Meta(ge=1, le=MAX_LENGTH, description="characters written after the prime")] = (
        MAX_POST_CHARS
    )
    n: Annotated[int, Meta(ge=1, le=MAX_SAMPLES, description="how many samples")] = 1
    seed: Seed | None = None


class GenerateResponse(msgspec.Struct, kw_only=True):
    samples: list[str]
    seeds: list[int]  # sample i came from seeds[i]: send it back as `seed` (with n=1) to get it again
    model_version: str


class Post(msgspec.Struct):
    text: str


class StreamEvent(msgspec.Struct):
    """A server-sent event of `GET /stream`, as the OpenAPI schema describes it."""

    data: Annotated[str, Meta(description='JSON: {"text": ...} in a message, {"model_version", "seed"} in done')]
    event: Literal["message", "done"] = "message"


class StreamChunk(msgspec.Struct):
    text: str  # the next characters of the sample (the prime comes first)


class StreamDone(msgspec.Struct, kw_only=True):
    model_version: str
    seed: int


class Health(msgspec.Struct):
    status: str


class Readiness(msgspec.Struct, kw_only=True):
    ready: bool
    model_version: str | None = None
    detail: str | None = None
