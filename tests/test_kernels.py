"""The fused oneDNN LSTM (tweetbot.kernels): the same numbers as the pure-JAX recurrence, forward and backward,
and the train step that uses it on a CPU."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

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
    assert kernels.available(), "src/tweetbot/kernels/lstm_onednn.so missing or unloadable: run `make kernels`"


@needs_kernel
@pytest.mark.parametrize("shape", [(6, 3, 4, 5), (64, 4, 48, 128)])
def test_values_and_gradients_match_autodiff_of_the_plain_recurrence(shape):
    args = layer_inputs(*shape)
    weights = jax.random.normal(jax.random.key(7), (shape[0], shape[1], shape[3]))

    def loss_and_grads(recurrence):
        def loss(*args):
            (c, h), hs = recurrence(*args)
            return jnp.sum(hs * weights) + jnp.sum(c**2) + 3 * jnp.sum(h)

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4)))(*args)

    (value, grads), (reference_value, reference_grads) = loss_and_grads(kernels.lstm), loss_and_grads(lstm.fun)
    assert abs(value - reference_value) <= 1e-5 * abs(reference_value)
    for name, mine, reference in zip(["x", "w_x", "w_h", "b", "c0", "h0"], jax.tree.leaves(grads),
                                     jax.tree.leaves(reference_grads), strict=True):  # fmt: skip
        assert relative_error(mine, reference) <= 1e-5, name


@needs_kernel
def test_a_train_step_through_the_kernel_is_the_pure_jax_one():
    params = TrainParams(rnn_size=32, num_layers=2, matmul_dtype="float32", length_input=False)  # bfloat16: next test
    model = train.build_model(params, vocab_size=20)
    assert kernels.lstm_recurrence(model, any_size=True) is kernels.lstm
    state = train.create_state(model, TrainParams(), seed=0)
    tokens = np.random.default_rng(0).integers(0, 20, (8, 17)).astype(np.int32)
    carry = model.initial_carry(8)

    def step(recurrence):
        def loss(params):
            logits, _ = model.apply({"params": params}, tokens[:, :-1], carry, train=True, recurrence=recurrence)
            return train.cross_entropy(logits, tokens[:, 1:])

        return jax.jit(jax.value_and_grad(loss))(state.params)

    (fused_loss, fused_grads), (loss, grads) = step(kernels.lstm), step(None)
    np.testing.assert_allclose(fused_loss, loss, rtol=1e-6)
    for mine, reference in zip(jax.tree.leaves(fused_grads), jax.tree.leaves(grads), strict=True):
        assert relative_error(mine, reference) <= 1e-5


@needs_kernel
def test_a_bfloat16_model_takes_the_kernel_only_where_onednn_computes_bfloat16():
    """On a CPU without AVX-512 oneDNN refuses a bfloat16 LSTM: such a model trains the pure-JAX scan there."""
    assert kernels.computes("float32")
    model = train.build_model(TrainParams(rnn_size=256, num_layers=1, matmul_dtype="bfloat16", length_input=False), 20)
    assert kernels.lstm_recurrence(model) is (kernels.lstm if kernels.computes("bfloat16") else None)
    state = train.create_state(model, TrainParams(), seed=0)
    tokens = np.random.default_rng(0).integers(0, 20, (8, 17)).astype(np.int32)
    _, _, loss = train.make_train_step(model, seed=0)(state, model.initial_carry(8), tokens[:, :-1], tokens[:, 1:])
    assert np.isfinite(loss)


@needs_kernel
@pytest.mark.skipif(not kernels.computes("bfloat16"), reason="oneDNN has no bfloat16 LSTM on this CPU")
def test_bfloat16_matmuls_are_as_close_to_float32_as_the_pure_jax_ones():
    """bf16 inputs are rounded as the pure-JAX recurrence rounds them; only the order of the sums differs."""
    args = layer_inputs(16, 8, 32, 64)

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
@pytest.mark.parametrize("fused", [None, True, False])
def test_training_takes_the_kernel_from_the_size_where_it_is_the_faster(fused):
    """By default (None) from kernels.FUSED_FROM units on; True: at any size; False: never."""

    def calls_the_kernel(rnn_size):
        model = train.build_model(TrainParams(rnn_size=rnn_size, num_layers=1, length_input=False), 20)
        state, carry = train.create_state(model, TrainParams(), seed=0), model.initial_carry(2)
        tokens = np.zeros((2, 4), np.int32)
        step = train.make_train_step(model, seed=0, fused=fused)
        return "tweetbot_lstm_forward" in step.lower(state, carry, tokens, tokens).as_text()

    small, large = calls_the_kernel(kernels.FUSED_FROM - 1), calls_the_kernel(kernels.FUSED_FROM)
    assert (small, large) == {None: (False, True), True: (True, True), False: (False, False)}[fused]


def test_other_cells_keep_the_pure_jax_recurrence():
    for cell in ("gru", "rnn"):
        assert kernels.lstm_recurrence(CharRNN(20, cell=cell)) is None


SPIN_PROBE = """
import os
import tweetbot.train, dvclive  # what the train stage loads before its first step
from tweetbot import kernels
loaded = lambda: "libgomp" in open("/proc/self/maps").read()
before = loaded()
kernels.available()
print(before, loaded(), os.environ.get("GOMP_SPINCOUNT"))
"""


@needs_kernel
@pytest.mark.skipif(platform.system() != "Linux", reason="reads /proc/self/maps")
@pytest.mark.parametrize("policy", [None, "PASSIVE"])
def test_onednn_threads_spin_between_time_steps_unless_the_user_set_a_policy(policy):
    """libgomp reads GOMP_SPINCOUNT once, when it loads: with oneDNN, after the kernel module sets it."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env |= {"OMP_WAIT_POLICY": policy} if policy else {}
    out = subprocess.run([sys.executable, "-c", SPIN_PROBE], env=env, capture_output=True, text=True, check=True)
    before, after, spin_count = out.stdout.split()
    assert (before, after) == ("False", "True")
    assert spin_count == (kernels.SPIN_COUNT if policy is None else "None")
