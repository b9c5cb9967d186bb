"""The fused LSTM (tweetbot.kernels): the same numbers as the pure-JAX recurrence, forward and backward, and the
train step that uses it on a CPU."""

from __future__ import annotations

import platform

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tweetbot import kernels, train
from tweetbot.params import TrainParams
from tweetbot.runtime.model import CharRNN, lstm

BUILT_HERE = platform.system() == "Linux" and platform.machine() == "x86_64"  # where make install builds it
needs_kernel = pytest.mark.skipif(not kernels.available(), reason="fused kernel not built (make kernels)")


def relative_error(mine, reference) -> float:
    return float(jnp.linalg.norm(mine - reference) / jnp.linalg.norm(reference))


def layer_inputs(time, batch, inputs, hidden, seed=0):
    """Inputs at the scale of a real layer: lecun-normal input weights, orthogonal-scale recurrent ones."""
    keys = jax.random.split(jax.random.key(seed), 6)
    x = jax.random.normal(keys[0], (time, batch, inputs))
    w_x = jax.random.normal(keys[1], (inputs, 4 * hidden)) / np.sqrt(inputs)
    w_h = jax.random.normal(keys[2], (hidden, 4 * hidden)) / np.sqrt(hidden)
    b = jax.random.normal(keys[3], (4 * hidden,)) * 0.5
    carry = (jax.random.normal(keys[4], (batch, hidden)), jax.random.normal(keys[5], (batch, hidden)))
    return x, w_x, w_h, b, carry


def test_the_kernel_is_built_where_make_install_builds_it():
    if not BUILT_HERE:
        pytest.skip("make install builds the kernel on Linux x86_64 only")
    assert kernels.available(), "src/tweetbot/kernels/lstm_cpu.so missing or unloadable: run `make kernels`"


@needs_kernel
# (time, batch, inputs, hidden); the threads split a batch of 8 rows or more, 21 unevenly (10 and 11 rows)
@pytest.mark.parametrize("shape", [(6, 3, 4, 5), (64, 4, 48, 128), (9, 21, 10, 24), (1, 16, 8, 16)])
@pytest.mark.parametrize("entry", ["lstm", "lstm_projected"])
def test_values_and_gradients_match_autodiff_of_the_plain_recurrence(shape, entry):
    """lstm_projected takes the input projection x W_x + b from its caller, here as plain JAX."""
    args = layer_inputs(*shape)
    weights = jax.random.normal(jax.random.key(7), (shape[0], shape[1], shape[3]))

    def loss_and_grads(recurrence):
        def loss(*args):
            (c, h), hs = recurrence(*args)
            return jnp.sum(hs * weights) + jnp.sum(c**2) + 3 * jnp.sum(h)

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4)))(*args)

    def projected(x, w_x, w_h, b, carry):
        return kernels.lstm_projected(jnp.einsum("tbi,ig->tbg", x, w_x) + b, w_h, carry)

    fused = kernels.lstm if entry == "lstm" else projected
    (value, grads), (reference_value, reference_grads) = loss_and_grads(fused), loss_and_grads(lstm.fun)
    assert abs(value - reference_value) <= 1e-5 * abs(reference_value)
    for name, mine, reference in zip(["x", "w_x", "w_h", "b", "c0", "h0"], jax.tree.leaves(grads),
                                     jax.tree.leaves(reference_grads), strict=True):  # fmt: skip
        assert relative_error(mine, reference) <= 1e-5, name


