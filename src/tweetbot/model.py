"""The character RNN: embedding -> `num_layers` recurrent layers -> linear head over the vocabulary.

Contract used by training, the sampler and the service:
    model = CharRNN(vocab_size, rnn_size, num_layers, cell)
    logits, carry = model.apply(variables, tokens[B, T], carry, train=False)
    carry = model.initial_carry(batch_size)   # zeros; a pytree, one entry per layer
Dropout follows char-rnn-tensorflow: `input_keep_prob` on each layer's input, `output_keep_prob` on each
layer's output, only when `train=True` (needs a "dropout" rng).
"""

from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

CELLS = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell, "rnn": nn.SimpleCell}


class CharRNN(nn.Module):
    vocab_size: int
    rnn_size: int = 128
    num_layers: int = 2
    cell: Literal["lstm", "gru", "rnn"] = "lstm"
    input_keep_prob: float = 1.0
    output_keep_prob: float = 1.0

    def initial_carry(self, batch_size: int):
        """Zero state for every layer: (c, h) for an LSTM, h for a GRU or a vanilla RNN."""
        zeros = jnp.zeros((batch_size, self.rnn_size), jnp.float32)
        layer = (zeros, zeros) if self.cell == "lstm" else zeros
        return tuple(layer for _ in range(self.num_layers))

    @nn.compact
    def __call__(self, tokens: jax.Array, carry, train: bool = False):
        x = nn.Embed(self.vocab_size, self.rnn_size, name="embed")(tokens)
        new_carry = []
        for layer in range(self.num_layers):
            x = nn.Dropout(1.0 - self.input_keep_prob, deterministic=not train)(x)
            rnn = nn.RNN(CELLS[self.cell](self.rnn_size), return_carry=True, name=f"rnn_{layer}")
            layer_carry, x = rnn(x, initial_carry=carry[layer])
            x = nn.Dropout(1.0 - self.output_keep_prob, deterministic=not train)(x)
            new_carry.append(layer_carry)
        logits = nn.Dense(self.vocab_size, name="head")(x)
        return logits.astype(jnp.float32), tuple(new_carry)
