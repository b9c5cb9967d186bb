"""The compiled, batched sampler: many requests, each with its own settings, generated in one compiled loop.

    sampler = Sampler(model, variables, vocab)
    sampler.warmup()                                    # compile each batch size (a server: before ready)
    texts = sampler.generate([SampleRequest(prime="Hello", temperature=0.8, seed=1), SampleRequest()])
    for deltas in sampler.stream(requests):             # the same texts, a chunk of steps at a time
        ...                                             # deltas[i]: what request i wrote since the last chunk

How a row is generated. The model reads the sequence `EOS, prime..., sample...`: a post starts after an
end-of-post symbol, as in training, where posts follow each other with EOS between them. Step `t` feeds the
row's token `t` and yields token `t + 1`: while `t < len(prime)` that is the next prime character (teacher
forcing), after that it is a sample. A row stops at EOS or after `max_length` samples and then emits only EOS.
Rows with different primes and lengths therefore share one loop of `prime + length` steps.

Sampling a step: the unknown-character symbol (UNK) is never drawn. A temperature below `GREEDY_BELOW` is
greedy (argmax); otherwise the logits are divided by the temperature, cut to the `top_k` most likely tokens
(0: all) and then to the smallest set whose probability reaches `top_p` (1.0: all), and a token is drawn by
inverse CDF from one uniform number, which for row r at step t comes from `fold_in(key(seed_r), t)`: a text
depends only on its own request, never on its batch-mates, so a request gives the same text alone or batched,
one-shot or streamed.

Compiled shapes depend only on the batch size, padded to a power of two (`BATCH_BUCKETS`; longer request
lists run in several batches), so a server compiles two programs per batch size once (`warmup`). Each program
is a `lax.scan` over `STREAM_CHUNK` steps; the one-shot program repeats it in a `lax.while_loop` until the
longest row's `prime + max_length` steps are done or every row has ended, so a batch of short posts stops
early and no length needs a program of its own. Streaming calls the chunk program from the host and keeps the
recurrent state on the device between calls. Both run the same steps, so they write the same text.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from tweetbot.errors import UserError
from tweetbot.vocab import EOS, UNK, Vocab

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
PRIME_BUCKET = 64  # the longest prime (raising it costs memory, not time: only real prime steps run)
MAX_LENGTH = 1000  # the most characters a request may ask for after its prime
STREAM_CHUNK = 32  # steps per compiled scan
MAX_STEPS = STREAM_CHUNK * math.ceil((PRIME_BUCKET + MAX_LENGTH) / STREAM_CHUNK)  # the room each row has
GREEDY_BELOW = 1e-4  # temperatures below this take the most likely token
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class SampleRequest:
    prime: str = ""
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    top_p: float = 1.0  # 1.0: no nucleus cut
    max_length: int = 280
    seed: int = 0


def check(request: SampleRequest, vocab: Vocab) -> None:
    """Raise a UserError naming what is wrong with `request` and how to fix it."""
    unknown = vocab.unknown_chars(request.prime)
    if unknown:
        shown = " ".join(repr(c) for c in unknown)
        raise UserError(f"the prime has characters the model does not know: {shown}; remove or replace them")
    if len(request.prime) > PRIME_BUCKET:
        raise UserError(f"the prime has {len(request.prime)} characters; use at most {PRIME_BUCKET}")
    if not (math.isfinite(request.temperature) and request.temperature >= 0):
        raise UserError(f"temperature {request.temperature} must be a number >= 0 (0 is greedy)")
    if request.top_k < 0:
        raise UserError(f"top_k {request.top_k} must be >= 0 (0 keeps every token)")
    if not 0 < request.top_p <= 1:
        raise UserError(f"top_p {request.top_p} must be in (0, 1] (1 keeps every token)")
    if not 1 <= request.max_length <= MAX_LENGTH:
        raise UserError(f"max_length {request.max_length} must be between 1 and {MAX_LENGTH}")
    if not 0 <= request.seed <= MAX_SEED:
        raise UserError(f"seed {request.seed} must be between 0 and {MAX_SEED}")


def bucket(n: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds `n`."""
    return next(b for b in buckets if b >= n)


