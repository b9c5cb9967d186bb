"""A tiny, randomly initialised model bundle for the bundle, export and service tests.

Every bundle made here has the same architecture, so JAX compiles (and caches) the sampler's programs once.
`eos_bias` pushes the end-of-post logit up (the model stops at once) or down (it never stops).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp

from tweetbot.runtime import bundle
from tweetbot.runtime.model import CharRNN
from tweetbot.runtime.vocab import EOS, Vocab

TEXT = "The quick brown fox jumps over the lazy dog! #nasa @astro 0123456789 .,?-:/'"
VOCAB = Vocab.build([TEXT])


def tiny_model() -> CharRNN:
    return CharRNN(vocab_size=len(VOCAB), rnn_size=8, num_layers=1, cell="lstm")


def tiny_variables(model: CharRNN, seed: int = 0) -> dict:
    return model.init(jax.random.key(seed), jnp.zeros((1, 1), jnp.int32), model.initial_carry(1))


def write_tiny_bundle(out: Path, *, seed: int = 0, eos_bias: float | None = None) -> Path:
    model = tiny_model()
    variables = tiny_variables(model, seed)
    if eos_bias is not None:
        bias = variables["params"]["head"]["bias"]
        variables["params"]["head"]["bias"] = bias.at[EOS].set(eos_bias)
    bundle.write(
        out,
        model,
        variables,
        VOCAB,
        metrics={"val_bpc": 2.5, "val_loss": 1.73},
        train_params={"model": "lstm", "rnn_size": 8, "num_layers": 1, "seed": seed},
        data_stats={"train_chars": len(TEXT)},
    )
    return out
