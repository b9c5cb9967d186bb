"""Batches for truncated back-propagation through time, as char-rnn cuts them.

The token stream is cut into `lanes` contiguous rows of equal length. Window k of a batch is the slice
`[k * seq_length, (k + 1) * seq_length)` of every row, and its targets are the same slice moved one token on,
so row b of window k+1 continues row b of window k: the recurrent state at the end of one window is the right
state to start the next one with. An epoch is one pass over the windows; the state is reset at its start.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from tweetbot.runtime.errors import UserError


class Lanes:
    """`tokens` cut into `lanes` rows, read `seq_length` tokens at a time."""

    def __init__(self, tokens: np.ndarray, lanes: int, seq_length: int, name: str = "train"):
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

    @property
    def lanes(self) -> int:
        return self.rows.shape[0]

    @property
    def chars_per_window(self) -> int:
        return self.lanes * self.seq_length

    def window(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets [lanes, seq_length] of window `k` of the epoch."""
        start = (k % self.windows_per_epoch) * self.seq_length
        chunk = self.rows[:, start : start + self.seq_length + 1]
        return chunk[:, :-1], chunk[:, 1:]

    def all_windows(self) -> tuple[np.ndarray, np.ndarray]:
        """Every window of one epoch, stacked: inputs and targets [windows, lanes, seq_length]."""
        windows = [self.window(k) for k in range(self.windows_per_epoch)]
        return np.stack([w[0] for w in windows]), np.stack([w[1] for w in windows])

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return (self.window(k) for k in range(self.windows_per_epoch))


def eval_lanes(tokens: np.ndarray, batch_size: int, seq_length: int) -> Lanes:
    """Lanes over the validation split: as many as fit, up to `batch_size`, so a small split is scored too."""
    lanes = max(1, min(batch_size, (len(tokens) - 1) // seq_length))
    return Lanes(tokens, lanes, seq_length, name="val")