def filter_logits(logits: jax.Array, top_k: jax.Array, top_p: jax.Array) -> jax.Array:
    """Keep each row's `top_k` largest logits (0: all), then its smallest set of probability >= `top_p`.

    logits [B, V]; top_k [B] int; top_p [B] float. Dropped logits become -inf; ties at a cut are all kept.
    """
    vocab_size = logits.shape[-1]
    ranked = jax.lax.top_k(logits, vocab_size)[0]  # each row's logits, largest first
    k = jnp.where(top_k > 0, jnp.minimum(top_k, vocab_size), vocab_size)
    ranked = jnp.where(ranked >= jnp.take_along_axis(ranked, k[:, None] - 1, axis=-1), ranked, -jnp.inf)
    weights = jnp.exp(ranked - ranked[:, :1])  # unnormalised probabilities
    weight_above = weights @ jnp.triu(jnp.ones((vocab_size, vocab_size), weights.dtype), 1)
    kept = (weight_above < top_p[:, None] * weights.sum(axis=-1, keepdims=True)) & (weights > 0)
    cut = jnp.min(jnp.where(kept, ranked, jnp.inf), axis=-1, keepdims=True)  # the smallest logit kept
    return jnp.where(logits >= cut, logits, -jnp.inf)


@dataclass(frozen=True)
class _Rows:
    """Each row's settings as device arrays [B]."""

    prime_len: jax.Array
    max_length: jax.Array
    temperature: jax.Array
    top_k: jax.Array
    top_p: jax.Array
    seed: jax.Array


jax.tree_util.register_dataclass(
    _Rows, data_fields=["prime_len", "max_length", "temperature", "top_k", "top_p", "seed"], meta_fields=[]
)


def draw(logits: jax.Array, step: jax.Array, rows: _Rows) -> jax.Array:
    """Each row's next token from its logits [B, V] at `step` (see the module doc for the rules).

    Written for XLA on a CPU, where a sampling step would otherwise cost as much as the model's: argmax is a
    max and a min (not a slow variadic reduce), the cumulative sum a matmul with a triangle of ones, and the
    inverse CDF a count.
    """
    vocab_size = logits.shape[-1]
    logits = logits.at[:, UNK].set(-jnp.inf)  # a rare character's stand-in is never written
    greedy = first_max(logits)
    scaled = logits / jnp.maximum(rows.temperature, GREEDY_BELOW)[:, None]
    filtering = jnp.any(rows.top_k > 0) | jnp.any(rows.top_p < 1)  # skip the filter's work when no row asks
    scaled = jax.lax.cond(filtering, filter_logits, lambda x, *_: x, scaled, rows.top_k, rows.top_p)
    weights = jnp.exp(scaled - scaled.max(axis=-1, keepdims=True))  # unnormalised probabilities
    cumulative = weights @ jnp.triu(jnp.ones((vocab_size, vocab_size), weights.dtype))
    uniform = jax.vmap(lambda seed: jax.random.uniform(jax.random.fold_in(jax.random.key(seed), step)))
    drawn = jnp.sum(cumulative <= uniform(rows.seed)[:, None] * cumulative[:, -1:], axis=-1)
    # Rounding can push the draw past the end or onto a token of weight 0: then take the likeliest.
    possible = jnp.take_along_axis(weights, jnp.minimum(drawn, vocab_size - 1)[:, None], axis=-1)[:, 0] > 0
    drawn = jnp.where(possible & (drawn < vocab_size), drawn, greedy)
    return jnp.where(rows.temperature < GREEDY_BELOW, greedy, drawn).astype(jnp.int32)


def first_max(x: jax.Array) -> jax.Array:
    """`jnp.argmax(x, axis=-1)` (the first index of the largest value), as two plain reductions."""
    index = jnp.arange(x.shape[-1])
    return jnp.min(jnp.where(x == x.max(axis=-1, keepdims=True), index, x.shape[-1]), axis=-1)


