"""How many posts are enough: the evaluate stage's figures against the number of training posts, with and
without a pretrained base.

`python -m benchmarks.posts_needed [BASE [scratch,base]]` (`make bench-posts`; BASE is one of
benchmarks.sample_quality.BASES, default shakespeare; the second argument picks the starts to measure). Trains
the demo default (params.yaml `train:`) on the newest 250, 500 and 1,000 of the demo's training posts and on
all of them, from scratch and fine-tuned from the base, and evaluates each model as the evaluate stage does.
The validation posts are the same for every row; the real-word rates of a row count a word as real when it
occurs in that row's training posts, so `real_words_heldout` is what a person reaches with that many posts.
Export's copy gate is measured, not applied (a copying model gets its row too).
Results: benchmarks/results/posts_needed.{json,md}, which `tweetbot summary` reads to say where an account stands.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from benchmarks.__main__ import save
from benchmarks.sample_quality import CACHE, evaluated, folder_of, prepare_demo, pretrained
from tweetbot import params, train
from tweetbot.checkpoint import save_naming_vocabulary
from tweetbot.corpus import decode_posts, encode
from tweetbot.runtime.vocab import Vocab

SIZES = (250, 500, 1000, None)  # None: every training post


def subset(data: Path, posts: int | None) -> Path:
    """`data` with only its newest `posts` training posts (the same validation posts and vocabulary)."""
    if posts is None:
        return data
    folder = CACHE / f"demo-{posts}-posts"
    if not (folder / "train.npy").exists():
        folder.mkdir(parents=True, exist_ok=True)
        vocab = Vocab.load(data / "vocab.json")
        np.save(folder / "train.npy", encode(decode_posts(np.load(data / "train.npy"), vocab)[-posts:], vocab))
        for name in ("val.npy", "vocab.json"):
            shutil.copy2(data / name, folder / name)
    return folder


def measure(data: Path, posts: int | None, base: str | None, base_steps: int, p: params.TrainParams) -> dict:
    if posts is None:  # all the posts: the sample_quality benchmark's levers, trained once for both
        folder = folder_of(f"{base} base ({base_steps} steps)" if base else "default")
    else:
        folder = CACHE / f"posts-{posts}-{base or 'scratch'}"
    p = dataclasses.replace(p, init_from=None)
    if base:
        checkpoint, base_vocab, _ = pretrained(base, dataclasses.replace(p, max_steps=base_steps, time_budget_s=None))
        save_naming_vocabulary(checkpoint, base_vocab, folder / "init.msgpack")  # training remaps it
        p = dataclasses.replace(p, init_from=str(folder / "init.msgpack"))
    metrics = train.run(p, data, folder / "checkpoints", folder / "live")
    ungated = dataclasses.replace(params.load("export"), max_copy_rate=1.0, min_improvement_bpc=-100.0)
    row = {
        "training posts": len(decode_posts(np.load(data / "train.npy"), Vocab.load(data / "vocab.json"))),
        "start": f"{base} base" if base else "scratch",
        "val loss": round(metrics["best_val_loss"], 3),
        **evaluated(folder, data, ungated),
    }
    print(json.dumps(row), flush=True)
    return row


def main(base: str = "shakespeare", starts: str = "scratch,base", base_steps: int = 2000) -> dict:
    p = params.load("train")
    data = prepare_demo(CACHE / "demo")
    bases = [{"scratch": None, "base": base}[start] for start in starts.split(",")]
    rows = [measure(subset(data, n), n, start, base_steps, p) for start in bases for n in SIZES]
    return {
        "title": "Demo posts: sample quality by number of training posts, from scratch and from a pretrained base",
        "rows": rows,
        "notes": [
            f"params.yaml train: h{p.rnn_size}x{p.num_layers}, {p.max_steps} steps; the newest N training posts",
            f"base: {base}, pretrained {base_steps} steps with the same train: params, then fine-tuned",
            "real_words_heldout: the held-out posts' words found among the N training posts' words",
        ],
    }


if __name__ == "__main__":
    save("posts_needed", main(*sys.argv[1:3]))
