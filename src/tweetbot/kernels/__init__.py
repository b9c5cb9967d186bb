"""The fused LSTM for training on a CPU: each layer's forward and backward are one call into oneDNN's LSTM
primitive (what PyTorch's nn.LSTM runs on a CPU), made from XLA through `jax.ffi`.

    recurrence = kernels.lstm_recurrence(model)   # None: use the model's own pure-JAX recurrence

It is used for an LSTM of at least FUSED_FROM units (below it the scan is the faster) on the CPU backend where
`make kernels` (part of `make install`) built lstm_onednn.so, in float32 or with bfloat16 matmul inputs
(matmul_dtype: x, h and the weights rounded, sums, the cell state and the gradients in float32, as the pure-JAX
recurrence does; bfloat16 only where oneDNN has it, a CPU with AVX-512: `computes`); everywhere else, on a GPU
too, training runs the pure-JAX scan of tweetbot.runtime.model unchanged. The forward keeps oneDNN's workspace
(the gates it computed) for the backward, joined to it by `jax.custom_vjp`.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

LIBRARY = Path(__file__).with_name("lstm_onednn.so")
ONEDNN = Path(sys.prefix) / "lib" / "libdnnl.so.3"  # from the onednn-cpu-gomp wheel, in the venv's lib/
# Below this many units per layer the pure-JAX scan trains faster: XLA fuses each step's small matmuls and gate
# arithmetic into one loop, where oneDNN pays a call, a weight reorder and a thread hand-off per time step.
# Measured side by side on a quiet 2-core Xeon with AMX, pure JAX against fused: h128x2 1.2x in float32 and in
# bfloat16, h192x2 even, h256x2 0.96x (float32) and 0.94x (bfloat16), h512x3 0.67x (benchmarks/results/train.md).
# On a 2-core AMD EPYC Zen 4 VM, with the threads spinning (SPIN_COUNT), the fused h128x2 swung with the host's
# load where the scan held steady: 1.18x the scan (float32) and 1.46x (bfloat16) in a quiet hour, 0.55x to 0.95x
# in a busy one (12-15% of the CPU time stolen by the host); so the default size stays on the scan.
FUSED_FROM = 256
# How long oneDNN's OpenMP threads spin, waiting for the next parallel region, before they sleep (libgomp's
# GOMP_SPINCOUNT, about 0.1 ms here). oneDNN runs a parallel region per time step, and waking a sleeping thread
# at each one (OMP_WAIT_POLICY=PASSIVE, the setting before this one) cost the fused h128x2 on a 2-core EPYC Zen 4
# VM 41K chars/s against 56K spinning 10,000 in a quiet hour, 25K against 40K in a busy one; bfloat16 45K
# against 76K; h512x3 bfloat16 4.9K against 5.7K in a quiet hour, even in a busy one. Longer spins gained
# nothing, and threads that never sleep (OMP_WAIT_POLICY=ACTIVE) keep the cores from XLA's threads: 52K.
SPIN_COUNT = "10000"
# What _library put in the environment for oneDNN's threads (never a variable the user set): the training
# benchmark runs PyTorch without it, in the user's environment.
OWN_ENVIRONMENT: dict[str, str] = {}


@functools.cache
def _library() -> ctypes.CDLL | None:
    if not LIBRARY.is_file():
        return None
    if not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & os.environ.keys():  # a user's setting stands
        OWN_ENVIRONMENT["GOMP_SPINCOUNT"] = SPIN_COUNT
        os.environ.update(OWN_ENVIRONMENT)  # read once, when libgomp loads with oneDNN, below
    ctypes.CDLL(str(ONEDNN), mode=ctypes.RTLD_GLOBAL)
    library = ctypes.CDLL(str(LIBRARY))
    library.tweetbot_lstm_workspace_bytes.restype = ctypes.c_int64
    library.tweetbot_lstm_workspace_bytes.argtypes = [ctypes.c_int64] * 4 + [ctypes.c_int]
    for name in ("tweetbot_lstm_forward", "tweetbot_lstm_backward"):
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, name)), platform="cpu")
    return library


def available() -> bool:
    """Whether the fused kernel is built and JAX computes on the CPU."""
    return jax.default_backend() == "cpu" and _library() is not None


@functools.cache
def computes(dtype: str) -> bool:
    """Whether the kernel is available and oneDNN has an LSTM with `dtype` matmul inputs on this CPU: it has no
    bfloat16 one without AVX-512 (a Zen 3 EPYC, say), where a bfloat16 model trains the pure-JAX scan."""
    return available() and _library().tweetbot_lstm_workspace_bytes(16, 8, 32, 64, dtype == "bfloat16") >= 0


def lstm_recurrence(model, *, any_size: bool = False):
    """The fused LSTM for `model` (a CharRNN) where it applies and is the faster, else None.

    `any_size`: wherever it applies, small models too (the benchmark and the tests compare the two paths)."""
    if model.cell == "lstm" and (any_size or model.rnn_size >= FUSED_FROM) and computes(model.matmul_dtype):
        return lstm
    return None


def _workspace_bytes(time: int, batch: int, inputs: int, hidden: int, dtype) -> int:
    size = _library().tweetbot_lstm_workspace_bytes(time, batch, inputs, hidden, dtype == jnp.bfloat16)
    if size < 0:
        raise RuntimeError(f"oneDNN refused an LSTM of shape T={time} B={batch} I={inputs} H={hidden} {dtype}")
    return size


def _forward(x, w_x, w_h, b, carry, dtype):
    """oneDNN's forward: (hs, c, h, workspace), and the matmul inputs as it read them (rounded to `dtype`)."""
    dtype = jnp.dtype(dtype)
    c0, h0 = carry
    x, w_x, w_h, h0 = (a.astype(dtype) for a in (x, w_x, w_h, h0))
    time, batch, inputs = x.shape
    hidden = h0.shape[-1]
    outputs = (
        jax.ShapeDtypeStruct((time, batch, hidden), dtype),
        jax.ShapeDtypeStruct((batch, hidden), jnp.float32),
        jax.ShapeDtypeStruct((batch, hidden), dtype),
        jax.ShapeDtypeStruct((_workspace_bytes(time, batch, inputs, hidden, dtype),), np.uint8),
    )
    hs, c, h, workspace = jax.ffi.ffi_call("tweetbot_lstm_forward", outputs)(x, w_x, w_h, b, c0, h0)
    return (hs, c, h, workspace), (x, w_x, w_h, h0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def lstm(x, w_x, w_h, b, carry, dtype="float32"):
    """The same contract as tweetbot.runtime.model.lstm: ((c, h), hs), all float32."""
    (hs, c, h, _), _ = _forward(x, w_x, w_h, b, carry, dtype)
    return (c, h.astype(jnp.float32)), hs.astype(jnp.float32)


def _lstm_fwd(x, w_x, w_h, b, carry, dtype):
    (hs, c, h, workspace), read = _forward(x, w_x, w_h, b, carry, dtype)
    outputs = ((c, h.astype(jnp.float32)), hs.astype(jnp.float32))
    return outputs, (*read, b, carry[0], hs, c, h, workspace)


def _lstm_bwd(dtype, residuals, cotangents):
    x, w_x, w_h, h0, b, c0, hs, c, h, workspace = residuals
    (dc, dh), dhs = cotangents
    like = (x, w_x, w_h, b, c0, h0)
    outputs = tuple(jax.ShapeDtypeStruct(a.shape, jnp.float32) for a in like)
    dx, dw_x, dw_h, db, dc0, dh0 = jax.ffi.ffi_call("tweetbot_lstm_backward", outputs)(
        x, w_x, w_h, b, c0, h0, hs, c, h, workspace, dhs, dc, dh
    )
    return dx, dw_x, dw_h, db, (dc0, dh0)


lstm.defvjp(_lstm_fwd, _lstm_bwd)
