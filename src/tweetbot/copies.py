"""Verbatim copies: which samples hold a run of `RUN` characters of a training post.

A public bot must not leak its account's posts, so export refuses a model whose samples copy too often
(`export.max_copy_rate`) and evaluate reports how often they do; both measure it here, the same way.

    runs = TrainingRuns(train_tokens)        # the encoded training split (posts + EOS), as preprocess writes it
    runs.copies(vocab.encode(sample))        # True when the sample holds RUN symbols in a row of one post
    copy_rate(samples, vocab, runs)          # the share of samples that do

How it stays fast at any account size: every window of RUN symbols of the training stream gets a polynomial
hash, computed for all windows at once by numpy in wrapping uint64 arithmetic (RUN vectorised passes, no Python
loop over characters), and the hashes are sorted once. A sample's windows are then looked up with one
`searchsorted`, and a hit is confirmed symbol by symbol, so a hash collision never counts as a copy. Windows
that cross the end of a post hold EOS, which no sample does, so a run always lies inside one post. The index
costs 16 bytes per training character (hash and position) and about 0.1 s per million characters here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tweetbot.runtime.vocab import Vocab

RUN = 50  # characters in a row that make a sample a copy of a training post
BASE = np.uint64(0x9E3779B97F4A7C15)  # an odd multiplier: every symbol moves every bit of the hash


def window_hashes(ids: np.ndarray, run: int) -> np.ndarray:
    """The hash of every window of `run` consecutive ids: [len(ids) - run + 1] uint64 (empty if too short)."""
    ids = np.asarray(ids).astype(np.uint64)
    count = len(ids) - run + 1
    hashes = np.zeros(max(count, 0), np.uint64)
    if count <= 0:
        return hashes
    with np.errstate(over="ignore"):  # wrapping is the point: arithmetic modulo 2**64
        for offset in range(run):
            hashes = hashes * BASE + ids[offset : offset + count]
    return hashes


class TrainingRuns:
    """Every run of `run` symbols of the training stream `tokens`, indexed for lookup."""

    def __init__(self, tokens: np.ndarray, run: int = RUN):
        self.run = run
        self.tokens = np.asarray(tokens).astype(np.int64)
        hashes = window_hashes(self.tokens, run)
        self.order = np.argsort(hashes, kind="stable")  # window start of each sorted hash
        self.sorted = hashes[self.order]

    def copies(self, ids: np.ndarray) -> bool:
        """Whether `ids` (one sample, encoded) holds a run of the training stream."""
        ids = np.asarray(ids).astype(np.int64)
        hashes = window_hashes(ids, self.run)
        first = np.searchsorted(self.sorted, hashes, side="left")
        last = np.searchsorted(self.sorted, hashes, side="right")
        for window in np.flatnonzero(last > first):  # hash hits: rare, unless the sample is a copy
            text = ids[window : window + self.run]
            for start in self.order[first[window] : last[window]]:
                if np.array_equal(self.tokens[start : start + self.run], text):
                    return True
        return False


def copy_rate(samples: Sequence[str], vocab: Vocab, runs: TrainingRuns) -> float:
    """The share of `samples` (texts) that hold a run of `runs.run` characters of a training post."""
    if not samples:
        return 0.0
    return sum(runs.copies(vocab.encode(text)) for text in samples) / len(samples)
