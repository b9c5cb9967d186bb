"""The CharRNN contract: shapes, state carry, dropout semantics, and the hand-written LSTM gradient."""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tweetbot.runtime.bundle import model_config
from tweetbot.runtime.model import (
    CHARS_LEFT_BUCKETS,
    POSITION_STEP,
    CharRNN,
    chars_left_buckets,
    from_config,
    lstm,
    post_positions,
)
from tweetbot.runtime.vocab import EOS

VOCAB, BATCH, TIME = 11, 3, 7


def init(model: CharRNN, seed: int = 0):
    tokens = jnp.zeros((1, 1), jnp.int32)
    return jax.jit(model.init)(jax.random.key(seed), tokens, model.initial_carry(1))


def apply(model: CharRNN, *args, **kwargs):
    """`model.apply`, compiled: one XLA program per shape is much faster than op-by-op dispatch."""
    return _compiled(model)(*args, **kwargs)


@functools.cache
def _compiled(model: CharRNN):
    return jax.jit(model.apply, static_argnames="train")


def tokens(seed: int = 1, time: int = TIME):
    return jax.random.randint(jax.random.key(seed), (BATCH, time), 0, VOCAB)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_shapes_and_carry_structure(cell):
    model = CharRNN(VOCAB, rnn_size=8, num_layers=3, cell=cell)
    carry = model.initial_carry(BATCH)
    logits, new_carry = apply(model, init(model), tokens(), carry)
    assert logits.shape == (BATCH, TIME, VOCAB)
    assert logits.dtype == jnp.float32
    assert jax.tree.structure(new_carry) == jax.tree.structure(carry)
    assert [x.shape for x in jax.tree.leaves(new_carry)] == [(BATCH, 8)] * len(jax.tree.leaves(carry))
    assert len(carry) == 3


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_one_step_at_a_time_equals_the_whole_sequence(cell):
    """What the sampler relies on: T=1 calls with the carry passed on give the logits of one T-long call."""
    model = CharRNN(VOCAB, rnn_size=8, num_layers=2, cell=cell)
    variables, sequence = init(model), tokens()
    whole, whole_carry = apply(model, variables, sequence, model.initial_carry(BATCH))
    carry, steps = model.initial_carry(BATCH), []
    for t in range(TIME):
        logits, carry = apply(model, variables, sequence[:, t : t + 1], carry)
        steps.append(logits)
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), whole, rtol=1e-5, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), carry, whole_carry)


def test_a_position_counts_the_characters_since_the_last_eos_across_windows():
    window = jnp.array([[5, 6, EOS, 7, 8, EOS, 3], [1, 2, 3, 4, 5, 6, 7]])
    np.testing.assert_array_equal(
        post_positions(window, jnp.array([10, 0])), [[11, 12, 0, 1, 2, 0, 1], [1, 2, 3, 4, 5, 6, 7]]
    )


def position_model():
    """A model with position input whose position embedding is not the zeros it starts with."""
    model = CharRNN(VOCAB, rnn_size=8, num_layers=2, position_input=True)
    variables = init(model)
    embedding = variables["params"]["position"]["embedding"]
    variables["params"]["position"]["embedding"] = jax.random.normal(jax.random.key(3), embedding.shape)
    return model, variables


def test_with_position_input_one_step_at_a_time_still_equals_the_whole_sequence():
    model, variables = position_model()
    sequence = tokens(time=3 * POSITION_STEP).at[0, 5].set(EOS)  # a post ends in row 0, and positions restart
    whole, whole_carry = apply(model, variables, sequence, model.initial_carry(BATCH))
    carry, steps = model.initial_carry(BATCH), []
    for t in range(sequence.shape[1]):
        logits, carry = apply(model, variables, sequence[:, t : t + 1], carry)
        steps.append(logits)
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), whole, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(carry[-1], whole_carry[-1])
    np.testing.assert_array_equal(carry[-1], post_positions(sequence, jnp.zeros(BATCH, jnp.int32))[:, -1])


def test_the_position_changes_the_output():
    """The same text and state read later in a post give other logits: what lets a model end long posts."""
    model, variables = position_model()
    early, late = model.initial_carry(BATCH), model.initial_carry(BATCH)
    late = (*late[:-1], jnp.full(BATCH, 10 * POSITION_STEP, jnp.int32))
    sequence = jnp.full((BATCH, 1), 4)
    assert not np.allclose(apply(model, variables, sequence, early)[0], apply(model, variables, sequence, late)[0])


def length_model():
    """A model that reads the characters left, with an embedding of them that is not its starting zeros."""
    model = CharRNN(VOCAB, rnn_size=8, num_layers=2, length_quantiles=(3, 10, 40))
    variables = jax.jit(model.init_variables)(jax.random.key(0))
    embedding = variables["params"]["chars_left"]["embedding"]
    variables["params"]["chars_left"]["embedding"] = jax.random.normal(jax.random.key(3), embedding.shape)
    return model, variables


