"""The batched sampler against a step-by-step reference, with a tiny randomly initialised model."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

from tweetbot import checkpoint
from tweetbot.cli import app
from tweetbot.runtime.errors import UserError
from tweetbot.runtime.model import CharRNN
from tweetbot.runtime.sample import Sampler, SampleRequest, filter_logits
from tweetbot.runtime.vocab import EOS, UNK, Vocab

TEXT = "the quick brown fox jumps over the lazy dog. THE END!"


def tiny_sampler(eos_bias: float = -4.0, position_input: bool = False) -> Sampler:
    """A random 1-layer model; `eos_bias` on the head's EOS logit sets how soon samples end."""
    vocab = Vocab.build([TEXT])
    model = CharRNN(len(vocab), rnn_size=16, num_layers=1, position_input=position_input)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 1), jnp.int32), model.initial_carry(1))
    # A random model is close to uniform; sharpen it so greedy and sampled texts differ clearly.
    variables = jax.tree.map(lambda w: 4 * w, variables)
    variables["params"]["head"]["bias"] = variables["params"]["head"]["bias"].at[EOS].set(eos_bias)
    if position_input:  # it starts at zeros, which would read like no position at all
        shape = variables["params"]["position"]["embedding"].shape
        variables["params"]["position"]["embedding"] = jax.random.normal(jax.random.key(1), shape)
    return Sampler(model, variables, vocab)


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "position_input"])
def sampler(request) -> Sampler:
    return tiny_sampler(position_input=request.param)


def greedy_reference(sampler: Sampler, prime: str, length: int) -> str:
    """Greedy decoding one model call at a time, as the module docstring defines it (UNK never written)."""
    apply = jax.jit(sampler.model.apply)
    carry = sampler.model.initial_carry(1)
    token, out = EOS, []
    for char in prime:
        _, carry = apply(sampler.variables, jnp.array([[token]]), carry)
        token = sampler.vocab.index[char]
    for _ in range(length):
        logits, carry = apply(sampler.variables, jnp.array([[token]]), carry)
        token = int(jnp.argmax(logits[0, -1].at[UNK].set(-jnp.inf)))  # never UNK
        if token == EOS:
            break
        out.append(token)
    return sampler.vocab.decode(out)


def test_temperature_zero_is_greedy(sampler):
    expected = greedy_reference(sampler, "the ", 40)
    texts = sampler.generate([SampleRequest(prime="the ", temperature=0.0, max_length=40, seed=s) for s in (1, 2)])
    assert texts == [expected, expected]
    assert len(expected) > 5  # the test means something only if greedy text goes on for a while


def test_top_k_one_is_greedy(sampler):
    greedy = sampler.generate([SampleRequest(prime="fox", temperature=0.0, max_length=40)])
    top1 = sampler.generate([SampleRequest(prime="fox", temperature=1.5, top_k=1, max_length=40, seed=7)])
    assert top1 == greedy


def test_same_seed_same_text_and_seeds_differ(sampler):
    requests = [SampleRequest(max_length=60, seed=seed) for seed in (3, 3, 4)]
    first, again, other = sampler.generate(requests)
    assert first == again
    assert first != other
    assert sampler.generate(requests[:1]) == [first]


def test_a_request_writes_the_same_alone_or_batched(sampler):
    request = SampleRequest(prime="over", temperature=0.9, top_p=0.9, max_length=50, seed=11)
    others = [
        SampleRequest(),
        SampleRequest(prime="lazy", temperature=0.0),
        SampleRequest(temperature=2.0, top_k=3, max_length=7, seed=11),
        SampleRequest(prime="T", temperature=0.5, max_length=64, seed=5),
        SampleRequest(top_p=0.3, seed=99),
        SampleRequest(prime="dog", max_length=1, seed=2),
        SampleRequest(temperature=1.2, seed=11),
    ]
    (alone,) = sampler.generate([request])
    batched = sampler.generate(others[:3] + [request] + others[3:])
    assert batched[3] == alone
    assert len(set(batched)) > 4  # the batch-mates really were different requests


def test_stream_joined_equals_generate(sampler):
    requests = [
        SampleRequest(prime="jumps", temperature=0.8, max_length=100, seed=1),
        SampleRequest(max_length=70, seed=2),
        SampleRequest(prime="q", temperature=0.0, max_length=90),
    ]
    chunks = list(sampler.stream(requests))
    assert len(chunks) > 1
    joined = ["".join(parts) for parts in zip(*chunks, strict=True)]
    assert joined == sampler.generate(requests)


def test_max_length_caps_the_text():
    no_end = tiny_sampler(eos_bias=-1e9)  # EOS is never drawn, so only max_length stops a row
    texts = no_end.generate([SampleRequest(prime="a", max_length=n, seed=n) for n in (1, 17, 64)])
    assert [len(t) for t in texts] == [1, 17, 64]


