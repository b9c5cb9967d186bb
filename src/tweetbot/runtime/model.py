"""The character RNN: embedding -> `num_layers` recurrent layers -> linear head over the vocabulary.

Contract used by training, the sampler and the service:
    model = CharRNN(vocab_size, rnn_size, num_layers, cell)
    logits, carry = model.apply(variables, tokens[B, T], carry, train=False)   # + chars_left=[B, T]: below
    carry = model.initial_carry(batch_size)   # zeros; a pytree, one entry per layer (and the position)
    model = from_config(config)               # the model a checkpoint's or a bundle's config describes
`recurrence=` (optional) runs each layer through another function with the contract of RECURRENCES below: training
on a CPU passes the fused LSTM kernel of tweetbot.kernels (pipeline side; the runtime never imports it).
Dropout follows char-rnn-tensorflow: `input_keep_prob` on each layer's input, `output_keep_prob` on each
layer's output, only when `train=True` (needs a "dropout" rng).

With `position_input` the first layer's input also holds an embedding of where the character stands in its post
(characters since the last EOS, in buckets of POSITION_STEP): a window of truncated BPTT is shorter than a post,
so without it the model has to count to 250 in its state to know when a post is long enough to end, and samples
ran on to the length cap. The position is then part of the carry, after the layers'.

With `length_quantiles` (the training posts' lengths, a table of quantiles) the first layer also reads how many
characters are left to write before the post ends, `chars_left` [B, T] (0: the next token is EOS): the model is
told how long a post it writes. Training reads it off the data (input_pipeline.chars_left); the sampler draws each
sample's length from the table, so samples are as long as the account's posts and end by themselves.

Why the LSTM is not `nn.RNN(OptimizedLSTMCell)`: it has a hand-written backward pass (`jax.custom_vjp`). The
reverse loop then holds one matmul per step, `dz_t @ W_h^T`, and the weight and input gradients are each one
big matmul over the whole sequence after the loop, where autodiff computes them step by step inside it.
The forward loop keeps the input projection `x_t @ W_x` inside: on XLA's CPU backend, reading a precomputed
[T, B, 4H] projection slab step by step measured slower than the extra small matmul per step.
benchmarks/train_speed.py measures the result against PyTorch's nn.LSTM.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from tweetbot.runtime.vocab import EOS

Cell = Literal["lstm", "gru", "rnn"]
GATES = {"lstm": 4, "gru": 3, "rnn": 1}  # how many [H]-wide blocks the input projection has
POSITION_STEP = 8  # characters per position bucket
POSITION_BUCKETS = 40  # positions 0..319 each have a bucket; later ones share the last
EXACT_CHARS_LEFT = 16  # each of 0..15 characters left has a bucket of its own: a post's last word is planned
CHARS_LEFT_STEP = 16  # then buckets of 16 characters
CHARS_LEFT_BUCKETS = 37  # 16 exact, 21 of 16 characters: up to 351 left; more share the last


class CharRNN(nn.Module):
    vocab_size: int
    rnn_size: int = 128
    num_layers: int = 2
    cell: Cell = "lstm"
    input_keep_prob: float = 1.0
    output_keep_prob: float = 1.0
    matmul_dtype: str = "float32"  # "bfloat16": matmul inputs rounded to bfloat16, sums and state in float32
    position_input: bool = False  # False for models from before it existed
    length_quantiles: tuple[int, ...] = ()  # quantiles of the training posts' lengths; (): no length input

    @property
    def reads_length(self) -> bool:
        """Whether the model reads `chars_left`."""
        return bool(self.length_quantiles)

    def initial_carry(self, batch_size: int):
        """Zero state for every layer: (c, h) for an LSTM, h for a GRU or a vanilla RNN; then, with
        `position_input`, the position [B] of the last character read (0: at the start of a post)."""
        zeros = jnp.zeros((batch_size, self.rnn_size), jnp.float32)
        layer = (zeros, zeros) if self.cell == "lstm" else zeros
        position = (jnp.zeros((batch_size,), jnp.int32),) if self.position_input else ()
        return tuple(layer for _ in range(self.num_layers)) + position

    def init_variables(self, key: jax.Array) -> dict:
        """Fresh variables (`model.init` on a one-token batch)."""
        tokens = jnp.zeros((1, 1), jnp.int32)
        chars_left = {"chars_left": tokens} if self.reads_length else {}
        return self.init(key, tokens, self.initial_carry(1), **chars_left)

    @nn.compact
    def __call__(self, tokens: jax.Array, carry, train: bool = False, recurrence=None, chars_left=None, projected=None):
        hidden, width = self.rnn_size, GATES[self.cell] * self.rnn_size
        recurrence = recurrence or RECURRENCES[self.cell]
        # The first layer's input: the sum of rows of embedding tables, time-major [T, B] indices each.
        inputs = [(nn.Embed(self.vocab_size, hidden, name="embed"), tokens.T)]
        new_carry = []
        if self.position_input:
            positions = post_positions(tokens, carry[self.num_layers])
            buckets = jnp.minimum(positions // POSITION_STEP, POSITION_BUCKETS - 1)
            # Zeros at first: a fresh model starts as one without it, and fine-tunes a checkpoint without it.
            position = nn.Embed(POSITION_BUCKETS, hidden, embedding_init=nn.initializers.zeros, name="position")
            inputs.append((position, buckets.T))
        if self.reads_length:
            if chars_left is None:
                raise ValueError("this model reads how many characters are left (length_quantiles): pass chars_left")
            left = nn.Embed(CHARS_LEFT_BUCKETS, hidden, embedding_init=nn.initializers.zeros, name="chars_left")
            inputs.append((left, chars_left_buckets(chars_left).T))
        # `projected` (training on a CPU: tweetbot.kernels.lstm_projected) runs the first layer over its input
        # projection made from the tables: each table times W_x, then its rows gathered and summed, in place of
        # a [T*B, H] x [H, 4H] matmul (and two more in the backward). Input dropout would come between the
        # lookup and the matmul, so with it the first layer takes the plain path.
        fold = projected is not None and (self.input_keep_prob == 1.0 or not train)
        x = None if fold else sum(table(rows) for table, rows in inputs)  # [T, B, H]
        for layer in range(self.num_layers):
            w_x = self.param(f"w_x_{layer}", nn.initializers.lecun_normal(), (hidden, width))
            w_h = self.param(f"w_h_{layer}", nn.initializers.orthogonal(), (hidden, width))
            b = self.param(f"b_{layer}", _bias_init(self.cell), (width,))
            if layer == 0 and fold:
                z = b + sum(jnp.take(matmul(table.embedding, w_x, self.matmul_dtype), rows, axis=0)
                            for table, rows in inputs)  # fmt: skip
                layer_carry, x = projected(z, w_h, carry[layer], self.matmul_dtype)
            else:
                x = nn.Dropout(1.0 - self.input_keep_prob, deterministic=not train)(x)
                layer_carry, x = recurrence(x, w_x, w_h, b, carry[layer], self.matmul_dtype)
            x = nn.Dropout(1.0 - self.output_keep_prob, deterministic=not train)(x)
            new_carry.append(layer_carry)
        dot = partial(mixed_dot_general, jnp.dtype(self.matmul_dtype))
        logits = nn.Dense(self.vocab_size, dot_general=dot, name="head")(x)
        if self.position_input:
            new_carry.append(positions[:, -1])
        return logits.swapaxes(0, 1), tuple(new_carry)


def post_positions(tokens: jax.Array, start: jax.Array) -> jax.Array:
    """The position in its post of each token [B, T]: 0 for an EOS, one more for each character after it;
    `start` [B] is the position of the token before the window."""
    t = jnp.arange(tokens.shape[1])
    last_eos = jax.lax.cummax(jnp.where(tokens == EOS, t, -1), axis=1)
    return jnp.where(last_eos >= 0, t - last_eos, start[:, None] + t + 1)


def chars_left_buckets(chars_left: jax.Array) -> jax.Array:
    """The embedding row of each count of characters left: exact below EXACT_CHARS_LEFT, then coarser."""
    coarse = EXACT_CHARS_LEFT + (chars_left - EXACT_CHARS_LEFT) // CHARS_LEFT_STEP
    return jnp.clip(jnp.where(chars_left < EXACT_CHARS_LEFT, chars_left, coarse), 0, CHARS_LEFT_BUCKETS - 1)


def model_config(model: CharRNN) -> dict:
    """The constructor arguments of `model`, enough to build it again (`from_config`), as JSON has them."""
    config = {f.name: getattr(model, f.name) for f in dataclasses.fields(model) if f.name not in ("parent", "name")}
    return {name: list(value) if isinstance(value, tuple) else value for name, value in config.items()}


def from_config(config: dict) -> CharRNN:
    """The model a config of `CharRNN`'s fields describes (JSON's lists back to the tuples a module hashes)."""
    return CharRNN(**{**config, "length_quantiles": tuple(config.get("length_quantiles", ()))})


def _bias_init(cell: Cell):
    """Zeros, but an LSTM's forget gate starts at 1 so it remembers from the start (Jozefowicz et al. 2015)."""

    def init(key, shape, dtype=jnp.float32):
        bias = jnp.zeros(shape, dtype)
        if cell == "lstm":
            hidden = shape[0] // 4
            bias = bias.at[hidden : 2 * hidden].set(1.0)
        return bias

    return init


