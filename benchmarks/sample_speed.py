"""Sampling speed: tweetbot's compiled sampler against a naive loop, measured side by side in one run.

280 characters (the model cannot end a post early here, so every sample runs the full length) at h128x2 with a
printable-ASCII vocabulary: batch 1 latency p50/p95 and batch 64 samples/s. The naive baseline is the obvious
code: a Python loop calling a jitted single step (model + `jax.random.categorical`) and reading each token
back, as a loop that stops at the end-of-post symbol must. Rounds alternate between the two so both see the
same machine load. Goal: batch 1 p50 <= 10 ms. Run: `python -m benchmarks sample` (or `make bench`).
"""

from __future__ import annotations

import string
import time

import jax
import jax.numpy as jnp
import numpy as np

from tweetbot.runtime.model import CharRNN
from tweetbot.runtime.sample import STREAM_CHUNK, Sampler, SampleRequest
from tweetbot.runtime.vocab import EOS, Vocab

LENGTH = 280
RNN_SIZE, NUM_LAYERS = 128, 2
GOAL_P50_MS = 10.0


def build() -> tuple[Sampler, object]:
    """A random h128x2 model that never writes EOS, its sampler and the naive loop over the same weights."""
    vocab = Vocab(string.printable[:95])
    model = CharRNN(len(vocab), RNN_SIZE, NUM_LAYERS)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 1), jnp.int32), model.initial_carry(1))
    variables["params"]["head"]["bias"] = variables["params"]["head"]["bias"].at[EOS].set(-1e9)

    @jax.jit
    def step(variables, token, carry, key):
        logits, carry = model.apply(variables, token[:, None], carry)
        return jax.random.categorical(key, logits[:, 0]), carry

    def naive(batch_size: int) -> list[str]:
        carry, token, key = model.initial_carry(batch_size), jnp.full((batch_size,), EOS), jax.random.key(0)
        written = []
        for t in range(LENGTH):
            token, carry = step(variables, token, carry, jax.random.fold_in(key, t))
            written.append(np.asarray(token))
            if (written[-1] == EOS).all():
                break
        return [vocab.decode(row) for row in np.stack(written, axis=1)]

    return Sampler(model, variables, vocab), naive


def seconds(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> dict:
    sampler, naive = build()
    one = [SampleRequest(max_length=LENGTH)]
    filtered = [SampleRequest(max_length=LENGTH, top_k=40, top_p=0.9)]
    full = [SampleRequest(max_length=LENGTH, seed=i) for i in range(64)]
    assert len(sampler.generate(one)[0]) == LENGTH == len(naive(1)[0])  # both write the whole length
    sampler.warmup(batch_sizes=(1, 64))
    naive(64)

    times: dict[str, list[float]] = {
        key: [] for key in ("b1", "b1_naive", "filtered", "first_chunk", "b64", "b64_naive")
    }
    for _ in range(40):
        times["b1"].append(seconds(lambda: sampler.generate(one)))
        times["b1_naive"].append(seconds(lambda: naive(1)))
        times["filtered"].append(seconds(lambda: sampler.generate(filtered)))
        times["first_chunk"].append(seconds(lambda: next(sampler.stream(one))))
    for _ in range(5):
        times["b64"].append(seconds(lambda: sampler.generate(full)))
        times["b64_naive"].append(seconds(lambda: naive(64)))

    def ms(key: str, q: float) -> float:
        return 1000 * float(np.percentile(times[key], q))

    b64, b64_naive = 64 / np.median(times["b64"]), 64 / np.median(times["b64_naive"])
    rows = [
        {"measure": "batch 1, p50 (ms)", "tweetbot": ms("b1", 50), "naive loop": ms("b1_naive", 50)},
        {"measure": "batch 1, p95 (ms)", "tweetbot": ms("b1", 95), "naive loop": ms("b1_naive", 95)},
        {"measure": "batch 64 (samples/s)", "tweetbot": b64, "naive loop": b64_naive},
        {"measure": "batch 1, top-k 40 + top-p 0.9, p50 (ms)", "tweetbot": ms("filtered", 50)},
        {
            "measure": f"stream batch 1, first {STREAM_CHUNK} characters, p50 (ms)",
            "tweetbot": ms("first_chunk", 50),
        },
    ]
    for row in rows[:2]:
        row["speed-up"] = f"{row['naive loop'] / row['tweetbot']:.1f}x"
    rows[2]["speed-up"] = f"{b64 / b64_naive:.1f}x"
    verdict = "met" if ms("b1", 50) <= GOAL_P50_MS else "NOT met"
    return {
        "title": f"Sampling {LENGTH} characters, h{RNN_SIZE}x{NUM_LAYERS} LSTM, {len(sampler.vocab)} symbols",
        "rows": rows,
        "notes": [
            f"goal batch 1 p50 <= {GOAL_P50_MS} ms: {verdict}",
            "40 rounds at batch 1 and 5 at batch 64, tweetbot and the naive loop alternating;"
            " wall time per call, text decoding included",
            f"jax {jax.__version__}, {jax.devices()[0].platform}",
        ],
    }


if __name__ == "__main__":
    from benchmarks.__main__ import markdown

    print(markdown(main()))
