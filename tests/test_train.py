"""Training: TBPTT lanes, a run that learns, determinism, exact resume, fine-tuning, the NaN stop."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from tests.trainkit import tiny_params, write_data
from tweetbot import checkpoint, train
from tweetbot.input_pipeline import LENGTH_QUANTILES, Lanes, chars_left, eval_lanes, length_quantiles
from tweetbot.runtime.errors import UserError
from tweetbot.runtime.model import CharRNN
from tweetbot.runtime.vocab import EOS, Vocab


def test_lanes_are_contiguous_and_targets_are_the_next_character():
    tokens = np.arange(1000)
    lanes = Lanes(tokens, lanes=4, seq_length=10)
    assert lanes.windows_per_epoch == (999 // 4) // 10
    first, first_targets = lanes.window(0)
    second, _ = lanes.window(1)
    assert first.shape == (4, 10)
    np.testing.assert_array_equal(first_targets, first + 1)
    np.testing.assert_array_equal(second[:, 0], first[:, -1] + 1)  # each row continues where it stopped
    np.testing.assert_array_equal(first[:, 0], [0, 249, 498, 747])  # rows start far apart in the stream
    np.testing.assert_array_equal(lanes.window(lanes.windows_per_epoch)[0], first)  # the next epoch


def test_chars_left_counts_down_to_each_posts_end_and_lanes_cut_it_as_they_cut_the_tokens():
    stream = np.array([5, 6, 7, EOS, 8, EOS, EOS, 9, 9, 4, EOS, 3, 3])
    np.testing.assert_array_equal(chars_left(stream), [2, 1, 0, 1, 0, 0, 3, 2, 1, 0, 2, 1, 0])
    assert chars_left(stream)[stream == EOS].tolist() == [1, 0, 3, 2]  # after an EOS: the next post's length
    tokens = np.tile(stream, 20)
    lanes = Lanes(tokens, lanes=3, seq_length=4, with_chars_left=True)
    left = chars_left(tokens)
    for k in range(lanes.windows_per_epoch):
        inputs, targets, window_left = lanes.window(k)
        np.testing.assert_array_equal(window_left == 0, targets == EOS)  # 0 left: the next character is EOS
        for row in range(3):
            start = row * ((len(tokens) - 1) // 3) + k * 4
            np.testing.assert_array_equal(window_left[row], left[start : start + 4])
    assert len(lanes.all_windows()) == 3 and len(Lanes(tokens, 3, 4).all_windows()) == 2


def test_length_quantiles_are_the_posts_lengths():
    lengths = np.arange(1, 101)  # posts of 1..100 characters, each followed by EOS
    stream = np.concatenate([np.append(np.full(n, 7), EOS) for n in np.random.default_rng(0).permutation(lengths)])
    quantiles = length_quantiles(stream)
    assert len(quantiles) == LENGTH_QUANTILES and quantiles[0] == 1 and quantiles[-1] == 100
    assert abs(quantiles[LENGTH_QUANTILES // 2] - 50) <= 1
    with pytest.raises(UserError, match="no whole post"):
        length_quantiles(np.array([4, 5, 6]))


def test_a_split_too_small_for_the_lanes_is_a_clear_error():
    with pytest.raises(UserError, match="lower batch_size or seq_length"):
        Lanes(np.arange(100), lanes=8, seq_length=16)
    assert eval_lanes(np.arange(100), batch_size=8, seq_length=16).lanes == 6  # validation uses what fits


def test_carrying_the_state_across_windows_equals_one_long_window():
    """TBPTT reads a row window by window; the carried state makes that the same as reading it whole."""
    model = CharRNN(vocab_size=50, rnn_size=8, num_layers=2)
    variables = model.init(jax.random.key(0), np.zeros((1, 1), np.int32), model.initial_carry(1))
    lanes = Lanes(np.arange(200) % 50, lanes=2, seq_length=5)
    carry, logits = model.initial_carry(2), []
    for inputs, _ in list(lanes)[:3]:
        out, carry = model.apply(variables, inputs, carry)
        logits.append(out)
    whole, _ = model.apply(variables, lanes.rows[:, :15], model.initial_carry(2))
    np.testing.assert_allclose(np.concatenate(logits, axis=1), whole, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("data"))


DROPOUT = {"input_keep_prob": 0.9, "output_keep_prob": 0.8}  # so determinism covers the dropout keys too


def run(folder, data, **changes):
    metrics = train.run(tiny_params(**DROPOUT, **changes), data, folder / "checkpoints", folder / "live")
    return without_timing(metrics), folder


def without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "train_seconds"}


@pytest.fixture(scope="module")
def base(tmp_path_factory, data):
    """One tiny 30-step run that several tests read."""
    return run(tmp_path_factory.mktemp("base"), data)


def test_a_tiny_run_learns_and_logs_for_dvc(base, data):
    metrics, out = base
    vocab_size = len(json.loads((data / "vocab.json").read_text())["chars"]) + 2
    assert metrics["step"] == 30
    assert metrics["val_loss"] < 0.8 * np.log(vocab_size)  # well below guessing uniformly
    assert metrics["val_bpc"] == pytest.approx(metrics["val_loss"] / np.log(2))
    logged = json.loads((out / "live" / "metrics.json").read_text())
    assert {"val_loss", "val_bpc", "train_loss", "steps", "chars_per_second"} <= set(logged)
    assert logged["steps"] == 30
    curve = (out / "live" / "plots" / "metrics" / "val_loss.tsv").read_text().splitlines()
    assert [row.split("\t")[0] for row in curve] == ["step", "10", "20", "30"]
    assert (out / "live" / "plots" / "metrics" / "train_loss.tsv").exists()


def test_checkpoints_rebuild_the_model_that_scored_the_validation_loss(base, data):
    metrics, out = base
    model, variables, meta = checkpoint.load_checkpoint(out / "checkpoints" / "best.msgpack")
    assert meta["val_loss"] == metrics["best_val_loss"]
    assert meta["vocab_size"] == model.vocab_size and meta["train_params"]["rnn_size"] == model.rnn_size == 16
    val = np.load(data / "val.npy").astype(np.int32)
    windows = eval_lanes(val, 8, 16, with_chars_left=model.reads_length).all_windows()
    assert float(train.make_evaluate(model)(variables["params"], *windows)) == pytest.approx(meta["val_loss"], rel=1e-5)
    last = checkpoint.read(out / "checkpoints" / "last.msgpack")
    assert {"opt_state", "carry"} <= set(last) and last["meta"]["step"] == 30
    # The keys every checkpoint written so far has: a resume reads its progress back from them.
    progress = {"step", "chars_seen", "train_seconds", "best_val_loss", "train_loss", "val_loss", "val_bpc"}
    identity = {"format", "model", "train_params", "vocab_size", "data_hash"}
    assert set(last["meta"]) == set(meta) == identity | progress | {"chars_per_second"}


def test_same_data_params_and_seed_give_the_same_losses(tmp_path, base, data):
    again, _ = run(tmp_path, data)
    assert again == base[0]


def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(tmp_path, base, data, capsys):
    run(tmp_path, data, max_steps=20)  # stops at 20 as a killed run would ...
    resumed, out = run(tmp_path, data)  # ... and goes on from its last checkpoint to 30
    assert "resuming from" in capsys.readouterr().out
    assert resumed == base[0]
    steps = [row.split("\t")[0] for row in (out / "live/plots/metrics/val_loss.tsv").read_text().splitlines()]
    assert steps == ["step", "10", "20", "30"]
    # Other params start afresh instead.
    changed, _ = run(tmp_path, data, max_steps=10, learning_rate=0.02)
    assert "resuming" not in capsys.readouterr().out
    assert changed["step"] == 10


def test_a_resume_repairs_what_a_kill_tore_in_the_dvclive_files(tmp_path, base, data):
    run(tmp_path, data, max_steps=20)
    live = tmp_path / "live"
    (live / "metrics.json").write_text("")  # killed while DVCLive rewrote its summary ...
    curve = live / "plots" / "metrics" / "val_loss.tsv"
    curve.write_text(curve.read_text() + "30\t1.2")  # ... or appended a row
    resumed, out = run(tmp_path, data)
    assert resumed == base[0]
    steps = [row.split("\t")[0] for row in curve.read_text().splitlines()]
    assert steps == ["step", "10", "20", "30"]
    assert json.loads((live / "metrics.json").read_text())["steps"] == 30


def test_fine_tuning_starts_from_a_checkpoint(tmp_path, base, data):
    best = base[1] / "checkpoints" / "best.msgpack"
    tuned, _ = run(tmp_path, data, init_from=str(best), max_steps=10, learning_rate=0.001)
    assert tuned["val_loss"] < base[0]["val_loss"] + 0.05  # starts from the trained weights, not from scratch
    with pytest.raises(UserError, match="does not match"):
        run(tmp_path / "wrong", data, init_from=str(best), rnn_size=32)


def test_a_start_that_names_its_vocabulary_is_remapped_to_the_datas(tmp_path, base, data):
    vocab = Vocab.load(data / "vocab.json")
    live = Vocab(reversed(vocab.chars[:-1]))  # the live model's: another order, and without the rarest character
    record = checkpoint.remapped(checkpoint.read(base[1] / "checkpoints" / "best.msgpack"), vocab, live)
    checkpoint.save(tmp_path / "live.msgpack", record["meta"], record["params"])
    assert record["meta"]["vocab"] == live.chars and record["meta"]["vocab_size"] == len(vocab) - 1
    tuned, _ = run(tmp_path, data, init_from=str(tmp_path / "live.msgpack"), max_steps=10, learning_rate=0.001)
    assert tuned["val_loss"] < base[0]["val_loss"] + 0.05  # the trained weights, each character's where it belongs


def test_a_model_with_position_input_fine_tunes_one_without_it(tmp_path, data):
    """A live model from before train.position_input starts an update whose params have it: its weights, and a
    position embedding of zeros, so it scores the text as it did."""
    before, old = run(tmp_path / "old", data, position_input=False)
    best = old / "checkpoints" / "best.msgpack"
    tuned, out = run(tmp_path, data, init_from=str(best), max_steps=10, learning_rate=0.001, position_input=True)
    assert tuned["val_loss"] < before["val_loss"] + 0.05
    model, _, _ = checkpoint.load_checkpoint(out / "checkpoints" / "best.msgpack")
    assert model.position_input


def test_a_model_with_length_input_keeps_its_posts_lengths_and_fine_tunes_one_without_it(tmp_path, data):
    plain, plain_out = run(tmp_path / "plain", data, length_input=False)
    metrics, out = run(tmp_path / "length", data, length_input=True)
    model, variables, _ = checkpoint.load_checkpoint(out / "checkpoints" / "best.msgpack")
    assert model.length_quantiles == length_quantiles(np.load(data / "train.npy"))
    assert np.abs(variables["params"]["chars_left"]["embedding"]).max() > 0  # it learned to read them
    assert metrics["val_loss"] < plain["val_loss"]  # knowing where a post ends helps to predict it
    assert train.score(out / "checkpoints" / "best.msgpack", np.load(data / "val.npy")) == pytest.approx(
        metrics["best_val_loss"], rel=1e-5
    )
    best = plain_out / "checkpoints" / "best.msgpack"
    tuned, _ = run(tmp_path / "tuned", data, init_from=str(best), max_steps=10, learning_rate=0.001, length_input=True)
    assert tuned["val_loss"] < plain["val_loss"] + 0.05  # the trained weights, reading no length at first


def test_auto_matmul_dtype_is_bfloat16_only_where_the_chip_has_bf16_units(tmp_path, base):
    amx, avx2 = tmp_path / "amx", tmp_path / "avx2"
    amx.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    avx2.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma f16c\n")
    on_cpu = jax.default_backend() == "cpu"
    assert train.resolved_matmul_dtype("auto", amx) == "bfloat16"
    assert train.resolved_matmul_dtype("auto", avx2) == ("float32" if on_cpu else "bfloat16")
    assert train.resolved_matmul_dtype("auto", tmp_path / "none") == ("float32" if on_cpu else "bfloat16")
    assert train.resolved_matmul_dtype("bfloat16", avx2) == "bfloat16"
    assert train.resolved_matmul_dtype("float32", amx) == "float32"
    # The checkpoint (and so the bundle and the service) holds what "auto" chose, not "auto".
    model, _, meta = checkpoint.load_checkpoint(base[1] / "checkpoints" / "best.msgpack")
    assert meta["train_params"]["matmul_dtype"] == "auto"
    assert model.matmul_dtype == train.resolved_matmul_dtype("auto")


def test_a_diverging_run_stops_with_one_clear_line(tmp_path, data):
    with pytest.raises(train.NonFiniteLoss, match="lower learning_rate") as error:
        run(tmp_path, data, learning_rate=float("inf"))  # too large a step, as far as it goes
    assert "\n" not in str(error.value)


def test_a_time_budget_stops_training_and_the_bar_ends_where_it_stopped(tmp_path, data, capsys):
    budget = run(tmp_path, data, max_steps=100_000, eval_every=25, time_budget_s=0.5)[0]
    assert 0 < budget["step"] < 100_000
    bar = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert f"{budget['step']}/{budget['step']}" in bar  # not .../100000: the budget, not max_steps, ended it
    last = checkpoint.read(tmp_path / "checkpoints" / "last.msgpack")["meta"]
    assert last["train_seconds"] >= 0.5

    longer = run(tmp_path, data, max_steps=100_000, eval_every=25, time_budget_s=1.0)[0]
    assert "resuming from" in capsys.readouterr().out  # a stopping rule may change: the run goes on
    assert budget["step"] < longer["step"] < 100_000
    assert checkpoint.read(tmp_path / "checkpoints" / "last.msgpack")["meta"]["train_seconds"] >= 1.0
