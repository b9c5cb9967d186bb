"""Request and response bodies: msgspec structs whose bounds Litestar checks before a handler runs.

A value out of bounds, of the wrong type or an unknown field is a 400 that names the field; the one rule that
needs the model (prime characters must be in the vocabulary) is checked by the handler the same way, and the
app publishes it in the OpenAPI schema at start-up (`alphabet_pattern`: the bundle's characters).

Each bound is written once, on the body field's type below; `as_query` gives the query parameters of `GET /`
and `/stream` the same type and bounds.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Literal, Union, get_args, get_origin

import msgspec
from litestar.params import Parameter
from msgspec import Meta

from tweetbot.runtime.sample import MAX_LENGTH, MAX_SEED, PRIME_BUCKET
from tweetbot.runtime.sampling import TEMPERATURE, TOP_P
from tweetbot.runtime.vocab import Vocab

MAX_POST_CHARS = 280  # a post, as `GET /` has always returned it
MAX_PRIME_CHARS = PRIME_BUCKET  # the longest prime the compiled sampler takes

MAX_SAMPLES = 64  # the most samples one POST /generate may ask for
MAX_TOP_K = 1000  # a character vocabulary is smaller: any k at or above its size keeps every character

Temperature = Annotated[float, Meta(gt=0, le=5, description="softmax temperature: low is safe, high is wild")]
Prime = Annotated[
    str,
    Meta(max_length=MAX_PRIME_CHARS, description="text the sample starts with, in characters the model knows"),
]
TopK = Annotated[int, Meta(ge=1, le=MAX_TOP_K, description="only the k likeliest characters")]
TopP = Annotated[float, Meta(gt=0, le=1, description="nucleus: the smallest set of this much mass")]
MaxLength = Annotated[
    int,
    Meta(
        ge=1,
        le=MAX_LENGTH,
        description="characters written after the prime, as the client receives them (a link counts all of"
        " its characters)",
    ),
]
# Litestar drops a bound of 0 from the OpenAPI schema of an optional field (it tests the bound for truth), so
# the seed's lower bound is stated again for the schema; msgspec enforces `ge=0` itself.
Seed = Annotated[
    int, Meta(ge=0, le=MAX_SEED, description="same seed, same text", extra_json_schema={"extra": {"minimum": 0}})
]

BOUNDS = ("gt", "ge", "lt", "le", "min_length", "max_length", "pattern", "description")


def as_query(field_type):
    """The query parameter for a body field's type (`Annotated[T, Meta(...)]`, or that `| None`): the same type
    and bounds, as the `Parameter` Litestar reads (it ignores msgspec's Meta on a query parameter)."""
    optional = get_origin(field_type) is Union
    annotated = next(a for a in get_args(field_type) if a is not type(None)) if optional else field_type
    kind, meta = get_args(annotated)
    bounds = {name: getattr(meta, name) for name in BOUNDS if getattr(meta, name) is not None}
    extra = (meta.extra_json_schema or {}).get("extra")
    return Annotated[kind | None if optional else kind, Parameter(**bounds, schema_extra=extra)]


def alphabet_pattern(vocab: Vocab) -> str:
    """The JSON-schema `pattern` (an ECMA-262 regular expression) of text made of `vocab`'s characters only.

    A character that is special in a class (`\\ ] [ ^ -`), invisible (control, format, space, private use: the
    link and mention symbols) is written as `\\uXXXX`, any other as itself.
    """

    def escaped(char: str) -> str:
        if char in "\\]^-[" or (unicodedata.category(char)[0] in "CZ" and ord(char) <= 0xFFFF):
            return f"\\u{ord(char):04x}"
        return char

    return f"^[{''.join(escaped(c) for c in vocab.chars)}]*$"


class GenerateRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    prime: Prime = ""
    temperature: Temperature = TEMPERATURE
    top_k: TopK | None = None
    top_p: TopP = TOP_P
    max_length: MaxLength = MAX_POST_CHARS
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

    data: Annotated[
        str,
        Meta(
            description='JSON: {"text": ...} in a message; {"model_version", "seed"} in done, and "interrupted":'
            " true when the service stopped before the sample ended"
        ),
    ]
    event: Literal["message", "done"] = "message"


class StreamChunk(msgspec.Struct):
    text: str  # the next characters of the sample (the prime comes first)


class StreamDone(msgspec.Struct, kw_only=True, omit_defaults=True):
    model_version: str
    seed: int
    interrupted: bool = False  # the service stopped before the sample ended: ask again (same seed, same text)


class Problem(msgspec.Struct):
    """A refusal (Litestar's error body)."""

    status_code: int
    detail: str


class Health(msgspec.Struct):
    status: str


class Readiness(msgspec.Struct, kw_only=True):
    ready: bool
    model_version: str | None = None
    detail: str | None = None