@needs_kernel
@pytest.mark.parametrize(
    ("position_input", "first_layer_projected"),
    [(False, False), (False, True), (True, True)],  # with position_input the first layer reads two tables
)
def test_a_train_step_through_the_kernel_is_the_pure_jax_one(position_input, first_layer_projected):
    params = TrainParams(
        rnn_size=32, num_layers=2, matmul_dtype="float32", length_input=False, position_input=position_input
    )  # fmt: skip  (bfloat16: next test)
    model = train.build_model(params, vocab_size=20)
    assert kernels.lstm_recurrence(model) is kernels.lstm
    state = train.create_state(model, TrainParams(), seed=0)
    tokens = np.random.default_rng(0).integers(0, 20, (8, 17)).astype(np.int32)
    carry = model.initial_carry(8)
    fused = {"recurrence": kernels.lstm} | ({"projected": kernels.lstm_projected} if first_layer_projected else {})

    def step(extra):
        def loss(params):
            logits, _ = model.apply({"params": params}, tokens[:, :-1], carry, train=True, **extra)
            return train.cross_entropy(logits, tokens[:, 1:])

        return jax.jit(jax.value_and_grad(loss))(state.params)

    (fused_loss, fused_grads), (loss, grads) = step(fused), step({})
    np.testing.assert_allclose(fused_loss, loss, rtol=1e-6)
    for mine, reference in zip(jax.tree.leaves(fused_grads), jax.tree.leaves(grads), strict=True):
        assert relative_error(mine, reference) <= 1e-5


@needs_kernel
def test_a_bfloat16_model_takes_the_kernel_only_where_onednn_computes_bfloat16():
    """On a CPU without AVX-512 oneDNN has only its slow reference bfloat16 matmul: such a model trains the
    pure-JAX scan there."""
    assert kernels.computes("float32")
    model = train.build_model(TrainParams(rnn_size=256, num_layers=1, matmul_dtype="bfloat16", length_input=False), 20)
    assert kernels.lstm_recurrence(model) is (kernels.lstm if kernels.computes("bfloat16") else None)
    state = train.create_state(model, TrainParams(), seed=0)
    tokens = np.random.default_rng(0).integers(0, 20, (8, 17)).astype(np.int32)
    _, _, loss = train.make_train_step(model, seed=0)(state, model.initial_carry(8), tokens[:, :-1], tokens[:, 1:])
    assert np.isfinite(loss)


@needs_kernel
@pytest.mark.skipif(not kernels.computes("bfloat16"), reason="oneDNN has no fast bfloat16 matmul on this CPU")
def test_bfloat16_matmuls_are_as_close_to_float32_as_the_pure_jax_ones():
    """bf16 inputs are rounded as the pure-JAX recurrence rounds them; only the order of the sums differs."""
    args = layer_inputs(16, 20, 32, 64)  # 20 rows: split between the threads

    def grads(recurrence, dtype):
        def loss(*args):
            (c, h), hs = recurrence(*args, dtype)
            return jnp.sum(hs) + jnp.sum(c**2) + 3 * jnp.sum(h)

        return jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4)))(*args)

    exact = jax.tree.leaves(grads(lstm.fun, "float32"))
    rounded = jax.tree.leaves(grads(lstm.fun, "bfloat16"))
    fused = jax.tree.leaves(grads(kernels.lstm, "bfloat16"))
    for mine, pure, reference in zip(fused, rounded, exact, strict=True):
        assert relative_error(mine, reference) <= 2 * relative_error(pure, reference) + 1e-3


@needs_kernel
@pytest.mark.parametrize("fused", [True, False])
def test_training_takes_the_kernel_at_any_size_unless_told_not_to(fused):
    def calls_the_kernel(rnn_size):
        model = train.build_model(TrainParams(rnn_size=rnn_size, num_layers=1, length_input=False), 20)
        state, carry = train.create_state(model, TrainParams(), seed=0), model.initial_carry(2)
        tokens = np.zeros((2, 4), np.int32)
        step = train.make_train_step(model, seed=0, fused=fused)
        return "tweetbot_lstm_" in step.lower(state, carry, tokens, tokens).as_text()

    assert [calls_the_kernel(size) for size in (8, 128, 512)] == [fused] * 3


def test_other_cells_keep_the_pure_jax_recurrence():
    for cell in ("gru", "rnn"):
        assert kernels.lstm_recurrence(CharRNN(20, cell=cell)) is None


@needs_kernel
def test_the_same_inputs_give_the_same_bits():
    """Each thread's rows and the order of every sum are fixed, so a resumed run repeats the run it continues."""
    args = layer_inputs(12, 32, 16, 32)
    grads = jax.jit(jax.grad(lambda *a: jnp.sum(kernels.lstm(*a)[1] ** 2), argnums=(0, 1, 2, 3, 4)))
    first, second = jax.tree.leaves(grads(*args)), jax.tree.leaves(grads(*args))
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
