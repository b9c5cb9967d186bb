"""The compiled, batched sampler: many requests, each with its own settings, generated in one compiled program.

A row reads `EOS, prime..., sample...`, as training reads posts (each after an EOS), and counts its own steps: at
its step t it draws from the uniform number `fold_in(key(seed), t)`. So a text depends only on its request, never
on its batch-mates or on when it joined them: alone, batched, streamed or in the service's slots, it is the same.
Compiled shapes depend only on the batch size, padded to a power of two, so each size compiles once (`warmup`):
the chunk program advances every row STREAM_CHUNK steps, and the one-shot program repeats it until every row has
ended, so a batch of short posts stops early and no length needs a program of its own.

A model that reads how long its post is (CharRNN.length_quantiles) writes, for each row, a post of a length drawn
from its training posts' lengths (`post_length`: from the row's seed, longer than its prime, at most its prime and
`max_length`), and is told at each step how many characters are left; it ends the post by itself.

Every row starts from the bundle's start state (`start_carry`: the state after reading real posts, export's
`start_carry`), not from zeros: training rarely sees a zero state (only at an epoch's start; every other post
follows another), and from zeros a model wrote garbled first words ("Asteres", "ISpace"), 2 points of real words.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from tweetbot.runtime.errors import UserError
from tweetbot.runtime.sampling import TEMPERATURE, TOP_P
from tweetbot.runtime.vocab import EOS, UNK, Vocab

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
    temperature: float = TEMPERATURE
    top_k: int = 0  # 0: no top-k cut
    top_p: float = TOP_P  # 1.0: no nucleus cut
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
    Each cut is a threshold, the smallest logit that passes its test, found by bisection (`lowest_passing`)
    rather than by sorting: XLA sorts on a CPU through a comparator call per pair, which cost a batch of 64 more
    than its model step, while a bisection step is one fused pass over [B, V].
    """
    key = ordered_int(logits)
    vocab_size = logits.shape[-1]
    k = jnp.where(top_k > 0, jnp.minimum(top_k, vocab_size), vocab_size)[:, None]  # a k past V keeps all

    def kth_largest() -> jax.Array:  # fewer than k logits lie above it
        return lowest_passing(key, lambda v: jnp.sum(key > v, axis=-1, keepdims=True) < k)

    top_k_cut = jax.lax.cond(jnp.any(top_k > 0), kth_largest, lambda: key.min(axis=-1, keepdims=True))
    weights = jnp.where(key >= top_k_cut, jnp.exp(logits - logits.max(axis=-1, keepdims=True)), 0)  # unnormalised
    needed = top_p[:, None] * weights.sum(axis=-1, keepdims=True)

    def weight_above(v: jax.Array) -> jax.Array:
        return jnp.sum(jnp.where(key > v, weights, 0), axis=-1, keepdims=True)

    # The nucleus holds each logit whose larger ones weigh less than `needed`: it needs them to reach it.
    nucleus_cut = lowest_passing(key, lambda v: weight_above(v) < needed)
    return jnp.where(key >= nucleus_cut, logits, -jnp.inf)  # past both cuts: a weight of 0 lies below them


def ordered_int(x: jax.Array) -> jax.Array:
    """float32 -> int32 in the same order (-inf lowest): the sign bit's flip for negatives, as radix sorts do."""
    bits = jax.lax.bitcast_convert_type(x, jnp.int32)
    return jnp.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


