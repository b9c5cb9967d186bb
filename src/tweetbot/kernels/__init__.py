"""The fused LSTM for training on a CPU: each layer's forward and backward are one call into our own kernel
(lstm_cpu.cc: oneDNN's matmuls, our gate loops, each thread taking its own rows of the batch through all the
time steps), made from XLA through `jax.ffi`.

    recurrence = kernels.lstm_recurrence(model)   # None: use the model's own pure-JAX recurrence

It is used for every LSTM on the CPU backend where `make kernels` (part of `make install`) built lstm_cpu.so,
in float32 or with bfloat16 matmul inputs (matmul_dtype: x, h, the weights and the
gate gradients rounded, sums, the cell state and the gradients in float32, as the pure-JAX recurrence does;
bfloat16 only where oneDNN has a fast bfloat16 matmul, a CPU with AVX-512: `computes`); everywhere else, on a
GPU too, training runs the pure-JAX scan of tweetbot.runtime.model unchanged. The forward keeps the activated
gates for the backward (the workspace), joined to it by `jax.custom_vjp`.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

LIBRARY = Path(__file__).with_name("lstm_cpu.so")
ONEDNN = Path(sys.prefix) / "lib" / "libdnnl.so.3"  # from the onednn-cpu-gomp wheel, in the venv's lib/


@functools.cache
def _library() -> ctypes.CDLL | None:
    if not LIBRARY.is_file():
        return None
    ctypes.CDLL(str(ONEDNN), mode=ctypes.RTLD_GLOBAL)
    library = ctypes.CDLL(str(LIBRARY))
    library.tweetbot_lstm_buffer_bytes.restype = ctypes.c_bool
    library.tweetbot_lstm_buffer_bytes.argtypes = [ctypes.c_int64] * 3 + [ctypes.c_int, ctypes.POINTER(ctypes.c_int64)]
    for name in ("forward", "backward", "projected_forward", "projected_backward"):
        name = f"tweetbot_lstm_{name}"
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, name)), platform="cpu")
    return library


def available() -> bool:
    """Whether the fused kernel is built and JAX computes on the CPU."""
    return jax.default_backend() == "cpu" and _library() is not None


@functools.cache
def computes(dtype: str) -> bool:
    """Whether the kernel is available and oneDNN has a fast matmul of `dtype` inputs on this CPU: it has no
    bfloat16 one without AVX-512 (a Zen 3 EPYC, say), where a bfloat16 model trains the pure-JAX scan."""
    return available() and _buffer_bytes(16, 8, 64, jnp.dtype(dtype)) is not None


def lstm_recurrence(model):
    """The fused LSTM for `model` (a CharRNN) where it applies, else None.

    It outruns the pure-JAX scan at every size measured side by side on a 2-core Xeon with AMX, float32: h32x2
    1.1x, h64x2 1.3x, h96x2 1.8x, h128x2 1.8x, h512x3 1.3x (benchmarks/results/train.md for the last two)."""
    if model.cell == "lstm" and computes(model.matmul_dtype):
        return lstm
    return None


@functools.cache
def _buffer_bytes(time: int, batch: int, hidden: int, dtype) -> tuple[int, int, int] | None:
    """The sizes of the forward's workspace, the backward's scratch and lstm_projected's workspace, in bytes
    (None: no fast matmul)."""
    sizes = (ctypes.c_int64 * 3)()
    if not _library().tweetbot_lstm_buffer_bytes(time, batch, hidden, dtype == jnp.bfloat16, sizes):
        return None
    return sizes[0], sizes[1], sizes[2]


def _buffer(time: int, batch: int, hidden: int, dtype, which: int) -> jax.ShapeDtypeStruct:
    sizes = _buffer_bytes(time, batch, hidden, dtype)
    if sizes is None:
        raise RuntimeError(f"oneDNN has no fast matmul for an LSTM of shape T={time} B={batch} H={hidden} {dtype}")
    return jax.ShapeDtypeStruct((sizes[which],), np.uint8)


def _layer_outputs(time: int, batch: int, hidden: int, dtype) -> tuple:
    """What both forward calls return first: hs [T, B, H] and h [B, H] in the matmul dtype, c [B, H] in f32."""
    return (
        jax.ShapeDtypeStruct((time, batch, hidden), dtype),
        jax.ShapeDtypeStruct((batch, hidden), jnp.float32),
        jax.ShapeDtypeStruct((batch, hidden), dtype),
    )


def _as_recurrence(hs, c, h):
    """The recurrences' contract, all float32: ((c, h), hs)."""
    return (c, h.astype(jnp.float32)), hs.astype(jnp.float32)


