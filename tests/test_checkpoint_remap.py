"""The live model remapped to a grown vocabulary (tweetbot.checkpoint.remapped), checked by its outputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tweetbot import checkpoint
from tweetbot.runtime.model import CharRNN
from tweetbot.runtime.vocab import UNK, Vocab

OLD = Vocab(["a", "b", "c"])
NEW = Vocab(["c", "🚀", "a", "b"])  # a new character, and the old ones in another order (new frequencies)


def saved_model(path) -> tuple[CharRNN, dict]:
    model = CharRNN(vocab_size=len(OLD), rnn_size=8, num_layers=1)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32), model.initial_carry(1))
    fields = {"vocab_size": len(OLD), "rnn_size": 8, "num_layers": 1}
    checkpoint.save(path, {"model": fields, "vocab_size": len(OLD)}, variables["params"])
    return model, variables


def remap_checkpoint(source, old: Vocab, new: Vocab, out) -> None:
    record = checkpoint.remapped(checkpoint.read(source), old, new)
    checkpoint.save(out, record["meta"], record["params"])


def logits(path, tokens: list[int]) -> np.ndarray:
    model, variables, _ = checkpoint.load_checkpoint(path)
    out, _ = model.apply(variables, jnp.asarray([tokens], jnp.int32), model.initial_carry(1))
    return np.asarray(out)[0]


def test_known_characters_keep_their_weights_and_a_new_one_starts_as_unknown(tmp_path):
    saved_model(tmp_path / "live.msgpack")
    remap_checkpoint(tmp_path / "live.msgpack", OLD, NEW, tmp_path / "init.msgpack")
    assert checkpoint.load_checkpoint(tmp_path / "init.msgpack")[2]["vocab_size"] == len(NEW) == len(OLD) + 1

    text = "cabba"
    before, after = (
        logits(tmp_path / "live.msgpack", OLD.encode(text)),
        logits(tmp_path / "init.msgpack", NEW.encode(text)),
    )
    for char in "abc":  # the same text gives the same score to every known next character
        np.testing.assert_allclose(after[:, NEW.index[char]], before[:, OLD.index[char]], rtol=1e-6)
    np.testing.assert_allclose(after[:, NEW.index["🚀"]], before[:, UNK], rtol=1e-6)  # the new one scores as <unk>

    # and reading the new character is reading <unk>, which is what the live model saw it as
    rocket = logits(tmp_path / "init.msgpack", NEW.encode("a🚀b").tolist())
    unknown = logits(tmp_path / "live.msgpack", [OLD.index["a"], UNK, OLD.index["b"]])
    np.testing.assert_allclose(rocket[:, NEW.index["b"]], unknown[:, OLD.index["b"]], rtol=1e-6)
