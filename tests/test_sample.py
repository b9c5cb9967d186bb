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
from tweetbot.runtime.sample import Sampler, SampleRequest, filter_logits, post_length
from tweetbot.runtime.vocab import EOS, UNK, Vocab

TEXT = "the quick brown fox jumps over the lazy dog. THE END!"


def tiny_sampler(eos_bias: float = -4.0, position_input: bool = False, length_input: bool = False) -> Sampler:
    """A random 1-layer model; `eos_bias` on the head's EOS logit sets how soon samples end. With `length_input`
    its posts are 20 to 40 characters long, so each seed asks for another length."""
    vocab = Vocab.build([TEXT])
    lengths = tuple(range(20, 41, 5)) if length_input else ()
    model = CharRNN(len(vocab), rnn_size=16, num_layers=1, position_input=position_input, length_quantiles=lengths)
    variables = jax.jit(model.init_variables)(jax.random.key(0))
    # A random model is close to uniform; sharpen it so greedy and sampled texts differ clearly.
    variables = jax.tree.map(lambda w: 4 * w, variables)
    variables["params"]["head"]["bias"] = variables["params"]["head"]["bias"].at[EOS].set(eos_bias)
    for name in ("position", "chars_left"):  # they start at zeros, which would read like no input at all
        if name in variables["params"]:
            shape = variables["params"][name]["embedding"].shape
            variables["params"][name]["embedding"] = jax.random.normal(jax.random.key(1), shape)
    return Sampler(model, variables, vocab)


@pytest.fixture(scope="module", params=["plain", "position_input", "length_input"])
def sampler(request) -> Sampler:
    return tiny_sampler(**({request.param: True} if request.param != "plain" else {}))


def greedy_reference(sampler: Sampler, prime: str, length: int, seed: int = 0) -> str:
    """Greedy decoding one model call at a time, as the module docstring defines it (UNK never written); a model
    that reads lengths is told at step t that `post_length - t` characters are left."""
    apply = jax.jit(sampler.model.apply)
    carry = sampler.model.initial_carry(1)
    request = SampleRequest(prime=prime, max_length=length, seed=seed)
    post = post_length(sampler.model.length_quantiles, request) if sampler.model.reads_length else None

    def chars_left(t: int):
        return {"chars_left": jnp.array([[max(post - t, 0)]])} if post else {}

    token, out = EOS, []
    for t, char in enumerate(prime):
        _, carry = apply(sampler.variables, jnp.array([[token]]), carry, **chars_left(t))
        token = sampler.vocab.index[char]
    for t in range(len(prime), len(prime) + length):
        logits, carry = apply(sampler.variables, jnp.array([[token]]), carry, **chars_left(t))
        token = int(jnp.argmax(logits[0, -1].at[UNK].set(-jnp.inf)))  # never UNK
        if token == EOS:
            break
        out.append(token)
    return sampler.vocab.decode(out)


def test_temperature_zero_is_greedy(sampler):
    texts = sampler.generate([SampleRequest(prime="the ", temperature=0.0, max_length=40, seed=s) for s in (1, 2)])
    assert texts == [greedy_reference(sampler, "the ", 40, seed=s) for s in (1, 2)]
    assert min(len(text) for text in texts) > 5  # the test means something only if greedy text goes on a while
    if not sampler.model.reads_length:  # for a model that does, the seed chooses the post's length
        assert texts[0] == texts[1]


def test_top_k_one_is_greedy(sampler):
    greedy = sampler.generate([SampleRequest(prime="fox", temperature=0.0, max_length=40, seed=7)])
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
    # A model that reads lengths is told, at max_length 1, that one character is left.
    chars_left = {"chars_left": jnp.array([[1]])} if sampler.model.reads_length else {}
    logits, _ = sampler.model.apply(sampler.variables, jnp.array([[EOS]]), sampler.model.initial_carry(1), **chars_left)
    probs = np.asarray(jax.nn.softmax(logits[0, 0].at[UNK].set(-jnp.inf)))  # UNK is never drawn
    plain = {"temperature": 1.0, "top_p": 1.0}  # the model's own distribution, not the default sampling's
    texts = sampler.generate([SampleRequest(max_length=1, seed=seed, **plain) for seed in range(512)])
    counts = np.bincount([EOS if t == "" else sampler.vocab.index[t] for t in texts], minlength=len(probs))
    assert np.abs(counts / 512 - probs).max() < 0.06
    top3 = set(np.argsort(-probs)[:3])
    texts = sampler.generate([SampleRequest(max_length=1, top_k=3, seed=seed, **plain) for seed in range(64)])
    assert {EOS if t == "" else sampler.vocab.index[t] for t in texts} == top3


def test_a_post_length_is_drawn_from_the_quantiles_and_fits_the_request():
    quantiles = tuple(range(100, 421, 10))  # 33 quantiles: lengths spread evenly over 100..420
    lengths = [post_length(quantiles, SampleRequest(seed=seed, max_length=1000)) for seed in range(2000)]
    assert lengths == [post_length(quantiles, SampleRequest(seed=seed, max_length=1000)) for seed in range(2000)]
    assert min(lengths) >= 100 and max(lengths) <= 420
    assert abs(np.median(lengths) - 260) < 10 and abs(np.quantile(lengths, 0.25) - 180) < 10
    primed = [post_length(quantiles, SampleRequest(prime="x" * 50, seed=seed, max_length=20)) for seed in range(50)]
    assert set(primed) <= set(range(51, 71))  # longer than its prime, at most prime + max_length
    longer = {post_length(quantiles, SampleRequest(prime="x" * 64, seed=seed)) for seed in range(200)}
    assert min(longer) >= 100  # a short prime does not shorten the post