def test_eos_ends_every_row_and_the_stream():
    always_end = tiny_sampler(eos_bias=1e9)
    requests = [
        SampleRequest(prime="the", max_length=280, seed=1),
        SampleRequest(temperature=0.0, max_length=280),
    ]
    assert always_end.generate(requests) == ["", ""]
    assert list(always_end.stream(requests)) == [["", ""]]  # finished after the first chunk, not 280 steps


def test_sampling_follows_the_model_distribution(sampler):
    """The first character of 512 seeds against the model's softmax, and top-k keeps only the top k."""
    logits, _ = sampler.model.apply(sampler.variables, jnp.array([[EOS]]), sampler.model.initial_carry(1))
    probs = np.asarray(jax.nn.softmax(logits[0, 0].at[UNK].set(-jnp.inf)))  # UNK is never drawn
    plain = {"temperature": 1.0, "top_p": 1.0}  # the model's own distribution, not the default sampling's
    texts = sampler.generate([SampleRequest(max_length=1, seed=seed, **plain) for seed in range(512)])
    counts = np.bincount([EOS if t == "" else sampler.vocab.index[t] for t in texts], minlength=len(probs))
    assert np.abs(counts / 512 - probs).max() < 0.06
    top3 = set(np.argsort(-probs)[:3])
    texts = sampler.generate([SampleRequest(max_length=1, top_k=3, seed=seed, **plain) for seed in range(64)])
    assert {EOS if t == "" else sampler.vocab.index[t] for t in texts} == top3


def test_filter_logits_matches_a_plain_reference():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 12)).astype(np.float32) * 3
    top_k = np.array([0, 1, 3, 0, 5], np.int32)
    top_p = np.array([1.0, 1.0, 1.0, 0.6, 0.5], np.float32)
    kept = np.isfinite(np.asarray(filter_logits(jnp.asarray(logits), jnp.asarray(top_k), jnp.asarray(top_p))))
    for row in range(5):
        order = np.argsort(-logits[row])
        if top_k[row]:
            order = order[: top_k[row]]
        probs = np.exp(logits[row, order] - logits[row, order].max())
        probs /= probs.sum()
        nucleus = order[: np.searchsorted(np.cumsum(probs), top_p[row] - 1e-6) + 1]
        assert set(np.flatnonzero(kept[row])) == set(nucleus), row


def test_bad_requests_are_user_errors_that_say_what_is_wrong(sampler):
    with pytest.raises(UserError, match=r"'Z'.*'€'|'€'.*'Z'"):
        sampler.generate([SampleRequest(prime="Zoo €")])
    for bad, word in [
        (SampleRequest(temperature=-1), "temperature"),
        (SampleRequest(temperature=float("nan")), "temperature"),
        (SampleRequest(top_k=-2), "top_k"),
        (SampleRequest(top_p=0.0), "top_p"),
        (SampleRequest(max_length=0), "max_length"),
        (SampleRequest(max_length=5000), "max_length"),
        (SampleRequest(seed=-1), "seed"),
        (SampleRequest(prime="the " * 20), "prime"),
    ]:
        with pytest.raises(UserError, match=word):
            sampler.generate([SampleRequest(), bad])


def test_after_warmup_no_request_of_that_batch_size_compiles(caplog):
    fresh = tiny_sampler()
    fresh.warmup(batch_sizes=(1,))
    with jax.log_compiles(), caplog.at_level(logging.WARNING):
        fresh.generate([SampleRequest(prime="dog", max_length=n) for n in (1, 64, 200, 1000)][:1])
        fresh.generate([SampleRequest(max_length=300)])
        fresh.generate([SampleRequest(prime="lazy dog", max_length=1000)])
        list(fresh.stream([SampleRequest(prime="the", max_length=100)]))
    compiles = [r.getMessage() for r in caplog.records if "ompil" in r.getMessage()]
    assert compiles == []


def test_cli_prints_samples_from_a_checkpoint(tmp_path):
    trained = tiny_sampler()
    model = trained.model
    fields = {"vocab_size": model.vocab_size, "rnn_size": model.rnn_size, "num_layers": model.num_layers}
    checkpoint.save(tmp_path / "best.msgpack", {"model": fields}, trained.variables["params"])
    trained.vocab.save(tmp_path / "vocab.json")
    files = ["--checkpoint", str(tmp_path / "best.msgpack"), "--vocab", str(tmp_path / "vocab.json")]
    runner = CliRunner()

    shown = runner.invoke(app, ["sample", "--n", "3", "--prime", "the", "--temperature", "0", "--length", "30", *files])
    assert shown.exit_code == 0, shown.output
    greedy = "the" + greedy_reference(trained, "the", 30)
    assert shown.output == f"{greedy}\n\n" * 3

    bad = runner.invoke(app, ["sample", "--prime", "Zebra", *files])
    assert isinstance(bad.exception, UserError) and "'Z'" in str(bad.exception)