class Sampler:
    """Generates text for batches of `SampleRequest`s with a model and its variables (see the module doc)."""

    def __init__(self, model, variables, vocab: Vocab):
        if model.vocab_size != len(vocab):
            raise UserError(
                f"the model has {model.vocab_size} symbols but the vocabulary {len(vocab)}:"
                " use the vocabulary the model was trained with"
            )
        self.model = model
        self.variables = variables
        self.vocab = vocab
        self._generate = jax.jit(self._generate_batch)
        self._start = jax.jit(self._start_state, static_argnums=0)
        self._chunk = jax.jit(self._run_chunk)

    # --- the compiled parts -------------------------------------------------------------------------------

    def _start_state(self, batch_size: int):
        """Recurrent state, the first input token (EOS) and the per-row "finished" flags."""
        tokens = jnp.full((batch_size,), EOS, jnp.int32)
        return self.model.initial_carry(batch_size), tokens, jnp.zeros((batch_size,), bool)

    def _run_chunk(self, variables, state, first_step, primes, rows: _Rows):
        """Advance every row STREAM_CHUNK steps from `first_step`; return the new state and the tokens.

        primes [B, MAX_STEPS] holds each row's prime ids from column 0 (what follows is never read).
        """

        def step(state, t):
            carry, token, finished = state
            logits, carry = self.model.apply(variables, token[:, None], carry, train=False)
            sampled = draw(logits[:, 0], t, rows)
            in_prime = t < rows.prime_len
            finished |= ~in_prime & ((sampled == EOS) | (t - rows.prime_len >= rows.max_length))
            token = jnp.where(finished, EOS, jnp.where(in_prime, primes[:, t], sampled))
            return (carry, token, finished), token

        steps = first_step + jnp.arange(STREAM_CHUNK, dtype=jnp.int32)
        state, tokens = jax.lax.scan(step, state, steps)
        return state, tokens.T

    def _generate_batch(self, variables, primes, rows: _Rows):
        """Run chunks until every row has finished; return the tokens [B, MAX_STEPS] (EOS after the end)."""
        steps_needed = jnp.max(rows.prime_len + rows.max_length)

        def unfinished(loop):
            first, (_, _, finished), _ = loop
            return (first < steps_needed) & ~jnp.all(finished)

        def next_chunk(loop):
            first, state, tokens = loop
            state, written = self._run_chunk(variables, state, first, primes, rows)
            return first + STREAM_CHUNK, state, jax.lax.dynamic_update_slice_in_dim(tokens, written, first, 1)

        start = (jnp.int32(0), self._start_state(primes.shape[0]), jnp.full(primes.shape, EOS, jnp.int32))
        return jax.lax.while_loop(unfinished, next_chunk, start)[2]

    # --- the host side ------------------------------------------------------------------------------------

    def _batch(self, requests: Sequence[SampleRequest]):
        """Pad `requests` to their batch bucket; return the primes [B, MAX_STEPS] and the rows' settings."""
        size = bucket(len(requests), BATCH_BUCKETS)
        padded = list(requests) + [SampleRequest(max_length=1)] * (size - len(requests))
        primes = np.full((size, MAX_STEPS), EOS, np.int32)
        for row, request in enumerate(padded):
            primes[row, : len(request.prime)] = self.vocab.encode(request.prime)
        rows = _Rows(
            prime_len=np.array([len(r.prime) for r in padded], np.int32),
            max_length=np.array([r.max_length for r in padded], np.int32),
            temperature=np.array([r.temperature for r in padded], np.float32),
            top_k=np.array([r.top_k for r in padded], np.int32),
            top_p=np.array([r.top_p for r in padded], np.float32),
            seed=np.array([r.seed for r in padded], np.uint32),
        )
        return primes, rows

    def _checked_batches(self, requests: Sequence[SampleRequest]) -> Iterator[Sequence[SampleRequest]]:
        for request in requests:
            check(request, self.vocab)
        for start in range(0, len(requests), BATCH_BUCKETS[-1]):
            yield requests[start : start + BATCH_BUCKETS[-1]]

    def generate(self, requests: Sequence[SampleRequest]) -> list[str]:
        """The text of each request (without its prime), in order; more than 64 run as several batches."""
        texts = []
        for batch in self._checked_batches(requests):
            tokens = np.asarray(self._generate(self.variables, *self._batch(batch)))
            texts += [self.vocab.decode(tokens[row, len(r.prime) :]) for row, r in enumerate(batch)]
        return texts

    def stream(self, requests: Sequence[SampleRequest]) -> Iterator[list[str]]:
        """Yield, every `STREAM_CHUNK` steps, the new text of each request; joined, they equal `generate`.

        Up to 64 requests (one batch); stops as soon as every row has finished.
        """
        if len(requests) > BATCH_BUCKETS[-1]:
            raise UserError(f"stream at most {BATCH_BUCKETS[-1]} requests at once, not {len(requests)}")
        (batch,) = self._checked_batches(requests)
        primes, rows = self._batch(batch)
        state = self._start(primes.shape[0])
        for first in range(0, max(len(r.prime) + r.max_length for r in batch), STREAM_CHUNK):
            state, tokens = self._chunk(self.variables, state, np.int32(first), primes, rows)
            tokens = np.asarray(tokens)
            yield [
                self.vocab.decode(tokens[row, max(len(r.prime) - first, 0) :]) for row, r in enumerate(batch)
            ]
            if np.asarray(state[2]).all():
                return

    def warmup(self, batch_sizes: Sequence[int] = BATCH_BUCKETS) -> None:
        """Compile the programs of each batch size (one-shot and streaming) so no request waits for them."""
        for size in batch_sizes:
            self.generate([SampleRequest(max_length=1)] * size)
            next(self.stream([SampleRequest(max_length=1)] * size))