def _forward(x, w_x, w_h, b, carry, dtype):
    """The kernel's forward: (hs, c, h, workspace), and the matmul inputs as it read them (rounded to `dtype`)."""
    dtype = jnp.dtype(dtype)
    c0, h0 = carry
    x, w_x, w_h, h0 = (a.astype(dtype) for a in (x, w_x, w_h, h0))
    time, batch, _ = x.shape
    hidden = h0.shape[-1]
    outputs = (*_layer_outputs(time, batch, hidden, dtype), _buffer(time, batch, hidden, dtype, 0))
    hs, c, h, workspace = jax.ffi.ffi_call("tweetbot_lstm_forward", outputs)(x, w_x, w_h, b, c0, h0)
    return (hs, c, h, workspace), (x, w_x, w_h, h0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def lstm(x, w_x, w_h, b, carry, dtype="float32"):
    """The same contract as tweetbot.runtime.model.lstm: ((c, h), hs), all float32."""
    (hs, c, h, _), _ = _forward(x, w_x, w_h, b, carry, dtype)
    return _as_recurrence(hs, c, h)


def _lstm_fwd(x, w_x, w_h, b, carry, dtype):
    (hs, c, h, workspace), read = _forward(x, w_x, w_h, b, carry, dtype)
    return _as_recurrence(hs, c, h), (*read, b, carry[0], hs, c, h, workspace)


def _lstm_bwd(dtype, residuals, cotangents):
    x, w_x, w_h, h0, b, c0, hs, c, h, workspace = residuals
    (dc, dh), dhs = cotangents
    like = (x, w_x, w_h, b, c0, h0)
    time, batch, hidden = hs.shape
    scratch = _buffer(time, batch, hidden, hs.dtype, 1)  # the kernel's own, dropped after the call
    outputs = (*(jax.ShapeDtypeStruct(a.shape, jnp.float32) for a in like), scratch)
    dx, dw_x, dw_h, db, dc0, dh0, _ = jax.ffi.ffi_call("tweetbot_lstm_backward", outputs)(
        x, w_x, w_h, b, c0, h0, hs, c, h, workspace, dhs, dc, dh
    )
    return dx, dw_x, dw_h, db, (dc0, dh0)


lstm.defvjp(_lstm_fwd, _lstm_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def lstm_projected(z, w_h, carry, dtype="float32"):
    """`lstm` over an input projection the caller made, z = x W_x + b (float32 [T, B, 4H]): ((c, h), hs).

    For the first layer, whose input is rows of embedding tables: projecting the small tables and gathering rows
    (CharRNN's `projected`) replaces the input matmul and, in the backward, the two matmuls of dx and dW_x."""
    (hs, c, h, _), _ = _projected_forward(z, w_h, carry, dtype)
    return _as_recurrence(hs, c, h)


def _projected_forward(z, w_h, carry, dtype):
    dtype = jnp.dtype(dtype)
    c0, h0 = carry
    w_h, h0 = w_h.astype(dtype), h0.astype(dtype)
    time, batch, hidden = *z.shape[:2], h0.shape[-1]
    outputs = (
        *_layer_outputs(time, batch, hidden, dtype),
        jax.ShapeDtypeStruct(z.shape, jnp.float32),  # the gates, in z's own buffer
        _buffer(time, batch, hidden, dtype, 2),
    )
    call = jax.ffi.ffi_call("tweetbot_lstm_projected_forward", outputs, input_output_aliases={0: 3})
    hs, c, h, gates, workspace = call(z.astype(jnp.float32), w_h, c0, h0)
    return (hs, c, h, (gates, workspace)), (w_h, h0)


def _projected_fwd(z, w_h, carry, dtype):
    (hs, c, h, workspace), (w_h, h0) = _projected_forward(z, w_h, carry, dtype)
    return _as_recurrence(hs, c, h), (w_h, carry[0], h0, hs, workspace)


def _projected_bwd(dtype, residuals, cotangents):
    w_h, c0, h0, hs, (gates, workspace) = residuals
    (dc, dh), dhs = cotangents
    time, batch, hidden = hs.shape
    outputs = (
        jax.ShapeDtypeStruct((time, batch, 4 * hidden), jnp.float32),
        jax.ShapeDtypeStruct(w_h.shape, jnp.float32),
        jax.ShapeDtypeStruct(c0.shape, jnp.float32),
        jax.ShapeDtypeStruct(c0.shape, jnp.float32),
        _buffer(time, batch, hidden, hs.dtype, 1),  # the kernel's own, dropped after the call
    )
    dz, dw_h, dc0, dh0, _ = jax.ffi.ffi_call("tweetbot_lstm_projected_backward", outputs)(
        w_h, c0, h0, hs, gates, workspace, dhs, dc, dh
    )
    return dz, dw_h, (dc0, dh0)


lstm_projected.defvjp(_projected_fwd, _projected_bwd)
