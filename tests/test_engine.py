"""The slots of continuous batching (service/engine.py): rows that join, end and leave at any chunk write what they
write alone, with the sampler's tiny random model (tests/test_sample.py)."""

from __future__ import annotations

import logging
from itertools import pairwise

import jax
import pytest

from service.engine import Engine
from tests.test_sample import tiny_sampler
from tweetbot.runtime.errors import UserError
from tweetbot.runtime.sample import STREAM_CHUNK, Sampler, SampleRequest


@pytest.fixture(scope="module")
def sampler() -> Sampler:
    return tiny_sampler()


MIXED = [
    SampleRequest(prime="over", temperature=0.9, top_p=0.9, max_length=50, seed=11),
    SampleRequest(max_length=200, seed=1),
    SampleRequest(prime="lazy", temperature=0.0, max_length=90),
    SampleRequest(temperature=2.0, top_k=3, max_length=7, seed=11),
    SampleRequest(prime="T", temperature=0.5, max_length=140, seed=5),
    SampleRequest(top_p=0.3, max_length=33, seed=99),
    SampleRequest(prime="dog", max_length=1, seed=2),
]


def run_engine(engine: Engine, requests, join_every: int) -> tuple[list[str], list[int]]:
    """Every request through `engine`, one joining every `join_every` chunks (or at once when it idles) while a
    slot is free; the texts and the busy rows of each chunk."""
    texts, waiting, busy = [""] * len(requests), list(enumerate(requests)), []
    while waiting or engine.busy:
        if waiting and engine.free and (len(busy) % join_every == 0 or not engine.busy):
            index, request = waiting.pop(0)
            engine.add(request, owner=index)
        busy.append(engine.busy)
        for index, text, _ in engine.advance():
            texts[index] += text
    return texts, busy


@pytest.mark.parametrize("join_every", [1, 3])
def test_engine_rows_joining_at_any_chunk_write_what_they_write_alone(sampler, join_every):
    alone = [sampler.generate([request])[0] for request in MIXED]
    texts, busy = run_engine(Engine(sampler, slots=3), MIXED, join_every)
    assert texts == alone
    assert any(0 < before < after for before, after in pairwise(busy))  # rows joined running ones
    assert len(busy) < sum(-(-(len(r.prime) + r.max_length) // STREAM_CHUNK) for r in MIXED)  # shared chunks


def test_engine_frees_a_slot_as_soon_as_its_row_ends():
    no_end = tiny_sampler(eos_bias=-1e9)  # only max_length stops a row: how many chunks it takes is known
    engine = Engine(no_end, slots=2)
    engine.add(SampleRequest(max_length=STREAM_CHUNK * 3), owner="long")
    engine.add(SampleRequest(prime="the", max_length=STREAM_CHUNK - 3), owner="short")  # ends in chunk 1
    first = {owner: ended for owner, _, ended in engine.advance()}
    assert first == {"long": False, "short": True}
    assert (engine.busy, engine.free) == (1, 1)
    engine.add(SampleRequest(max_length=5), owner="next")  # the short row's slot, while "long" runs on
    assert {owner: ended for owner, _, ended in engine.advance()} == {"long": False, "next": True}


def test_engine_drop_leaves_the_other_rows_as_they_were(sampler):
    engine = Engine(sampler, slots=2)
    engine.add(MIXED[1], owner="kept")
    engine.add(SampleRequest(max_length=500, seed=8), owner="dropped")
    text = "".join(t for owner, t, _ in engine.advance() if owner == "kept")
    engine.drop("dropped")
    assert engine.busy == 1
    while engine.busy:
        ((owner, written, _),) = engine.advance()
        text += written
    assert text == sampler.generate([MIXED[1]])[0]


def test_engine_checks_requests_and_slots(sampler):
    engine = Engine(sampler, slots=1)
    with pytest.raises(UserError, match="top_p"):
        engine.add(SampleRequest(top_p=0.0), owner=1)
    engine.add(SampleRequest(), owner=1)
    with pytest.raises(ValueError, match="slot"):
        engine.add(SampleRequest(), owner=2)
    with pytest.raises(UserError, match="slots"):
        Engine(sampler, slots=65)


def test_a_server_warmup_compiles_the_engine_programs_only(caplog):
    fresh = tiny_sampler()
    fresh.warmup(batch_sizes=(1, 2), one_shot=False)
    with jax.log_compiles(), caplog.at_level(logging.WARNING):
        run_engine(Engine(fresh, slots=2), MIXED[:4], join_every=2)  # batch sizes 1 and 2
    assert [r.getMessage() for r in caplog.records if "ompil" in r.getMessage()] == []
    with jax.log_compiles(), caplog.at_level(logging.WARNING):
        fresh.generate([SampleRequest()])
    assert any("Compiling" in r.getMessage() for r in caplog.records)  # the one-shot program was left out
