"""The preprocess stage: cleaning, filters, the split by post id, the vocabulary and the encoded arrays."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
import unicodedata
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests.conftest import REPO
from tweetbot import corpus
from tweetbot.cli import app
from tweetbot.params import PreprocessParams
from tweetbot.posts import make_post, write_posts
from tweetbot.runtime.errors import UserError
from tweetbot.runtime.vocab import EOS, LINK, MENTION, UNK, Vocab, render


def post(id: int, text: str, *, retweet: bool = False, reply: bool = False):
    """A post whose time follows its id, as on X."""
    created_at = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(minutes=id)
    return make_post(id=id, created_at=created_at, text=text, source="file", retweet=retweet, reply=reply)


def keep_all(**changes) -> PreprocessParams:
    return PreprocessParams(drop_retweets=False, links="keep", mentions="keep", min_char_count=1, **changes)


# --- cleaning -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Q&amp;A &lt;3 &gt;&gt;", "Q&A <3 >>"),
        ("twice escaped: &amp;amp; and &amp;lt;", "twice escaped: & and <"),
        ("a rocket &#128640;", "a rocket 🚀"),
        ("AT&T stays", "AT&T stays"),
    ],
)
def test_html_entities_are_unescaped_until_none_are_left(raw, clean):
    assert corpus.clean_text(raw) == clean


def test_unicode_is_nfc_and_emoji_stay_characters():
    decomposed = "Cafe\u0301 on the \u2018Moon\u2019 👩‍🚀🌑"
    assert corpus.clean_text(decomposed) == "Caf\u00e9 on the \u2018Moon\u2019 👩\u200d🚀🌑"


def test_whitespace_is_collapsed_but_single_line_breaks_stay():
    raw = "  Launch\t \u00a0today!  \r\n\r\n\n   Watch:\nlive  \n"
    assert corpus.clean_text(raw) == "Launch today!\nWatch:\nlive"


LINKED = "Read https://t.co/AbC123xyZ9, then http://nasa.gov/mars?a=1&b=2. Or t.co/Q1w2E3r4T5 https://t.co/…"


@pytest.mark.parametrize(
    ("mode", "clean"),
    [
        ("keep", LINKED),
        ("drop", "Read , then . Or"),
        ("token", f"Read {corpus.LINK}, then {corpus.LINK}. Or {corpus.LINK} {corpus.LINK}"),
    ],
)
def test_links_are_kept_dropped_or_one_token(mode, clean):
    assert corpus.clean_text(LINKED, links=mode) == clean


MENTIONED = "@NASA_Johnson and @astro_ricky: mail me@example.com"


@pytest.mark.parametrize(
    ("mode", "clean"),
    [
        ("keep", MENTIONED),
        ("drop", "and : mail me@example.com"),
        ("token", f"{corpus.MENTION} and {corpus.MENTION}: mail me@example.com"),
    ],
)
def test_mentions_are_kept_dropped_or_one_token_but_not_email_addresses(mode, clean):
    assert corpus.clean_text(MENTIONED, mentions=mode) == clean


def test_a_token_always_means_a_link_or_a_mention():
    text = corpus.clean_text(f"stray {corpus.LINK}{corpus.MENTION} symbols", links="token", mentions="token")
    assert text == "stray symbols"


def test_render_shows_tokens_as_a_reader_expects():
    text = corpus.clean_text("Hi @NASA, see https://t.co/AbC123xyZ9", links="token", mentions="token")
    assert len(text) == len("Hi , see ") + 2
    assert render(text) == "Hi @user, see https://t.co/…"


# --- filters ----------------------------------------------------------------------------------------------


def test_filters_drop_and_count_retweets_replies_empty_and_duplicates():
    posts = [
        post(1, "Liftoff! https://t.co/AAAAAAAAAA"),
        post(2, "RT @NASA_Johnson: a podcast"),
        post(3, "@someone thanks!", reply=True),
        post(4, "https://t.co/BBBBBBBBBB"),
        post(5, "Liftoff!   https://t.co/CCCCCCCCCC"),  # the same text once the link is a token
        post(6, "Liftoff! &amp; more"),
    ]
    params = PreprocessParams(drop_retweets=True, drop_replies=True, links="token")
    texts, dropped = corpus.clean_posts(reversed(posts), params)  # the store is newest first
    assert texts == {"1": f"Liftoff! {corpus.LINK}", "4": corpus.LINK, "6": "Liftoff! & more"}
    assert dropped == {"retweets": 1, "replies": 1, "empty": 0, "duplicates": 1}

    texts, dropped = corpus.clean_posts(posts, PreprocessParams(drop_retweets=False, links="drop"))
    assert list(texts) == ["1", "2", "3", "6"]
    assert dropped == {"retweets": 0, "replies": 0, "empty": 1, "duplicates": 1}


def test_posts_come_oldest_first_and_the_oldest_copy_of_a_duplicate_is_kept():
    posts = [
        make_post(id=9, created_at="2020-01-03T00:00:00Z", text="same", source="file"),
        make_post(id=10, created_at="2020-01-02T00:00:00Z", text="same", source="file"),
        make_post(id=200, created_at="2020-01-01T00:00:00Z", text="other", source="file"),
    ]  # neither the id's number nor its string order is the order in time
    texts, _ = corpus.clean_posts(posts, keep_all())
    assert list(texts.items()) == [("200", "other"), ("10", "same")]


# --- the split --------------------------------------------------------------------------------------------

post_ids = st.integers(min_value=0, max_value=2**63).map(str)


@given(old=st.sets(post_ids, max_size=60), new=st.sets(post_ids, max_size=60), seed=st.integers(0, 2**31))
def test_fetching_more_posts_never_moves_an_old_post_between_splits(old, new, seed):
    before = corpus.split(dict.fromkeys(sorted(old), "x"), seed, 0.3)
    after = corpus.split(dict.fromkeys(sorted(new) + sorted(old), "x"), seed, 0.3)
    assert set(before[1]) == set(after[1]) & old
    assert set(before[0]) == set(after[0]) & old


def test_val_fraction_is_respected_and_the_seed_changes_the_split():
    ids = [str(1_000_000_000_000_000_000 + i) for i in range(20_000)]
    for fraction in (0.05, 0.1, 0.3):
        train, val = corpus.split(dict.fromkeys(ids, "x"), seed=0, val_fraction=fraction)
        assert len(train) + len(val) == len(ids)
        assert abs(len(val) / len(ids) - fraction) < 0.01
    other_seed = corpus.split(dict.fromkeys(ids, "x"), seed=1, val_fraction=0.3)[1]
    overlap = len(set(val) & set(other_seed)) / len(val)
    assert 0.2 < overlap < 0.4  # independent draws: about val_fraction of val is shared


# --- vocabulary and encoding ------------------------------------------------------------------------------


def test_encoding_ends_every_post_with_eos_and_round_trips():
    texts = ["abc 🚀", "b\nc", "cab"]
    vocab = Vocab.build(texts)
    ids = corpus.encode(texts, vocab)
    assert ids.dtype == np.uint16 and ids.ndim == 1
    assert len(ids) == sum(map(len, texts)) + len(texts)
    assert np.flatnonzero(ids == EOS).tolist() == [5, 9, 13]
    assert corpus.decode_posts(ids, vocab) == texts


def test_rare_characters_become_unk():
    vocab = Vocab.build(["aaab", "ab"], min_count=2)
    ids = corpus.encode(["abz"], vocab)
    assert ids.tolist() == [vocab.index["a"], vocab.index["b"], UNK, EOS]
    assert corpus.decode_posts(ids, vocab) == ["ab\ufffd"]


# --- the stage --------------------------------------------------------------------------------------------


def test_run_writes_arrays_vocabulary_and_stats(tmp_path):
    # Every kept post ends in a character of its own (too rare for the vocabulary), every 7th is a retweet.
    posts = [post(i, f"post {i} &amp; {chr(0x4E00 + i)}" if i % 7 else "RT @x: no") for i in range(1, 201)]
    posts.append(post(500, posts[0].text))  # a later copy of the first post
    raw, out = tmp_path / "tweets.jsonl", tmp_path / "processed"
    write_posts(raw, posts)
    params = PreprocessParams(val_fraction=0.2, seed=7, drop_retweets=True, min_char_count=3)
    stats = corpus.run(params, raw, out)

    texts, _ = corpus.clean_posts(posts, params)
    assert texts["1"] == "post 1 & \u4e01" and "500" not in texts
    train_texts, val_texts = (list(part.values()) for part in corpus.split(texts, seed=7, val_fraction=0.2))
    vocab = Vocab.load(out / "vocab.json")
    assert vocab == Vocab.build(train_texts, min_count=3) and "\u4e01" not in vocab.index
    for part, expected in (("train", train_texts), ("val", val_texts)):
        decoded = corpus.decode_posts(np.load(out / f"{part}.npy"), vocab)
        assert decoded == [text[:-1] + "\ufffd" for text in expected]
    assert stats == json.loads((out / "stats.json").read_text())
    val_chars = sum(map(len, val_texts))
    assert stats == {
        "posts_in": 201,
        "posts_kept": 201 - 28 - 1,
        "dropped_retweets": 28,
        "dropped_replies": 0,
        "dropped_empty": 0,
        "dropped_duplicates": 1,
        "train_posts": len(train_texts),
        "val_posts": len(val_texts),
        "train_chars": sum(map(len, train_texts)),
        "val_chars": val_chars,
        "vocab_size": len(vocab),
        "val_unk_rate": round(len(val_texts) / val_chars, 6),  # one unknown character a post
    }


@pytest.mark.parametrize(
    ("posts", "params", "message"),
    [
        ([], PreprocessParams(), r"holds no posts: check the fetch source"),
        (
            [post(1, "RT @a: x"), post(2, "RT @b: y")],
            PreprocessParams(),
            r"no post of 2 survived.*drop_retweets",
        ),
        ([post(1, "https://t.co/AAAAAAAAAA")], PreprocessParams(links="drop"), r"1 empty dropped"),
        ([post(i, f"p{i}") for i in range(1, 4)], keep_all(val_fraction=0.01), r"val split is empty.*raise"),
        (
            [post(i, f"p{i}") for i in range(1, 4)],
            keep_all(val_fraction=0.99),
            r"train split is empty.*lower",
        ),
        ([post(1, "a"), post(2, "b")], keep_all(val_fraction=0), r"set it between 0 and 1"),
    ],
)
def test_data_that_cannot_make_two_splits_is_a_user_error(tmp_path, posts, params, message):
    write_posts(tmp_path / "tweets.jsonl", posts)
    with pytest.raises(UserError, match=message):
        corpus.run(params, tmp_path / "tweets.jsonl", tmp_path / "processed")
    assert not (tmp_path / "processed").exists()


def test_the_stage_script_reports_a_missing_input_in_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text("preprocess:\n  seed: 1\n")
    result = subprocess.run(
        [sys.executable, str(REPO / "stages/preprocess.py"), "missing.jsonl", "processed"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: missing.jsonl not found: run `dvc repro fetch` first"]


# --- real data --------------------------------------------------------------------------------------------


def nasa_posts(corpora):
    """The shared NASA corpus as the fetch stage stores it (replies start with @ there)."""
    lines = (corpora / "nasa_tweets.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return [
        make_post(id=r["id"], created_at=r["created_at"], text=r["text"], source="file", reply=r["text"][0] == "@")
        for r in records
    ]


def test_run_on_the_nasa_corpus(corpora, tmp_path):
    posts = nasa_posts(corpora)
    params = PreprocessParams(drop_retweets=True, drop_replies=True, links="token", mentions="keep")
    write_posts(tmp_path / "all.jsonl", posts)
    stats = corpus.run(params, tmp_path / "all.jsonl", tmp_path / "all")

    assert stats["posts_in"] == 3245
    assert stats["dropped_retweets"] == 873  # as the corpus README counts them
    assert stats["dropped_replies"] == 145 - sum(p.is_retweet and p.is_reply for p in posts)
    assert stats["posts_kept"] == 3245 - sum(v for k, v in stats.items() if k.startswith("dropped_"))
    assert stats["train_posts"] + stats["val_posts"] == stats["posts_kept"]
    assert 0.07 < stats["val_posts"] / stats["posts_kept"] < 0.13
    assert 0 < stats["val_unk_rate"] < 0.01
    vocab = Vocab.load(tmp_path / "all" / "vocab.json")
    assert corpus.LINK in vocab.index and "&" in vocab.index and "🚀" in vocab.index
    train_texts = corpus.decode_posts(np.load(tmp_path / "all" / "train.npy"), vocab)
    assert not any("&amp;" in text or "https://" in text or text.startswith("RT @") for text in train_texts)

    # The older two thirds first, then everything: no post of the first run changes split.
    older = sorted(posts, key=lambda p: p.created_at)[: 2 * len(posts) // 3]
    write_posts(tmp_path / "older.jsonl", older)
    corpus.run(params, tmp_path / "older.jsonl", tmp_path / "older")
    before, after = decoded_splits(tmp_path / "older"), decoded_splits(tmp_path / "all")
    assert before["val"] and before["val"] <= after["val"]
    assert before["train"] <= after["train"]


def decoded_splits(out_dir):
    """Each split's posts in lowercase letters only: the two runs' vocabularies differ in rare characters."""
    vocab = Vocab.load(out_dir / "vocab.json")
    splits = {}
    for part in ("train", "val"):
        texts = corpus.decode_posts(np.load(out_dir / f"{part}.npy"), vocab)
        splits[part] = {re.sub("[^a-z ]", "", text) for text in texts}
    return splits


def test_summary_shows_counts_and_examples(corpora, tmp_path):
    write_posts(tmp_path / "tweets.jsonl", nasa_posts(corpora)[:400])
    stats = corpus.run(PreprocessParams(), tmp_path / "tweets.jsonl", tmp_path / "processed")
    runner = CliRunner()

    no_bundle = str(tmp_path / "no-bundle")  # never the workspace's models/export
    shown = runner.invoke(
        app, ["summary", "--processed", str(tmp_path / "processed"), "--bundle", no_bundle, "--evaluation", no_bundle]
    )
    assert shown.exit_code == 0, shown.output
    assert f"{stats['posts_kept']:,} kept of 400" in shown.output
    assert f"{stats['vocab_size']} symbols" in shown.output
    assert "https://t.co/…" in shown.output and corpus.LINK not in shown.output

    missing = runner.invoke(app, ["summary", "--processed", str(tmp_path / "nothing")])
    assert isinstance(missing.exception, UserError) and "run `dvc repro` first" in str(missing.exception)


# --- the fast paths give what the plain definitions give ----------------------------------------------------

texts = st.lists(st.text(st.characters(codec="utf-8") | st.sampled_from(" \n\t\r&;#@:/.htps")), max_size=20)


def clean_every_step(text: str, links: str, mentions: str) -> str:
    """The cleaning of the module docstring with every step applied to every text (no shortcuts)."""
    while (unescaped := html.unescape(text)) != text:
        text = unescaped
    text = corpus.PRIVATE_USE.sub("", unicodedata.normalize("NFC", text))
    text = text if links == "keep" else corpus.LINK_PATTERN.sub({"drop": "", "token": LINK}[links], text)
    text = text if mentions == "keep" else corpus.MENTION_PATTERN.sub({"drop": "", "token": MENTION}[mentions], text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return corpus.LINE_BREAKS.sub("\n", corpus.SPACES.sub(" ", text)).strip()


@given(texts, st.sampled_from(["keep", "drop", "token"]), st.sampled_from(["keep", "drop", "token"]))
def test_clean_text_is_every_step_applied(samples, links, mentions):
    for text in samples + [f"see https://x.co/{t} @{t}" for t in samples]:
        assert corpus.clean_text(text, links, mentions) == clean_every_step(text, links, mentions)


@given(texts, st.integers(1, 3))
def test_vocabulary_and_encoding_are_those_of_vocab_one_text_at_a_time(samples, min_count):
    vocab = corpus.build_vocab(samples, min_count)
    assert vocab == Vocab.build(samples, min_count)
    expected = [part for text in samples for part in (vocab.encode(text), [EOS])]
    assert corpus.encode(samples, vocab).tolist() == (np.concatenate(expected).tolist() if expected else [])
