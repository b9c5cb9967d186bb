"""Batches for truncated back-propagation through time, as char-rnn cuts them.

The token stream is cut into `lanes` contiguous rows of equal length. Window k of a batch is the slice
`[k * seq_length, (k + 1) * seq_length)` of every row, and its targets are the same slice moved one token on,
so row b of window k+1 continues row b of window k: the recurrent state at the end of one window is the right
state to start the next one with. An epoch is one pass over the windows; the state is reset at its start.

For a model that reads how long its post is (CharRNN.length_quantiles), a window also holds, beside each input
token, the characters left before the next EOS (`chars_left`), cut into rows the same way.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from tweetbot.runtime.errors import UserError
from tweetbot.runtime.vocab import EOS

LENGTH_QUANTILES = 33  # the length table a model keeps: its training posts' lengths at 0%, 1/32, ..., 100%


class Lanes:
    """`tokens` cut into `lanes` rows, read `seq_length` tokens at a time."""

    def __init__(
        self, tokens: np.ndarray, lanes: int, seq_length: int, name: str = "train", *, with_chars_left: bool = False
    ):
        tokens = np.asarray(tokens)
        row = (len(tokens) - 1) // lanes  # each row needs one token more than it trains on: the last target
        if row < seq_length:
            need = lanes * seq_length + 1
            raise UserError(
                f"the {name} split has {len(tokens)} characters, fewer than the {need} that "
                f"{lanes} lanes of seq_length {seq_length} need: "
                "lower batch_size or seq_length, or fetch more posts"
            )
        self.seq_length = seq_length
        self.windows_per_epoch = row // seq_length
        used = self.windows_per_epoch * seq_length
        starts = np.arange(lanes) * row
        # rows[b] = tokens[starts[b] : starts[b] + used + 1]; the last column is only ever a target.
        self.rows = np.stack([tokens[s : s + used + 1] for s in starts]).astype(np.int32)
        self.chars_left = None  # [lanes, used]: each input's, for a model that reads its posts' lengths
        if with_chars_left:
            left = chars_left(tokens)
            self.chars_left = np.stack([left[s : s + used] for s in starts])

    @property
    def lanes(self) -> int:
        return self.rows.shape[0]

    @property
    def chars_per_window(self) -> int:
        return self.lanes * self.seq_length

    def window(self, k: int) -> tuple[np.ndarray, ...]:
        """Inputs and targets [lanes, seq_length] of window `k` of the epoch (and the inputs' chars_left)."""
        start = (k % self.windows_per_epoch) * self.seq_length
        chunk = self.rows[:, start : start + self.seq_length + 1]
        if self.chars_left is None:
            return chunk[:, :-1], chunk[:, 1:]
        return chunk[:, :-1], chunk[:, 1:], self.chars_left[:, start : start + self.seq_length]

    def all_windows(self) -> tuple[np.ndarray, ...]:
        """Every window of one epoch, stacked: each array of `window` as [windows, lanes, seq_length]."""
        windows = [self.window(k) for k in range(self.windows_per_epoch)]
        return tuple(np.stack(arrays) for arrays in zip(*windows, strict=True))

    def __iter__(self) -> Iterator[tuple[np.ndarray, ...]]:
        return (self.window(k) for k in range(self.windows_per_epoch))


def eval_lanes(tokens: np.ndarray, batch_size: int, seq_length: int, *, with_chars_left: bool = False) -> Lanes:
    """Lanes over the validation split: as many as fit, up to `batch_size`, so a small split is scored too."""
    lanes = max(1, min(batch_size, (len(tokens) - 1) // seq_length))
    return Lanes(tokens, lanes, seq_length, name="val", with_chars_left=with_chars_left)


def chars_left(tokens: np.ndarray) -> np.ndarray:
    """For each token, how many characters come before the next EOS after it (0: the next token is an EOS).
    Characters after the last EOS count as if it followed the stream's end."""
    tokens = np.asarray(tokens)
    ends = np.append(np.flatnonzero(tokens == EOS), len(tokens))
    index = np.arange(len(tokens))
    next_end = ends[np.searchsorted(ends, index, side="right").clip(max=len(ends) - 1)]
    return (np.maximum(next_end, index + 1) - index - 1).astype(np.int32)


def length_quantiles(tokens: np.ndarray) -> tuple[int, ...]:
    """The lengths of the posts in a token stream (each followed by EOS) at LENGTH_QUANTILES even steps."""
    ends = np.flatnonzero(np.asarray(tokens) == EOS)
    if len(ends) == 0:
        raise UserError("the training split holds no whole post (no EOS symbol): fetch more posts")
    lengths = np.diff(ends, prepend=-1) - 1
    quantiles = np.quantile(lengths, np.linspace(0, 1, LENGTH_QUANTILES), method="inverted_cdf")
    return tuple(int(q) for q in quantiles)