def mixed_dot_general(dtype, lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """`lax.dot_general` on inputs rounded to `dtype`, summed in their own precision (for nn.Dense)."""
    summed = jnp.result_type(lhs, rhs)
    return jax.lax.dot_general(lhs.astype(dtype), rhs.astype(dtype), dimension_numbers, preferred_element_type=summed)


def matmul(a, b, dtype):
    """`a @ b` on inputs rounded to `dtype`, summed in their own precision."""
    summed = jnp.result_type(a, b)
    return jnp.matmul(a.astype(dtype), b.astype(dtype), preferred_element_type=summed)


# The recurrences: (inputs [T, B, H_in], W_x [H_in, G*H], W_h [H, G*H], bias [G*H], carry, matmul dtype)
# -> (final carry, outputs [T, B, H]).


def _lstm_gates(z):
    i, f, g, o = jnp.split(z, 4, axis=-1)
    return jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)


def _lstm_step(weights, dtype, carry, x_t):
    """One time step; also returns the gate pre-activations z, all the backward pass needs besides c."""
    w_x, w_h, b = weights
    c, h = carry
    z = matmul(x_t, w_x, dtype) + matmul(h, w_h, dtype) + b
    i, f, g, o = _lstm_gates(z)
    c = f * c + i * g
    return (c, o * jnp.tanh(c)), z


