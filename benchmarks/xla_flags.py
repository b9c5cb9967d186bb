"""XLA CPU flags against none: training chars/s with each `XLA_FLAGS` setting, side by side in one run.

    python -m benchmarks.xla_flags --xla_cpu_prefer_vector_width=512 --xla_cpu_use_onednn=true ...

XLA reads its flags once, at start-up, so each setting (none, then each argument) trains in a process of its
own, kept alive and measured in turn: 3 rounds of 3 s for the fused kernel and the pure-JAX scan at h128x2 and
h512x3 (float32, as benchmarks/train_speed.py). A flag this jaxlib does not know aborts its process at start-up.
Not part of `make bench`: it decides which flags tweetbot sets (none won on the 2-core Xeon, README "Training").
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

ROUNDS, SECONDS = 3, 3.0


def serve_measurements() -> None:
    """The child: build the trainers, say "ready", then answer each line on stdin with {name: chars/s}."""
    from benchmarks.train_speed import SIZES, VOCAB, jax_trainer
    from tweetbot import malloc, train
    from tweetbot.params import TrainParams

    malloc.keep_freed_memory()  # as train.run does
    trainers = {}
    for rnn_size, num_layers in SIZES:
        params = TrainParams(rnn_size=rnn_size, num_layers=num_layers, matmul_dtype="float32", length_input=False)
        model = train.build_model(params, VOCAB)
        trainers[f"h{rnn_size}x{num_layers} kernel"] = jax_trainer(model)
        trainers[f"h{rnn_size}x{num_layers} pure JAX"] = jax_trainer(model, fused=False)
    print("ready", flush=True)
    for _ in sys.stdin:
        print(json.dumps({name: measure(SECONDS) for name, measure in trainers.items()}), flush=True)


def main(flags: list[str]) -> None:
    settings = ["", *flags]
    children = []
    for setting in settings:
        env = {**os.environ, "XLA_FLAGS": setting}
        command = [sys.executable, "-m", "benchmarks.xla_flags", "--child"]
        child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        if child.stdout.readline().strip() != "ready":
            raise SystemExit(f"error: XLA_FLAGS={setting!r} did not start (see the message above)")
        children.append(child)
    figures = {setting: [] for setting in settings}
    for _ in range(ROUNDS):  # interleaved, so every setting sees the same machine load
        for setting, child in zip(settings, children, strict=True):
            child.stdin.write("measure\n")
            child.stdin.flush()
            figures[setting].append(json.loads(child.stdout.readline()))
    for child in children:
        child.stdin.close()
        child.wait()
    baseline = {name: statistics.median(r[name] for r in figures[""]) for name in figures[""][0]}
    print("| XLA_FLAGS | " + " | ".join(baseline) + " |")
    print("|" + " --- |" * (len(baseline) + 1))
    for setting, rounds in figures.items():
        medians = {name: statistics.median(r[name] for r in rounds) for name in baseline}
        cells = [f"{medians[n]:,.0f} ({medians[n] / baseline[n] - 1:+.0%})" if setting else f"{medians[n]:,.0f}"
                 for n in baseline]  # fmt: skip
        print(f"| {setting or '(none)'} | " + " | ".join(cells) + " |")
    print(f"\nchars/s, median of {ROUNDS} interleaved rounds of {SECONDS:.0f} s; in brackets: against no flags")


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        serve_measurements()
    else:
        main(sys.argv[1:])
