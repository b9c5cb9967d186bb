"""The slots of continuous batching: rows join and leave the sampler's chunk program between two chunks.

Every slot holds a row's state and settings in host arrays. `advance` gathers the busy slots into the smallest
batch bucket that holds them (padded with copies of busy rows, whose results are dropped), runs one chunk and
writes the new state back; a row that ended frees its slot at once. The batcher (service/batching.py) owns the
engine from one thread: nothing here is locked.
"""

from __future__ import annotations

import jax
import numpy as np

from tweetbot.runtime.errors import UserError
from tweetbot.runtime.sample import BATCH_BUCKETS, Sampler, SampleRequest, bucket, check


class Engine:
    """Up to `slots` rows of `sampler` in flight, each in a slot of its own until it ends or is dropped."""

    def __init__(self, sampler: Sampler, slots: int):
        if not 1 <= slots <= BATCH_BUCKETS[-1]:
            raise UserError(f"an engine has 1 to {BATCH_BUCKETS[-1]} slots, not {slots}")
        self.sampler = sampler
        self.owners: list[object | None] = [None] * slots  # who each row belongs to; None: the slot is free
        self._state = sampler.start_state(slots)
        self._rows = sampler.rows([], slots)
        self._start = sampler.start_state(1)  # what a row's state is when it joins

    @property
    def busy(self) -> int:
        return sum(owner is not None for owner in self.owners)

    @property
    def free(self) -> int:
        return len(self.owners) - self.busy

    def add(self, request: SampleRequest, owner: object) -> None:
        """Start `request` in a free slot at its step 0; `advance` reports its text under `owner`."""
        check(request, self.sampler.vocab)
        if owner is None or not self.free:
            raise ValueError("add a row only with an owner and while a slot is free")
        slot = self.owners.index(None)
        self.owners[slot] = owner
        joining = (self._start, self.sampler.rows([request], 1))
        for stored, new in zip(jax.tree.leaves((self._state, self._rows)), jax.tree.leaves(joining), strict=True):
            stored[slot] = new[0]

    def drop(self, owner: object) -> None:
        """Free the slot of `owner`'s row (a client that left needs no more text)."""
        self.owners[self.owners.index(owner)] = None

    def advance(self) -> list[tuple[object, str, bool]]:
        """Every busy row STREAM_CHUNK steps on: (owner, the text it wrote, whether it ended) per row."""
        busy = [slot for slot, owner in enumerate(self.owners) if owner is not None]
        if not busy:
            return []
        gather = np.resize(busy, bucket(len(busy), BATCH_BUCKETS))  # busy rows, repeated to fill the bucket
        state, rows = jax.tree.map(lambda stored: stored[gather], (self._state, self._rows))
        state, tokens = self.sampler.advance(state, rows)
        for stored, new in zip(jax.tree.leaves(self._state), jax.tree.leaves(state), strict=True):
            stored[busy] = new[: len(busy)]
        written = []
        for slot, text, ended in zip(busy, self.sampler.written(state, rows, tokens), state.finished, strict=False):
            written.append((self.owners[slot], text, bool(ended)))
            if ended:
                self.owners[slot] = None
        return written
