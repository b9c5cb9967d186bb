"""The character RNN: embedding -> `num_layers` recurrent layers -> linear head over the vocabulary.

Contract used by training, the sampler and the service:
    model = CharRNN(vocab_size, rnn_size, num_layers, cell)
    logits, carry = model.apply(variables, tokens[B, T], carry, train=False)
    carry = model.initial_carry(batch_size)   # zeros; a pytree, one entry per layer
Dropout follows char-rnn-tensorflow: `input_keep_prob` on each layer's input, `output_keep_prob` on each
layer's output, only when `train=True` (needs a "dropout" rng).

Why it is not `nn.RNN(OptimizedLSTMCell)`: on a CPU that runs at half the speed of PyTorch's `nn.LSTM`. Three
things make it fast (benchmarks/train_speed.py measures them):
- each layer's input projection `x @ W_x` is one matmul over the whole sequence, outside the time loop, so the
  loop holds only the small recurrent matmul `h @ W_h` and element-wise gate arithmetic;
- the LSTM recurrence has a hand-written backward pass (`jax.custom_vjp`): the reverse loop holds one matmul
  per step and the weight gradient `sum_t h_{t-1}^T dz_t` is one big matmul after it, where autodiff would
  accumulate it step by step inside the loop;
- the loops run time-major, so every step reads one contiguous [B, H] slab.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

Cell = Literal["lstm", "gru", "rnn"]
GATES = {"lstm": 4, "gru": 3, "rnn": 1}  # how many [H]-wide blocks the input projection has


class CharRNN(nn.Module):
    vocab_size: int
    rnn_size: int = 128
    num_layers: int = 2
    cell: Cell = "lstm"
    input_keep_prob: float = 1.0
    output_keep_prob: float = 1.0
    matmul_dtype: str = "float32"  # "bfloat16": matmul inputs rounded to bfloat16, sums and state in float32

    def initial_carry(self, batch_size: int):
        """Zero state for every layer: (c, h) for an LSTM, h for a GRU or a vanilla RNN."""
        zeros = jnp.zeros((batch_size, self.rnn_size), jnp.float32)
        layer = (zeros, zeros) if self.cell == "lstm" else zeros
        return tuple(layer for _ in range(self.num_layers))

    @nn.compact
    def __call__(self, tokens: jax.Array, carry, train: bool = False):
        hidden, gates = self.rnn_size, GATES[self.cell]
        dot = partial(mixed_dot_general, jnp.dtype(self.matmul_dtype))
        x = nn.Embed(self.vocab_size, hidden, name="embed")(tokens.T)  # time-major: [T, B, H]
        new_carry = []
        for layer in range(self.num_layers):
            x = nn.Dropout(1.0 - self.input_keep_prob, deterministic=not train)(x)
            # Biases live in the input projection (one add per sequence, not per step).
            x_proj = nn.Dense(gates * hidden, dot_general=dot, name=f"x_proj_{layer}")(x)
            w_h = self.param(f"w_h_{layer}", nn.initializers.orthogonal(), (hidden, gates * hidden))
            if self.cell == "lstm":
                layer_carry, x = lstm(x_proj, w_h, carry[layer], self.matmul_dtype)
            elif self.cell == "gru":
                b_hn = self.param(f"b_hn_{layer}", nn.initializers.zeros_init(), (hidden,))
                layer_carry, x = gru(x_proj, w_h, b_hn, carry[layer])
            else:
                layer_carry, x = simple_rnn(x_proj, w_h, carry[layer])
            x = nn.Dropout(1.0 - self.output_keep_prob, deterministic=not train)(x)
            new_carry.append(layer_carry)
        logits = nn.Dense(self.vocab_size, dot_general=dot, name="head")(x)
        return logits.swapaxes(0, 1), tuple(new_carry)


def mixed_dot_general(dtype, lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """`lax.dot_general` on inputs rounded to `dtype`, summed in their own precision (for nn.Dense)."""
    summed = jnp.result_type(lhs, rhs)
    return jax.lax.dot_general(
        lhs.astype(dtype), rhs.astype(dtype), dimension_numbers, preferred_element_type=summed
    )


def matmul(a, b, dtype):
    """`a @ b` on inputs rounded to `dtype`, summed in their own precision."""
    summed = jnp.result_type(a, b)
    return jnp.matmul(a.astype(dtype), b.astype(dtype), preferred_element_type=summed)


# The recurrences. Each takes the projected inputs [T, B, G*H] and the recurrent weights [H, G*H] and returns
# (final carry, outputs [T, B, H]).


def _lstm_gates(z):
    i, f, g, o = jnp.split(z, 4, axis=-1)
    return jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)


def _lstm_forward(x_proj, w_h, carry, dtype):
    def step(carry, z_x):
        c, h = carry
        i, f, g, o = _lstm_gates(z_x + matmul(h, w_h, dtype))
        c = f * c + i * g
        h = o * jnp.tanh(c)
        return (c, h), (h, c, jnp.concatenate([i, f, g, o], axis=-1))

    final, (hs, cs, acts) = jax.lax.scan(step, carry, x_proj)
    return final, hs, cs, acts


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def lstm(x_proj, w_h, carry, dtype="float32"):
    """LSTM over time: carry (c, h) each [B, H]; gates in order i, f, g, o, forget bias in x_proj."""
    final, hs, _, _ = _lstm_forward(x_proj, w_h, carry, dtype)
    return final, hs


def _lstm_fwd(x_proj, w_h, carry, dtype):
    final, hs, cs, acts = _lstm_forward(x_proj, w_h, carry, dtype)
    c0, h0 = carry
    c_prev = jnp.concatenate([c0[None], cs[:-1]])
    h_prev = jnp.concatenate([h0[None], hs[:-1]])
    return (final, hs), (w_h, c_prev, h_prev, cs, acts)


def _lstm_bwd(dtype, residuals, cotangents):
    w_h, c_prev, h_prev, cs, acts = residuals
    (dc_last, dh_last), dhs = cotangents
    w_h_t = w_h.T

    def step(carry, inputs):
        dc_next, dh_next = carry
        dh_out, c_before, c, act = inputs
        i, f, g, o = jnp.split(act, 4, axis=-1)
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

    (dc0, dh0), dz = jax.lax.scan(step, (dc_last, dh_last), (dhs, c_prev, cs, acts), reverse=True)
    # The weight gradient summed over every step as one matmul, outside the loop.
    dw_h = matmul(h_prev.reshape(-1, h_prev.shape[-1]).T, dz.reshape(-1, dz.shape[-1]), dtype)
    return dz, dw_h, (dc0, dh0)


lstm.defvjp(_lstm_fwd, _lstm_bwd)


def gru(x_proj, w_h, b_hn, h):
    """GRU over time (gates r, z, n as in flax.linen.GRUCell); autodiff is fast enough for this option."""

    def step(h, z_x):
        x_r, x_z, x_n = jnp.split(z_x, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(h @ w_h, 3, axis=-1)
        r = jax.nn.sigmoid(x_r + h_r)
        z = jax.nn.sigmoid(x_z + h_z)
        n = jnp.tanh(x_n + r * (h_n + b_hn))
        h = (1 - z) * n + z * h
        return h, h

    return jax.lax.scan(step, h, x_proj)


def simple_rnn(x_proj, w_h, h):
    """Vanilla tanh RNN over time."""

    def step(h, z_x):
        h = jnp.tanh(z_x + h @ w_h)
        return h, h

    return jax.lax.scan(step, h, x_proj)
