"""Quality: Tiny Shakespeare validation loss after 180 s of training on this machine, with the curve.

`python -m benchmarks.quality` (`make bench-quality`, about four minutes). The text is split 90/10 (the first
90% trains), as nanoGPT does; the train stage's own `run` trains with the preset below and a 180 s
`time_budget_s` (training time: compiling and evaluating are not counted). Goal: <= 1.75 nats/char (nanoGPT's
CPU configuration reaches 1.88 in about 3 minutes). Results: benchmarks/results/quality.{json,md}.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.__main__ import save
from tweetbot import train
from tweetbot.params import TrainParams
from tweetbot.runtime.vocab import Vocab

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "tinyshakespeare.txt"
BUDGET_S = 180.0
GOAL = 1.75
PRESET = TrainParams(
    rnn_size=256,
    num_layers=2,
    seq_length=64,
    batch_size=64,
    learning_rate=0.004,
    lr_decay=0.95,
    lr_decay_steps=100,
    max_steps=1_000_000,  # the time budget stops it
    time_budget_s=BUDGET_S,
    eval_every=100,
)


def prepare(folder: Path) -> None:
    """train.npy / val.npy / vocab.json of Tiny Shakespeare, 90/10, in the preprocess stage's format."""
    text = CORPUS.read_text()
    vocab = Vocab.build(text)
    split = int(0.9 * len(text))
    np.save(folder / "train.npy", vocab.encode(text[:split]).astype(np.uint16))
    np.save(folder / "val.npy", vocab.encode(text[split:]).astype(np.uint16))
    vocab.save(folder / "vocab.json")


def main() -> dict:
    if not CORPUS.exists():
        sys.exit(f"{CORPUS} not found: the quality benchmark needs ../shared/corpora beside the repository")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prepare(tmp)
        metrics = train.run(PRESET, tmp, tmp / "checkpoints", tmp / "live")
        curve = (tmp / "live" / "plots" / "metrics" / "val_loss.tsv").read_text().splitlines()[1:]
    rows = []
    for line in curve:
        step, val_loss = line.split("\t")
        chars = int(step) * PRESET.batch_size * PRESET.seq_length
        rows.append({"step": int(step), "characters trained": f"{chars:,}", "val loss (nats/char)": float(val_loss)})
    p = PRESET
    return {
        "title": f"Tiny Shakespeare: validation loss after {BUDGET_S:.0f} s of training",
        "rows": rows,
        "final_val_loss": metrics["val_loss"],
        "best_val_loss": metrics["best_val_loss"],
        "train_seconds": metrics["train_seconds"],
        "notes": [
            f"final val loss {metrics['val_loss']:.3f} nats/char ({metrics['val_bpc']:.3f} bits/char) after "
            f"{metrics['train_seconds']:.0f} s of training, {metrics['step']} steps; goal <= {GOAL}",
            f"preset: {p.model} h{p.rnn_size}x{p.num_layers}, seq {p.seq_length}, batch {p.batch_size}, "
            f"lr {p.learning_rate} x{p.lr_decay} every {p.lr_decay_steps} steps, 90/10 split",
        ],
    }


if __name__ == "__main__":
    save("quality", main())
