"""Learning rate: the demo default's validation loss after its step budget, for several rates and seeds.

`python -m benchmarks.learning_rate [RATE ...]` (`make bench-lr`, about 10 minutes). Fetches the demo posts and
preprocesses them as the pipeline does (params.yaml `fetch:` and `preprocess:`), then trains params.yaml `train:`
with each learning rate and two seeds, side by side in one run. This is how the demo default was chosen.
Results: benchmarks/results/learning_rate.{json,md}.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

from benchmarks.__main__ import save
from tweetbot import corpus, fetch, params, train

RATES = (0.002, 0.004, 0.008, 0.012)
SEEDS = (0, 1)


def main(rates: tuple[float, ...] = RATES) -> dict:
    base = params.load("train")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fetch.run(dataclasses.replace(params.load("fetch"), source="demo"), tmp / "tweets.jsonl")
        corpus.run(params.load("preprocess"), tmp / "tweets.jsonl", tmp / "data")
        for rate in rates:
            for seed in SEEDS:
                run = tmp / f"{rate}-{seed}"
                p = dataclasses.replace(base, learning_rate=rate, seed=seed, init_from=None)
                metrics = train.run(p, tmp / "data", run / "checkpoints", run / "live")
                rows.append(
                    {
                        "learning rate": rate,
                        "seed": seed,
                        "best val loss (nats/char)": metrics["best_val_loss"],
                        "steps": metrics["step"],
                        "train s": round(metrics["train_seconds"]),
                    }
                )
    return {
        "title": f"Demo posts: validation loss after {base.max_steps} steps, by learning rate",
        "rows": rows,
        "notes": [
            f"params.yaml train: {base.model} h{base.rnn_size}x{base.num_layers}, seq {base.seq_length}, batch "
            f"{base.batch_size}, lr x{base.lr_decay} every {base.lr_decay_steps} steps, grad clip {base.grad_clip}",
        ],
    }


if __name__ == "__main__":
    save("learning_rate", main(tuple(map(float, sys.argv[1:])) or RATES))
