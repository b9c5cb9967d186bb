"""Tiny training data and params for the train tests: real English text, no files needed."""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import importlib
import io
import sys
from pathlib import Path

import numpy as np

from tests.conftest import REPO
from tweetbot.params import TrainParams
from tweetbot.runtime.vocab import EOS, Vocab

with contextlib.redirect_stdout(io.StringIO()):  # `import this` prints the Zen of Python
    ZEN = codecs.decode(importlib.import_module("this").s, "rot13")  # 20 short lines: our "posts"

TINY = TrainParams(
    rnn_size=16,
    num_layers=1,
    seq_length=16,
    batch_size=8,
    learning_rate=0.01,
    max_steps=30,
    eval_every=10,
)


# The train stage as dvc.yaml runs it, from a project folder, and TINY as params.yaml keys.
TRAIN_STAGE = [sys.executable, str(REPO / "stages" / "train.py"), "data/processed", "models/checkpoints", "dvclive"]
TINY_YAML = {k: getattr(TINY, k) for k in ("rnn_size", "num_layers", "seq_length", "batch_size", "eval_every")}


def tiny_params(**changes) -> TrainParams:
    return dataclasses.replace(TINY, **changes)


def write_data(folder: Path, repeat: int = 12) -> Path:
    """train.npy / val.npy / vocab.json in the preprocess contract: posts + EOS, uint16."""
    posts = [line for line in ZEN.splitlines() if line.strip()]
    vocab = Vocab.build(posts)

    def encode(texts):
        return np.concatenate([np.append(vocab.encode(t), EOS) for t in texts]).astype(np.uint16)

    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "train.npy", encode(posts * repeat))
    np.save(folder / "val.npy", encode(posts[::-1]))
    vocab.save(folder / "vocab.json")
    return folder


def params_yaml(**values) -> str:
    """A params.yaml with only a `train:` section."""
    lines = ["train:"] + [f"  {key}: {'null' if v is None else v}" for key, v in values.items()]
    return "\n".join(lines) + "\n"
