"""The export stage: best checkpoint -> bundle, and the quality gate against the unigram baseline."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from tests.tiny_bundle import TEXT, VOCAB, tiny_model, tiny_variables
from tweetbot import checkpoint, export
from tweetbot.params import ExportParams
from tweetbot.runtime import bundle
from tweetbot.runtime.errors import UserError
from tweetbot.runtime.sample import Sampler, SampleRequest
from tweetbot.runtime.vocab import EOS, UNK

REPO = Path(__file__).resolve().parents[1]
POSTS = [TEXT, "the lazy fox", "0123 #nasa", "quick quick brown dog"]


def train_tokens(posts=POSTS) -> np.ndarray:
    return np.concatenate([np.append(VOCAB.encode(post), EOS) for post in posts]).astype(np.int32)


BASELINE = export.unigram_bpc(train_tokens())
FEW = 8  # samples for the copy gate: enough to test it, few enough to be quick


def make_inputs(tmp_path: Path, val_bpc: float) -> tuple[Path, Path]:
    """A best checkpoint scoring `val_bpc` and the processed folder it was trained on."""
    model = tiny_model()
    meta = {
        "model": bundle.model_config(model),
        "train_params": {"model": "lstm", "rnn_size": 8, "num_layers": 1, "max_steps": 10},
        "vocab_size": len(VOCAB),
        "step": 10,
        "val_loss": val_bpc * np.log(2),
        "val_bpc": val_bpc,
        "train_loss": 1.0,
    }
    best = tmp_path / "models" / "checkpoints" / "best.msgpack"
    checkpoint.save(best, meta, tiny_variables(model)["params"])
    processed = tmp_path / "data" / "processed"
    processed.mkdir(parents=True)
    VOCAB.save(processed / "vocab.json")
    np.save(processed / "train.npy", train_tokens())
    (tmp_path / "params.yaml").write_text(f"export:\n  min_improvement_bpc: 0.5\n  copy_samples: {FEW}\n")
    return best, processed


def run_stage(tmp_path: Path, best: Path, processed: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "stages" / "export.py"), str(best), str(processed), "models/export"]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=False)


def test_unigram_baseline_is_the_entropy_of_the_characters():
    assert export.unigram_bpc(np.array([0, 1, 2, 3] * 5)) == pytest.approx(2.0)
    assert export.unigram_bpc(np.array([7] * 9)) == pytest.approx(0.0)
    assert export.unigram_bpc(np.array([0, 0, 0, 1])) == pytest.approx(0.8112781)


def test_a_model_that_beats_the_baseline_is_exported(tmp_path):
    best, processed = make_inputs(tmp_path, val_bpc=BASELINE - 1.0)
    result = run_stage(tmp_path, best, processed)
    assert result.returncode == 0, result.stderr
    exported = bundle.load(tmp_path / "models" / "export")
    assert result.stdout.startswith(f"exported model {exported.version}")
    manifest = exported.manifest
    assert manifest["metrics"]["val_bpc"] == pytest.approx(BASELINE - 1.0)
    assert manifest["metrics"]["improvement_bpc"] == pytest.approx(1.0, abs=1e-3)
    assert manifest["metrics"]["step"] == 10
    assert manifest["metrics"]["copy_rate"] == 0.0
    assert manifest["train_params"]["max_steps"] == 10
    assert manifest["data"] == {
        "train_chars": train_tokens().size,
        "train_posts": len(POSTS),
        "vocab_size": len(VOCAB),
        "unigram_bpc": round(BASELINE, 4),
    }
    assert exported.vocab == VOCAB


def test_samples_start_from_the_state_after_the_training_posts(tmp_path):
    """The bundle holds the state after reading the end of the training posts, and its samples start from it, as
    a post in training starts after another one, where the zero state would start them out of place."""
    best, processed = make_inputs(tmp_path, val_bpc=BASELINE - 1.0)
    export.run(ExportParams(copy_samples=FEW), best, processed, tmp_path / "b")
    exported = bundle.load(tmp_path / "b")
    model, variables = exported.model, exported.variables
    _, expected = model.apply(variables, train_tokens()[None, :-1], model.initial_carry(1))  # up to the last EOS
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), exported.start_carry, expected)
    assert np.abs(exported.start_carry[0][1]).max() > 0.01  # not the zero state
    # Greedy from that state, one step at a time, is what the bundle's sampler writes; from zeros it is not.
    carry, token, greedy = exported.start_carry, EOS, []
    for _ in range(40):
        logits, carry = model.apply(variables, np.array([[token]]), carry)
        token = int(np.argmax(_no_unk(logits[0, -1])))
        if token == EOS:
            break
        greedy.append(token)
    requests = [SampleRequest(temperature=0.0, max_length=40)]
    assert exported.sampler().generate(requests) == [VOCAB.decode(greedy)]
    assert Sampler(model, variables, exported.vocab).generate(requests) != [VOCAB.decode(greedy)]


def _no_unk(logits) -> np.ndarray:
    logits = np.array(logits)
    logits[UNK] = -np.inf  # the sampler never writes the unknown symbol
    return logits


def test_a_model_no_better_than_the_baseline_is_refused_in_one_line(tmp_path):
    best, processed = make_inputs(tmp_path, val_bpc=BASELINE - 0.2)
    result = run_stage(tmp_path, best, processed)
    assert result.returncode == 2
    assert result.stderr.startswith("error: export refused: validation ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "min_improvement_bpc" in result.stderr
    assert not (tmp_path / "models" / "export" / "manifest.json").exists()


def test_the_gate_follows_its_parameter(tmp_path):
    best, processed = make_inputs(tmp_path, val_bpc=BASELINE - 0.2)
    export.run(ExportParams(min_improvement_bpc=0.1, copy_samples=FEW), best, processed, tmp_path / "loose")
    with pytest.raises(UserError, match="export refused"):
        export.run(ExportParams(min_improvement_bpc=0.3), best, processed, tmp_path / "strict")


def test_a_model_that_recites_its_training_posts_is_refused_in_one_line(tmp_path):
    best, processed = make_inputs(tmp_path, val_bpc=BASELINE - 1.0)
    p = ExportParams(copy_samples=FEW)
    # The training posts are what this model writes at the gate's seeds: whatever it samples, it copies. The posts
    # after them fill the characters its start state is read from, so the samples do not change that state.
    model, variables, last = tiny_model(), tiny_variables(tiny_model()), POSTS * 20
    assert train_tokens(last).size > export.WARM_UP + 1
    start = export.start_carry(model, variables, train_tokens(last))
    samples = Sampler(model, variables, VOCAB, start).generate(
        [SampleRequest(temperature=p.copy_temperature, seed=seed) for seed in range(p.copy_samples)]
    )
    long_enough = sum(len(sample) >= 50 for sample in samples)
    assert 0 < long_enough < len(samples)
    np.save(processed / "train.npy", train_tokens(samples + last))
    result = run_stage(tmp_path, best, processed)
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"error: export refused: {long_enough / FEW:.1%} of {FEW} samples (temperature 0.8) copy"
    )
    assert result.stderr.count("\n") == 1 and "export.max_copy_rate" in result.stderr
    assert not (tmp_path / "models" / "export" / "manifest.json").exists()
    manifest = export.run(dataclasses.replace(p, max_copy_rate=long_enough / FEW), best, processed, tmp_path / "loose")
    assert manifest["metrics"]["copy_rate"] == long_enough / FEW


def test_a_vocabulary_that_does_not_fit_the_checkpoint_is_a_user_error(tmp_path):
    best, processed = make_inputs(tmp_path, val_bpc=1.0)
    (processed / "vocab.json").write_text('{"specials": ["<eos>", "<unk>"], "chars": ["a", "b"]}')
    with pytest.raises(UserError, match="dvc repro train"):
        export.run(ExportParams(), best, processed, tmp_path / "out")


def test_missing_inputs_are_user_errors(tmp_path):
    best, processed = make_inputs(tmp_path, val_bpc=1.0)
    (processed / "train.npy").unlink()
    with pytest.raises(UserError, match="train.npy not found"):
        export.run(ExportParams(), best, processed, tmp_path / "out")
    with pytest.raises(UserError, match="no checkpoint"):
        export.run(ExportParams(), tmp_path / "nothing.msgpack", processed, tmp_path / "out")
