"""Sampling speed: tweetbot's compiled sampler against a naive loop, measured side by side in one run.

280 characters (the model cannot end a post early here, so every sample runs the full length) at h128x2 with a
printable-ASCII vocabulary: batch 1 latency p50/p95 and batch 64 samples/s. The naive baseline is the obvious
code: a Python loop calling a jitted single step (model + `jax.random.categorical`) and reading each token
back, as a loop that stops at the end-of-post symbol must. It draws from the model's distribution as it is, so
tweetbot is set to the same (temperature 1, no cut) beside it; the default sampling (tweetbot.runtime.sampling:
a temperature and a nucleus cut, which the service and `tweetbot sample` use) and a top-k + top-p request get
rows of their own. Rounds alternate between all of them so they see the same machine load. Goal: batch 1 p50
<= 10 ms with the default sampling. Run: `python -m benchmarks sample` (or `make bench`).
"""

from __future__ import annotations

import string
import time

import jax
import jax.numpy as jnp
import numpy as np

from tweetbot.runtime.model import CharRNN
from tweetbot.runtime.sample import STREAM_CHUNK, Sampler, SampleRequest
from tweetbot.runtime.sampling import TEMPERATURE, TOP_P
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
    plain = {"temperature": 1.0, "top_p": 1.0}  # the naive loop's distribution: the model's own
    one = [SampleRequest(max_length=LENGTH, **plain)]
    default = [SampleRequest(max_length=LENGTH)]
    filtered = [SampleRequest(max_length=LENGTH, top_k=40, top_p=0.9)]
    full = [SampleRequest(max_length=LENGTH, seed=i, **plain) for i in range(64)]
    full_default = [SampleRequest(max_length=LENGTH, seed=i) for i in range(64)]
    assert len(sampler.generate(one)[0]) == LENGTH == len(naive(1)[0])  # both write the whole length
    sampler.warmup(batch_sizes=(1, 64))
    naive(64)

    batch_1 = {"b1": one, "b1_default": default, "filtered": filtered}
    batch_64 = {"b64": full, "b64_default": full_default}
    times: dict[str, list[float]] = {key: [] for key in [*batch_1, *batch_64, "b1_naive", "b64_naive", "first_chunk"]}
    for _ in range(40):
        for key, requests in batch_1.items():
            times[key].append(seconds(lambda requests=requests: sampler.generate(requests)))
        times["b1_naive"].append(seconds(lambda: naive(1)))
        times["first_chunk"].append(seconds(lambda: next(sampler.stream(default))))
    for _ in range(5):
        for key, requests in batch_64.items():
            times[key].append(seconds(lambda requests=requests: sampler.generate(requests)))
        times["b64_naive"].append(seconds(lambda: naive(64)))

    def ms(key: str, q: float) -> float:
        return 1000 * float(np.percentile(times[key], q))

    def per_s(key: str) -> float:
        return 64 / float(np.median(times[key]))

    default_name = f"default sampling (temperature {TEMPERATURE}, top-p {TOP_P})"
    rows = [
        {
            "measure": "batch 1, temperature 1, no cut, p50 (ms)",
            "tweetbot": ms("b1", 50),
            "naive loop": ms("b1_naive", 50),
        },
        {
            "measure": "batch 1, temperature 1, no cut, p95 (ms)",
            "tweetbot": ms("b1", 95),
            "naive loop": ms("b1_naive", 95),
        },
        {
            "measure": "batch 64, temperature 1, no cut (samples/s)",
            "tweetbot": per_s("b64"),
            "naive loop": per_s("b64_naive"),
        },
        {"measure": f"batch 1, {default_name}, p50 (ms)", "tweetbot": ms("b1_default", 50)},
        {"measure": f"batch 64, {default_name} (samples/s)", "tweetbot": per_s("b64_default")},
        {"measure": "batch 1, top-k 40 + top-p 0.9, p50 (ms)", "tweetbot": ms("filtered", 50)},
        {
            "measure": f"stream batch 1, {default_name}, first {STREAM_CHUNK} characters, p50 (ms)",
            "tweetbot": ms("first_chunk", 50),
        },
    ]
    for row in rows[:2]:
        row["speed-up"] = f"{row['naive loop'] / row['tweetbot']:.1f}x"
    rows[2]["speed-up"] = f"{rows[2]['tweetbot'] / rows[2]['naive loop']:.1f}x"
    verdict = "met" if ms("b1_default", 50) <= GOAL_P50_MS else "NOT met"
    return {
        "title": f"Sampling {LENGTH} characters, h{RNN_SIZE}x{NUM_LAYERS} LSTM, {len(sampler.vocab)} symbols",
        "rows": rows,
        "notes": [
            f"goal batch 1 p50 <= {GOAL_P50_MS} ms with the default sampling: {verdict}",
            "40 rounds at batch 1 and 5 at batch 64, every setting and the naive loop alternating;"
            " wall time per call, text decoding included",
            f"jax {jax.__version__}, {jax.devices()[0].platform}",
        ],
    }


if __name__ == "__main__":
    from benchmarks.__main__ import markdown

    print(markdown(main()))
