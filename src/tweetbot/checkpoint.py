"""Training checkpoints: one self-contained msgpack file each, written atomically.

The training stage keeps two under `models/checkpoints/`:
- `best.msgpack`: the weights with the lowest validation loss so far (what export and sampling use);
- `last.msgpack`: the latest weights plus the optimizer state and the recurrent state carried between batches,
  so an interrupted run resumes exactly where it stopped.

A file holds `{"meta": <JSON text>, "params": ..., ["opt_state": ..., "carry": ...]}`. `meta` has everything
needed to rebuild the model without params.yaml: `model` (the CharRNN fields), `train_params` (the whole
`train:` section), `vocab_size`, `data_hash`, and the run's progress (tweetbot.train.Progress: `step`, `val_loss`,
`val_bpc`, `train_loss`, `best_val_loss`, `chars_seen`, `train_seconds`, `chars_per_second`); a fine-tune's start
may also hold `vocab`, its characters in id order (see `remapped`). Read one with `load_checkpoint(path)`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization

from tweetbot import atomic
from tweetbot.runtime.errors import UserError
from tweetbot.runtime.model import CharRNN, from_config
from tweetbot.runtime.vocab import SPECIALS, UNK, Vocab

BEST = "best.msgpack"
LAST = "last.msgpack"
FORMAT = 1


def save(path: Path, meta: dict, params, opt_state=None, carry=None) -> None:
    """Write a checkpoint to `path` atomically: a temporary file in the same folder, then a rename."""
    record: dict[str, Any] = {"meta": json.dumps({"format": FORMAT, **meta}), "params": _to_numpy(params)}
    if opt_state is not None:
        record["opt_state"] = _to_numpy(serialization.to_state_dict(opt_state))
    if carry is not None:
        record["carry"] = _to_numpy(serialization.to_state_dict(carry))
    atomic.write_bytes(Path(path), serialization.msgpack_serialize(record))


def read(path: Path) -> dict:
    """The raw record of a checkpoint: `meta` as a dict, the arrays as nested dicts of numpy arrays."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}: train first (`dvc repro train`) or fix the path")
    try:
        record = serialization.msgpack_restore(path.read_bytes())
        record["meta"] = json.loads(record["meta"])
    except Exception:  # noqa: BLE001 - any decoding failure means the same thing to the user
        raise UserError(f"{path} is not a tweetbot checkpoint: train again or fix the path") from None
    if record["meta"].get("format") != FORMAT:
        raise UserError(f"{path} has checkpoint format {record['meta'].get('format')}, expected {FORMAT}")
    return record


def load_checkpoint(path: Path | str) -> tuple[CharRNN, dict, dict]:
    """Rebuild the model of a checkpoint: `(model, variables, meta)`.

    `model.apply(variables, tokens, model.initial_carry(B))` runs it; `meta` is described in the module doc.
    """
    record = read(Path(path))
    meta = record["meta"]
    model = from_config(meta["model"])
    variables = {"params": jax.tree.map(jax.numpy.asarray, record["params"])}
    return model, variables, meta


def restore(template, state_dict):
    """Fill `template` (e.g. a freshly initialised optimizer state) with the arrays of `state_dict`."""
    return serialization.from_state_dict(template, jax.tree.map(jax.numpy.asarray, state_dict))


def save_naming_vocabulary(source: Path, vocab: Vocab, out: Path) -> None:
    """Checkpoint `source` again at `out`, holding its vocabulary `vocab`: training from it (train.init_from) on
    data of another vocabulary starts from it `remapped` to that one."""
    record = read(source)
    save(out, record["meta"] | {"vocab": vocab.chars}, record["params"])


def remapped(record: dict, old: Vocab, new: Vocab) -> dict:
    """The record (`read`) of a model over vocabulary `old` with its embedding and head rows in the order of `new`.

    Each known character keeps its row and output column; a new one starts as a copy of the unknown symbol's,
    which is what the old model saw it as. So the model grows and forgets nothing: it scores text as before.
    """
    rows = [_old_id(old, new, i) for i in range(len(new))]  # for each new id, the old row it starts from
    weights = jax.tree.map(np.asarray, record["params"])
    weights["embed"]["embedding"] = weights["embed"]["embedding"][rows]
    weights["head"]["kernel"] = weights["head"]["kernel"][:, rows]
    weights["head"]["bias"] = weights["head"]["bias"][rows]
    meta = record["meta"] | {"vocab": new.chars, "vocab_size": len(new)}
    meta["model"] = meta["model"] | {"vocab_size": len(new)}
    return {**record, "meta": meta, "params": weights}


def _old_id(old: Vocab, new: Vocab, new_id: int) -> int:
    if new_id < len(SPECIALS):
        return new_id
    return old.index.get(new.chars[new_id - len(SPECIALS)], UNK)


def _to_numpy(tree):
    return jax.tree.map(np.asarray, tree)
