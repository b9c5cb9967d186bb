"""The exported bundle: everything the service needs to generate, and nothing else.

A bundle is one folder (`models/export/` by default):
    weights.msgpack   the model variables and the samplers' start state (`start_carry`, absent in bundles from
                      before it), `flax.serialization.to_bytes` (portable msgpack, no pickle)
    vocab.json        the character vocabulary (`Vocab.save`)
    manifest.json     format version, model version, model config, metrics, train params, data statistics,
                      creation info and the sha256 of each file above
The model version is a content hash of the weights, the vocabulary and the manifest's deterministic part
(not the creation time), so exporting the same checkpoint twice gives the same version.

Loading needs only jax, flax, numpy and the runtime's `model` and `vocab`: never training code or `data/`.
Whatever is wrong with a bundle (missing, truncated, edited, from another format) is one `BundleError` line.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from tweetbot.runtime.errors import UserError
from tweetbot.runtime.model import CharRNN, from_config, model_config
from tweetbot.runtime.paths import BUNDLE
from tweetbot.runtime.sample import Sampler
from tweetbot.runtime.vocab import Vocab

FORMAT_VERSION = 1
WEIGHTS = "weights.msgpack"
VOCAB = "vocab.json"
MANIFEST = "manifest.json"


class BundleError(UserError):
    """The bundle is missing, corrupt or of another format; the message says which and how to fix it."""


@dataclass(frozen=True)
class Bundle:
    model: CharRNN
    variables: dict
    vocab: Vocab
    manifest: dict
    start_carry: tuple | None = None  # the state every sample starts from (None: zeros)

    @property
    def version(self) -> str:
        return self.manifest["version"]

    def sampler(self) -> Sampler:
        return Sampler(self.model, self.variables, self.vocab, self.start_carry)


def write(
    out_dir: Path,
    model: CharRNN,
    variables: dict,
    vocab: Vocab,
    *,
    metrics: dict[str, Any],
    train_params: dict[str, Any],
    data_stats: dict[str, Any],
    start_carry=None,
) -> dict:
    """Write the bundle into `out_dir` (created; an older bundle's files replaced); return its manifest."""
    if model.vocab_size != len(vocab):
        raise ValueError(f"model vocab_size {model.vocab_size} differs from the vocabulary's {len(vocab)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stored = variables if start_carry is None else {**variables, "start_carry": start_carry}
    weights = serialization.to_bytes(jax.device_get(stored))
    vocab_text = json.dumps(vocab.to_json(), ensure_ascii=False, indent=1) + "\n"
    manifest = {
        "format_version": FORMAT_VERSION,
        "model": model_config(model),
        "metrics": metrics,
        "train_params": train_params,
        "data": data_stats,
        "files": {WEIGHTS: _sha256(weights), VOCAB: _sha256(vocab_text.encode())},
    }
    manifest["version"] = _content_version(manifest)
    manifest["created"] = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        **{name: package_version(name) for name in ("tweetbot", "jax", "flax")},
    }
    (out_dir / WEIGHTS).write_bytes(weights)
    (out_dir / VOCAB).write_text(vocab_text)
    # The manifest goes last: a bundle interrupted half-way has no manifest that vouches for it.
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def load(path: Path = BUNDLE) -> Bundle:
    """Read and check the bundle in `path`; any problem is one BundleError line."""
    path = Path(path)
    fix = "run `dvc repro export` to write it"
    if not (path / MANIFEST).is_file():
        raise BundleError(f"no model bundle at {path} (no {MANIFEST}): {fix}")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        if manifest.get("format_version") != FORMAT_VERSION:
            raise BundleError(
                f"bundle {path} has format version {manifest.get('format_version')!r}, this tweetbot reads "
                f"{FORMAT_VERSION}: re-export it with this version"
            )
        blobs = {name: (path / name).read_bytes() for name in (WEIGHTS, VOCAB)}
        for name, blob in blobs.items():
            if _sha256(blob) != manifest["files"][name]:
                raise BundleError(f"bundle {path}: {name} does not match its manifest hash: {fix} again")
        vocab = Vocab.from_json(json.loads(blobs[VOCAB]))
        model = from_config(manifest["model"])
        variables = serialization.msgpack_restore(blobs[WEIGHTS])
        start_carry = variables.pop("start_carry", None)
        if start_carry is not None:
            start_carry = serialization.from_state_dict(jax.device_get(model.initial_carry(1)), start_carry)
    except BundleError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise BundleError(f"bundle {path} is unreadable ({type(error).__name__}: {error}): {fix} again") from None
    _check_shapes(path, model, variables, vocab, start_carry)
    variables = jax.tree_util.tree_map(jnp.asarray, variables)
    return Bundle(model=model, variables=variables, vocab=vocab, manifest=manifest, start_carry=start_carry)


def _check_shapes(path: Path, model: CharRNN, variables: dict, vocab: Vocab, start_carry) -> None:
    """The weights (and the start state) must have exactly the structure and shapes the manifest's model config
    builds."""
    if model.vocab_size != len(vocab):
        raise BundleError(f"bundle {path}: model vocab_size {model.vocab_size} != vocabulary size {len(vocab)}")
    expected = jax.eval_shape(model.init_variables, jax.random.key(0))
    shapes = jax.tree_util.tree_map(lambda x: tuple(x.shape), expected)
    found = jax.tree_util.tree_map(lambda x: tuple(getattr(x, "shape", ())), variables)
    carry = jax.tree_util.tree_map(np.shape, model.initial_carry(1))
    if shapes != found or (start_carry is not None and jax.tree_util.tree_map(np.shape, start_carry) != carry):
        raise BundleError(f"bundle {path}: the weights do not fit the model in its manifest: re-export it")


def _sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def _content_version(manifest: dict) -> str:
    """A short content hash of the files' hashes and the manifest's deterministic fields."""
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    return _sha256(canonical)[:16]