def test_a_model_that_reads_lengths_writes_posts_of_the_lengths_it_draws():
    """A model wired to end exactly when it is told no characters are left, and never otherwise, writes posts of
    the lengths `post_length` draws: the sampler tells it the right count at every step."""
    sampler = tiny_sampler(length_input=True)
    params = jax.tree.map(np.array, sampler.variables["params"])
    hidden = sampler.model.rnn_size
    unit_0 = [0, hidden, 2 * hidden, 3 * hidden]  # hidden unit 0's gates i, f, g, o
    # Unit 0 reads only input feature 0, which only "0 characters left" sets: then h_0 = tanh(1), else 0.
    params["embed"]["embedding"][:, 0] = 0.0
    params["chars_left"]["embedding"][:, 0] = 0.0
    params["chars_left"]["embedding"][0, 0] = 100.0
    params["w_x_0"][:, unit_0] = 0.0
    params["w_x_0"][0, [0, 2 * hidden, 3 * hidden]] = 1.0
    params["w_h_0"][:, unit_0] = 0.0
    params["b_0"][unit_0] = [0.0, -100.0, 0.0, 0.0]  # no forget: unit 0 holds only the present step
    # The EOS logit: -300, or +460 when unit 0 is on; unit 0 moves no other logit.
    params["head"]["kernel"][0, :] = 0.0
    params["head"]["kernel"][0, EOS] = 1000.0
    params["head"]["bias"][EOS] = -300.0
    wired = Sampler(sampler.model, {"params": jax.tree.map(jnp.asarray, params)}, sampler.vocab)
    requests = [SampleRequest(seed=seed, max_length=200) for seed in range(8)]
    requests += [SampleRequest(prime="the", seed=3, max_length=200), SampleRequest(seed=4, max_length=10)]
    lengths = [post_length(sampler.model.length_quantiles, r) - len(r.prime) for r in requests]
    assert len(set(lengths)) > 3 and lengths[-1] == 10  # the seeds ask for several lengths; max_length caps them
    assert [len(text) for text in wired.generate(requests)] == lengths
    assert ["".join(parts) for parts in zip(*wired.stream(requests[:4]), strict=True)] == wired.generate(requests[:4])


def plain_filter(logits: np.ndarray, top_k: int, top_p: float) -> tuple[set[int], set[int]]:
    """What `filter_logits` keeps of one row, in float64 by sorting: the logits from the k-th largest up, then the
    shortest run from the top whose probability reaches top_p, widened to every logit tied with its last. Also the
    ones a float32 sum may place either way: within the top k, with larger ones that weigh within 1e-5 of top_p."""
    if top_k:
        logits = np.where(logits >= np.sort(logits)[::-1][min(top_k, len(logits)) - 1], logits, -np.inf)
    probs = np.exp(logits.astype(np.float64) - logits.max())
    probs /= probs.sum()
    order = np.argsort(-logits, kind="stable")
    above = np.empty_like(probs)
    above[order] = np.cumsum(probs[order]) - probs[order]  # the probability of the logits before each in order
    first_of_its_value = np.array([above[logits == value].min() for value in logits])  # a tie counts as its first
    kept = (first_of_its_value < top_p) & (probs > 0)
    unsure = (np.abs(first_of_its_value - top_p) < 1e-5) & (probs > 0)
    return set(np.flatnonzero(kept)), set(np.flatnonzero(unsure))


@pytest.mark.parametrize("ties", [False, True])
def test_filter_logits_matches_a_plain_reference(ties):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(64, 97)).astype(np.float32) * rng.uniform(0.1, 20, size=(64, 1)).astype(np.float32)
    logits[2:4] /= np.abs(logits[2:4]).max(axis=-1, keepdims=True) / 3  # none so unlikely that a sum rounds it off
    if ties:  # whole numbers: many ties, some of them at a cut
        logits = np.round(logits)
    logits[:, 3] = -np.inf  # as `draw` sets the unknown symbol's
    top_k = np.where(rng.random(64) < 0.5, 0, rng.integers(1, 97, 64)).astype(np.int32)
    top_p = np.where(rng.random(64) < 0.3, 1.0, rng.uniform(0.05, 1, 64)).astype(np.float32)
    top_k[:2], top_p[:2] = 0, 1.0  # rows that ask for no cut beside rows that do
    top_k[2:4], top_p[2:4] = 1000, 1.0  # as the service allows: a k past the vocabulary keeps every logit
    kept = np.isfinite(np.asarray(filter_logits(jnp.asarray(logits), jnp.asarray(top_k), jnp.asarray(top_p))))
    for row in range(64):
        expected, unsure = plain_filter(logits[row], top_k[row], top_p[row])
        assert set(np.flatnonzero(kept[row])) ^ expected <= unsure, row
    assert not kept[:, 3].any()


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