@partial(jax.custom_vjp, nondiff_argnums=(5,))
def lstm(x, w_x, w_h, b, carry, dtype="float32"):
    """LSTM over time: carry (c, h) each [B, H]; gates in the order i, f, g, o."""

    def step(carry, x_t):
        carry, _ = _lstm_step((w_x, w_h, b), dtype, carry, x_t)
        return carry, carry[1]

    return jax.lax.scan(step, carry, x)


def _lstm_fwd(x, w_x, w_h, b, carry, dtype):
    def step(carry, x_t):
        carry, z = _lstm_step((w_x, w_h, b), dtype, carry, x_t)
        return carry, (*carry, z)

    final, (cs, hs, zs) = jax.lax.scan(step, carry, x)
    return (final, hs), (x, w_x, w_h, carry, cs, hs, zs)


def _lstm_bwd(dtype, residuals, cotangents):
    x, w_x, w_h, (c0, h0), cs, hs, zs = residuals
    (dc_last, dh_last), dhs = cotangents
    c_prev = jnp.concatenate([c0[None], cs[:-1]])
    w_h_t = w_h.T

    def step(carry, inputs):
        dc_next, dh_next = carry
        dh_out, c_before, c, z = inputs
        i, f, g, o = _lstm_gates(z)
        dh = dh_out + dh_next
        tanh_c = jnp.tanh(c)
        dc = dc_next + dh * o * (1 - tanh_c * tanh_c)
        dz = jnp.concatenate(
            [
                dc * g * i * (1 - i),
                dc * c_before * f * (1 - f),
                dc * i * (1 - g * g),
                dh * tanh_c * o * (1 - o),
            ],
            axis=-1,
        )
        return (dc * f, matmul(dz, w_h_t, dtype)), dz

    (dc0, dh0), dz = jax.lax.scan(step, (dc_last, dh_last), (dhs, c_prev, cs, zs), reverse=True)
    # Everything else summed over the whole sequence: one matmul each, outside the loop.
    h_prev = jnp.concatenate([h0[None], hs[:-1]])
    flat_dz = dz.reshape(-1, dz.shape[-1])
    dw_h = matmul(h_prev.reshape(-1, h_prev.shape[-1]).T, flat_dz, dtype)
    dw_x = matmul(x.reshape(-1, x.shape[-1]).T, flat_dz, dtype)
    dx = matmul(dz, w_x.T, dtype)
    return dx, dw_x, dw_h, flat_dz.sum(axis=0), (dc0, dh0)


lstm.defvjp(_lstm_fwd, _lstm_bwd)


def gru(x, w_x, w_h, b, h, dtype="float32"):
    """GRU over time (gates r, z, n as in flax.linen.GRUCell, with the n-gate's bias on the input side);
    autodiff is fast enough for this option."""

    def step(h, x_t):
        x_r, x_z, x_n = jnp.split(matmul(x_t, w_x, dtype) + b, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(matmul(h, w_h, dtype), 3, axis=-1)
        r = jax.nn.sigmoid(x_r + h_r)
        z = jax.nn.sigmoid(x_z + h_z)
        n = jnp.tanh(x_n + r * h_n)
        h = (1 - z) * n + z * h
        return h, h

    return jax.lax.scan(step, h, x)


def simple_rnn(x, w_x, w_h, b, h, dtype="float32"):
    """Vanilla tanh RNN over time."""

    def step(h, x_t):
        h = jnp.tanh(matmul(x_t, w_x, dtype) + matmul(h, w_h, dtype) + b)
        return h, h

    return jax.lax.scan(step, h, x)


RECURRENCES = {"lstm": lstm, "gru": gru, "rnn": simple_rnn}