def lowest_passing(key: jax.Array, passes: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """Each row's smallest v [B, 1] with `passes(v)`, for a test that fails below the row's smallest key and, once
    true, stays true up to its largest: 32 halvings of the int32 range, so exact; the answer is one of the keys
    when the test changes only at a key, as counting or summing what lies above v does."""
    low = key.min(axis=-1, keepdims=True) - 1  # fails (the test is false)
    high = key.max(axis=-1, keepdims=True)  # passes

    def halve(_, bounds):
        low, high = bounds
        middle = (low >> 1) + (high >> 1) + (low & high & 1)  # floor((low + high) / 2) with no int32 overflow
        passed = passes(middle)
        return jnp.where(passed, low, middle), jnp.where(passed, middle, high)

    return jax.lax.fori_loop(0, 32, halve, (low, high))[1]


@dataclass(frozen=True)
class Rows:
    """Each row's settings [B] and its prime [B, PRIME_BUCKET] (ids from column 0; the rest is never read);
    `length`: the characters of the post it writes, prime included (read by a model that reads lengths)."""

    prime: jax.Array
    prime_len: jax.Array
    max_length: jax.Array
    temperature: jax.Array
    top_k: jax.Array
    top_p: jax.Array
    seed: jax.Array
    length: jax.Array


@dataclass(frozen=True)
class State:
    """Where each row is: the recurrent carry, the token it feeds next, its step `t` and whether it ended."""

    carry: tuple
    token: jax.Array
    t: jax.Array
    finished: jax.Array


jax.tree_util.register_dataclass(
    Rows,
    data_fields=["prime", "prime_len", "max_length", "temperature", "top_k", "top_p", "seed", "length"],
    meta_fields=[],
)
jax.tree_util.register_dataclass(State, data_fields=["carry", "token", "t", "finished"], meta_fields=[])


def uniforms(seed: jax.Array, steps: jax.Array) -> jax.Array:
    """The uniform number of each row at each of its steps: `fold_in(key(seed[r]), steps[r, i])`, [B, S].

    Computed for a whole chunk at once: on a CPU one batched hash is much cheaper than one per step.
    """

    def one(seed, step):
        return jax.random.uniform(jax.random.fold_in(jax.random.key(seed), step))

    return jax.vmap(jax.vmap(one, in_axes=(None, 0)))(seed, steps)


def draw(logits: jax.Array, uniform: jax.Array, rows: Rows) -> jax.Array:
    """Each row's next token from its logits [B, V] and its uniform number [B]: the likeliest below GREEDY_BELOW,
    else the logits over the temperature, cut to `top_k` then `top_p`, and a token drawn by inverse CDF.

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
    drawn = jnp.sum(cumulative <= uniform[:, None] * cumulative[:, -1:], axis=-1)
    # Rounding can push the draw past the end or onto a token of weight 0: then take the likeliest.
    possible = jnp.take_along_axis(weights, jnp.minimum(drawn, vocab_size - 1)[:, None], axis=-1)[:, 0] > 0
    drawn = jnp.where(possible & (drawn < vocab_size), drawn, greedy)
    return jnp.where(rows.temperature < GREEDY_BELOW, greedy, drawn).astype(jnp.int32)


def post_length(quantiles: Sequence[int], request: SampleRequest) -> int:
    """The length, prime included, of the post a model with these length quantiles writes for `request`: drawn from
    the seed, by inverse CDF of the quantiles, among the lengths longer than the prime (a prime of 100 characters
    asks for a post of more than 100), then capped at the prime and `max_length`."""
    levels = np.linspace(0, 1, len(quantiles))
    shortest = float(np.interp(len(request.prime), quantiles, levels, right=1.0))  # the share no longer than the prime
    uniform = np.random.default_rng([request.seed, 0x1E57]).random()  # the row's own draw, not its step numbers'
    length = round(float(np.interp(shortest + uniform * (1 - shortest), levels, quantiles)))
    return min(max(length, len(request.prime) + 1), len(request.prime) + request.max_length)


def first_max(x: jax.Array) -> jax.Array:
    """`jnp.argmax(x, axis=-1)` (the first index of the largest value), as two plain reductions."""
    index = jnp.arange(x.shape[-1])
    return jnp.min(jnp.where(x == x.max(axis=-1, keepdims=True), index, x.shape[-1]), axis=-1)


class Sampler:
    """Generates text for batches of `SampleRequest`s with a model and its variables.

    `generate` and `stream` answer requests; `start_state`, `rows`, `advance` and `written` are the chunk program
    one call at a time, for a caller that keeps rows of its own (the service's slots, service/engine.py).
    """

    def __init__(self, model, variables, vocab: Vocab, start_carry=None):
        if model.vocab_size != len(vocab):
            raise UserError(
                f"the model has {model.vocab_size} symbols but the vocabulary {len(vocab)}:"
                " use the vocabulary the model was trained with"
            )
        self.model = model
        self.variables = variables
        self.vocab = vocab
        self._generate = jax.jit(self._generate_batch)
        self._chunk = jax.jit(self._run_chunk)
        # One row's start state in numpy, so a row's start costs no device call (zeros without a start state).
        zeros = jax.tree.map(lambda row: np.zeros(row.shape, row.dtype), jax.eval_shape(lambda: model.initial_carry(1)))
        self._start_row = zeros if start_carry is None else jax.tree.map(np.asarray, start_carry)
        if jax.tree.map(np.shape, self._start_row) != jax.tree.map(np.shape, zeros):
            raise UserError("the start state does not fit the model: re-export the bundle")

    # --- the compiled parts -------------------------------------------------------------------------------

    def _run_chunk(self, variables, state: State, rows: Rows):
        """Advance every row STREAM_CHUNK steps from its own step; return the new state and the tokens [B, C]."""
        steps = state.t[:, None] + jnp.arange(STREAM_CHUNK, dtype=jnp.int32)

        def step(state: State, uniform):
            chars_left = jnp.maximum(rows.length - state.t, 0)[:, None] if self.model.reads_length else None
            logits, carry = self.model.apply(
                variables, state.token[:, None], state.carry, train=False, chars_left=chars_left
            )
            sampled = draw(logits[:, 0], uniform, rows)
            in_prime = state.t < rows.prime_len
            drew_eos = ~in_prime & (sampled == EOS)
            prime_next = jnp.take_along_axis(rows.prime, jnp.minimum(state.t, PRIME_BUCKET - 1)[:, None], 1)
            token = jnp.where(state.finished | drew_eos, EOS, jnp.where(in_prime, prime_next[:, 0], sampled))
            wrote_the_last = state.t - rows.prime_len + 1 >= rows.max_length  # so it ends now, not a step later
            finished = state.finished | drew_eos | wrote_the_last
            return State(carry, token, state.t + 1, finished), token

        state, tokens = jax.lax.scan(step, state, uniforms(rows.seed, steps).T)
        return state, tokens.T

    def _generate_batch(self, variables, start: State, rows: Rows):
        """Run chunks until every row has finished; return the tokens [B, MAX_STEPS] (EOS after the end)."""

        def unfinished(loop):
            state, _ = loop
            return ~jnp.all(state.finished)  # a row finishes by its `prime + max_length` steps at the latest

        def next_chunk(loop):
            state, tokens = loop
            first = state.t[0]  # every row started together
            state, written = self._run_chunk(variables, state, rows)
            return state, jax.lax.dynamic_update_slice_in_dim(tokens, written, first, 1)

        tokens = jnp.full((rows.prime.shape[0], MAX_STEPS), EOS, jnp.int32)
        return jax.lax.while_loop(unfinished, next_chunk, (start, tokens))[1]

    # --- the host side ------------------------------------------------------------------------------------

    def start_state(self, batch_size: int) -> State:
        """Rows about to start: the start state, first input EOS, step 0 (host arrays, so slots can be set)."""
        carry = jax.tree.map(lambda row: np.repeat(row, batch_size, axis=0), self._start_row)
        tokens, steps = np.full(batch_size, EOS, np.int32), np.zeros(batch_size, np.int32)
        return State(carry, tokens, steps, np.zeros(batch_size, bool))

    def rows(self, requests: Sequence[SampleRequest], size: int | None = None) -> Rows:
        """The settings of `requests` as host arrays, padded to `size` rows (default: their batch bucket)."""
        size = size or bucket(len(requests), BATCH_BUCKETS)
        padded = list(requests) + [SampleRequest(max_length=1)] * (size - len(requests))
        prime = np.full((size, PRIME_BUCKET), EOS, np.int32)
        for row, request in enumerate(padded):
            prime[row, : len(request.prime)] = self.vocab.encode(request.prime)
        return Rows(
            prime=prime,
            prime_len=np.array([len(r.prime) for r in padded], np.int32),
            max_length=np.array([r.max_length for r in padded], np.int32),
            temperature=np.array([r.temperature for r in padded], np.float32),
            top_k=np.array([r.top_k for r in padded], np.int32),
            top_p=np.array([r.top_p for r in padded], np.float32),
            seed=np.array([r.seed for r in padded], np.uint32),
            length=np.array([self._post_length(r) for r in padded], np.int32),
        )

    def _post_length(self, request: SampleRequest) -> int:
        if not self.model.reads_length:
            return len(request.prime) + request.max_length  # unread: the model decides
        return post_length(self.model.length_quantiles, request)

    def advance(self, state: State, rows: Rows) -> tuple[State, np.ndarray]:
        """One call of the chunk program: every row STREAM_CHUNK steps on; the new state and tokens [B, C]."""
        state, tokens = self._chunk(self.variables, state, rows)
        return jax.tree.map(np.asarray, state), np.asarray(tokens)

    def written(self, state: State, rows: Rows, tokens: np.ndarray) -> list[str]:
        """The text each row wrote in the chunk `advance` just ran: what came after its prime, up to its end."""
        prime_left = np.maximum(rows.prime_len - (state.t - STREAM_CHUNK), 0)  # the chunk's prime steps
        return [self.vocab.decode(tokens[row, skip:]) for row, skip in enumerate(prime_left)]

    def generate(self, requests: Sequence[SampleRequest]) -> list[str]:
        """The text of each request (without its prime), in order; more than 64 run as several batches."""
        for request in requests:
            check(request, self.vocab)
        texts = []
        for start in range(0, len(requests), BATCH_BUCKETS[-1]):
            batch = requests[start : start + BATCH_BUCKETS[-1]]
            rows = self.rows(batch)
            tokens = np.asarray(self._generate(self.variables, self.start_state(len(rows.seed)), rows))
            texts += [self.vocab.decode(tokens[row, len(r.prime) :]) for row, r in enumerate(batch)]
        return texts

    def stream(self, requests: Sequence[SampleRequest]) -> Iterator[list[str]]:
        """Yield, every `STREAM_CHUNK` steps, the new text of each request; joined, they equal `generate`.

        Up to 64 requests (one batch); stops as soon as every row has finished.
        """
        if len(requests) > BATCH_BUCKETS[-1]:
            raise UserError(f"stream at most {BATCH_BUCKETS[-1]} requests at once, not {len(requests)}")
        for request in requests:
            check(request, self.vocab)
        rows = self.rows(requests)
        state = self.start_state(len(rows.seed))
        while not state.finished[: len(requests)].all():
            state, tokens = self.advance(state, rows)
            yield self.written(state, rows, tokens)[: len(requests)]

    def warmup(self, batch_sizes: Sequence[int] = BATCH_BUCKETS, *, one_shot: bool = True) -> None:
        """Compile, without running them, the chunk program (`stream`, `advance`) of each batch size and, with
        `one_shot`, the one-shot program (`generate`), so no request waits for a compiler."""
        for size in batch_sizes:
            state, rows = self.start_state(size), self.rows([], size)
            self._chunk.lower(self.variables, state, rows).compile()
            if one_shot:
                self._generate.lower(self.variables, state, rows).compile()