def test_a_model_that_reads_lengths_needs_them_and_they_change_the_output():
    model, variables = length_model()
    sequence, carry = tokens(), model.initial_carry(BATCH)
    with pytest.raises(ValueError, match="chars_left"):
        model.apply(variables, sequence, carry)
    few, _ = apply(model, variables, sequence, carry, chars_left=jnp.zeros_like(sequence))
    many, _ = apply(model, variables, sequence, carry, chars_left=jnp.full_like(sequence, 200))
    assert not np.allclose(few, many)
    left = jnp.arange(TIME)[::-1][None].repeat(BATCH, 0)
    whole, _ = apply(model, variables, sequence, carry, chars_left=left)
    steps = []
    for t in range(TIME):
        logits, carry = apply(model, variables, sequence[:, t : t + 1], carry, chars_left=left[:, t : t + 1])
        steps.append(logits)
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), whole, rtol=1e-5, atol=1e-5)


def test_chars_left_buckets_are_exact_near_the_end_then_coarse():
    left = jnp.array([0, 1, 15, 16, 31, 32, 300, 5000])
    np.testing.assert_array_equal(chars_left_buckets(left), [0, 1, 15, 16, 16, 17, 33, CHARS_LEFT_BUCKETS - 1])


def test_a_config_from_json_builds_the_same_model():
    model, _ = length_model()
    config = json.loads(json.dumps(model_config(model)))  # a checkpoint's or a bundle's: lists, not tuples
    assert from_config(config) == model and hash(from_config(config)) == hash(model)
    assert from_config({"vocab_size": VOCAB}) == CharRNN(VOCAB)  # a config from before length_quantiles


def test_carried_state_changes_the_output():
    model = CharRNN(VOCAB, rnn_size=8, num_layers=2)
    variables = init(model)
    _, carry = apply(model, variables, tokens(seed=5), model.initial_carry(BATCH))
    fresh, _ = apply(model, variables, tokens(), model.initial_carry(BATCH))
    carried, _ = apply(model, variables, tokens(), carry)
    assert not np.allclose(fresh, carried)


def test_dropout_only_while_training():
    model = CharRNN(VOCAB, rnn_size=16, num_layers=2, input_keep_prob=0.8, output_keep_prob=0.5)
    no_dropout = model.clone(input_keep_prob=1.0, output_keep_prob=1.0)
    variables, sequence, carry = init(model), tokens(), model.initial_carry(BATCH)

    def train(seed):
        rngs = {"dropout": jax.random.key(seed)}
        return apply(model, variables, sequence, carry, train=True, rngs=rngs)[0]

    evaluated = apply(model, variables, sequence, carry, train=False)[0]
    np.testing.assert_allclose(evaluated, apply(no_dropout, variables, sequence, carry)[0], rtol=1e-6)
    assert not np.allclose(train(0), evaluated)
    assert not np.allclose(train(0), train(1))
    np.testing.assert_array_equal(train(0), train(0))
    # Keep probabilities of 1 mean no dropout at all, even while training.
    plain_train = apply(no_dropout, variables, sequence, carry, train=True)[0]
    np.testing.assert_allclose(plain_train, evaluated, rtol=1e-6)


def test_lstm_backward_matches_autodiff():
    keys = jax.random.split(jax.random.key(0), 7)
    time, batch, inputs, hidden = 6, 3, 4, 5
    x = jax.random.normal(keys[0], (time, batch, inputs))
    w_x = jax.random.normal(keys[1], (inputs, 4 * hidden)) * 0.5
    w_h = jax.random.normal(keys[2], (hidden, 4 * hidden)) * 0.5
    b = jax.random.normal(keys[3], (4 * hidden,))
    carry = (jax.random.normal(keys[4], (batch, hidden)), jax.random.normal(keys[5], (batch, hidden)))
    weights = jax.random.normal(keys[6], (time, batch, hidden))

    def gradients(recurrence):
        def value(*args):
            (c, h), hs = recurrence(*args)
            return jnp.sum(hs * weights) + jnp.sum(c**2) + 3 * jnp.sum(h)

        return jax.grad(value, argnums=(0, 1, 2, 3, 4))(x, w_x, w_h, b, carry)

    hand_written, autodiff = gradients(lstm), gradients(lstm.fun)  # .fun: the same forward, no custom rule
    for mine, reference in zip(jax.tree.leaves(hand_written), jax.tree.leaves(autodiff), strict=True):
        assert jnp.linalg.norm(mine - reference) <= 1e-5 * jnp.linalg.norm(reference)  # relative error


def test_bfloat16_matmuls_stay_close_to_float32():
    model = CharRNN(VOCAB, rnn_size=32, num_layers=2)
    variables, sequence, carry = init(model), tokens(), model.initial_carry(BATCH)
    exact = apply(model, variables, sequence, carry)[0]
    rounded = apply(model.clone(matmul_dtype="bfloat16"), variables, sequence, carry)[0]
    assert rounded.dtype == jnp.float32
    np.testing.assert_allclose(rounded, exact, atol=0.05)
