"""The exported bundle: a faithful round trip, a content-hash version, one clear error for a bad bundle."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.tiny_bundle import TEXT, VOCAB, tiny_model, tiny_variables, write_tiny_bundle
from tweetbot.runtime import bundle
from tweetbot.runtime.bundle import BundleError
from tweetbot.runtime.errors import UserError


def logits_of(model, variables, text: str) -> np.ndarray:
    tokens = jnp.asarray(VOCAB.encode(text))[None, :]
    logits, _ = model.apply(variables, tokens, model.initial_carry(1))
    return np.asarray(logits)


def test_round_trip_gives_the_same_model_vocabulary_and_outputs(tmp_path):
    write_tiny_bundle(tmp_path / "b", seed=3)
    loaded = bundle.load(tmp_path / "b")
    model = tiny_model()
    assert loaded.model == model
    assert loaded.vocab == VOCAB
    np.testing.assert_array_equal(
        logits_of(loaded.model, loaded.variables, "the fox"),
        logits_of(model, tiny_variables(model, 3), "the fox"),
    )


def test_manifest_describes_the_model(tmp_path):
    manifest = bundle.load(write_tiny_bundle(tmp_path / "b")).manifest
    assert manifest["format_version"] == bundle.FORMAT_VERSION
    assert manifest["model"] == bundle.model_config(tiny_model())
    assert manifest["metrics"]["val_bpc"] == 2.5
    assert manifest["train_params"]["rnn_size"] == 8
    assert manifest["data"] == {"train_chars": len(TEXT)}
    assert set(manifest["created"]) >= {"at", "jax", "flax", "tweetbot"}
    assert len(manifest["version"]) == 16


def test_version_is_a_content_hash(tmp_path):
    first = bundle.load(write_tiny_bundle(tmp_path / "a", seed=0)).version
    again = bundle.load(write_tiny_bundle(tmp_path / "b", seed=0)).version  # written later: same content
    other = bundle.load(write_tiny_bundle(tmp_path / "c", seed=1)).version
    assert first == again
    assert other != first


def test_missing_bundle_is_one_clear_error(tmp_path):
    with pytest.raises(BundleError, match="no model bundle at .*: run `dvc repro export`"):
        bundle.load(tmp_path / "nowhere")
    assert issubclass(BundleError, UserError)  # the CLI prints it as one line, exit 2


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda d: (d / "weights.msgpack").write_bytes((d / "weights.msgpack").read_bytes()[:100]),
            "does not match",
        ),
        (lambda d: (d / "vocab.json").write_text('{"specials": [], "chars": []}'), "does not match"),
        (lambda d: (d / "weights.msgpack").unlink(), "unreadable"),
        (lambda d: (d / "manifest.json").write_text("{not json"), "unreadable"),
        (lambda d: (d / "manifest.json").write_text("[]"), "unreadable"),
    ],
    ids=["truncated-weights", "edited-vocab", "missing-weights", "manifest-not-json", "manifest-not-object"],
)
def test_damaged_bundle_is_one_clear_error(tmp_path, damage, message):
    path = write_tiny_bundle(tmp_path / "b")
    damage(path)
    with pytest.raises(BundleError, match=message):
        bundle.load(path)


def edit_manifest(path, **changes) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(changes)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_other_format_version_is_refused(tmp_path):
    path = write_tiny_bundle(tmp_path / "b")
    edit_manifest(path, format_version=99)
    with pytest.raises(BundleError, match="format version 99.*re-export"):
        bundle.load(path)


def test_weights_that_do_not_fit_the_model_are_refused(tmp_path):
    path = write_tiny_bundle(tmp_path / "b")
    edit_manifest(path, model={**bundle.model_config(tiny_model()), "rnn_size": 16})
    with pytest.raises(BundleError, match="do not fit the model"):
        bundle.load(path)


def test_writing_refuses_a_model_and_vocabulary_that_disagree(tmp_path):
    model = tiny_model().clone(vocab_size=len(VOCAB) + 1)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32), model.initial_carry(1))
    with pytest.raises(ValueError, match="vocab_size"):
        bundle.write(tmp_path / "b", model, variables, VOCAB, metrics={}, train_params={}, data_stats={})


def test_loading_needs_no_training_code(tmp_path):
    path = write_tiny_bundle(tmp_path / "b")
    probe = (
        "import sys; from tweetbot.runtime import bundle; b = bundle.load(sys.argv[1]); "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('optax', 'dvc', 'dvclive', 'tweepy') "
        "or m in ('tweetbot.train', 'tweetbot.checkpoint', 'tweetbot.corpus')); "
        "assert not heavy, heavy; print(b.version)"
    )
    result = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == bundle.load(path).version
