"""The evaluate stage: what a reader of the bot sees, as DVC metrics.

    run(params.load("evaluate"), bundle=models/export, processed=data/processed, out=evaluation)

Validation loss says how well the model predicts the account's next character; it does not say whether its
posts read like the account's. This stage draws `evaluate.samples` posts from the exported bundle (sample i
with seed `seed + i`, at `temperature` and `top_p`, at most `max_length` characters), so the same model always
gets the same figures, and compares them with the account's posts:

- `real_words`: the share of the samples' words that occur as words in the training posts. A word is a run of
  letters (an apostrophe may join two), lower-cased; mentions, hashtags and links are set aside, since an
  account invents those all the time. Made-up words ("Remishinower") are what a reader notices first.
- `real_words_heldout`: the same share for the held-out (validation) posts: people make up words too (new
  names), so this is the level a person reaches, and the one to compare `real_words` with.
- `copy_rate`: the share of samples holding a run of 50 characters of a training post (tweetbot.copies): a
  bot that recites its account's posts leaks them. Export refuses a model above `export.max_copy_rate`.
- `eos_rate`: the share of samples that end by themselves (the model wrote the end-of-post symbol) rather than
  at the `max_length` cap.
- `length_median` and `length_median_account`: the median length in characters of the samples and of the
  training posts (a link or mention token counts as one character, as the model sees it), and `length_ks`,
  the Kolmogorov-Smirnov distance between the two length distributions (0: the same, 1: disjoint).

Outputs in `out`: `metrics.json` (the figures above, DVC metrics), `lengths.csv` (the share of samples and
of posts per length bin, a `dvc plots` view) and `samples.txt` (the samples as a reader sees them).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from tweetbot.copies import RUN, TrainingRuns, copy_rate
from tweetbot.corpus import decode_posts
from tweetbot.params import EvaluateParams
from tweetbot.runtime import bundle
from tweetbot.runtime.errors import UserError
from tweetbot.runtime.sample import Sampler, SampleRequest
from tweetbot.runtime.vocab import LINK, MENTION, Vocab, render

METRICS_FILE = "metrics.json"
LENGTHS_FILE = "lengths.csv"
SAMPLES_FILE = "samples.txt"
LENGTH_BIN = 20  # characters per bar of the length plot

# What is set aside before counting words: links (as tokens or written out), mentions and hashtags.
SET_ASIDE = re.compile(rf"[{LINK}{MENTION}]|(?:https?://|www\.)\S+|[@#]\w+")
WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")  # letters, with an apostrophe inside ("can't", "NASA's")


def words(text: str) -> list[str]:
    """The words of `text`, lower-cased, mentions, hashtags and links aside."""
    text = SET_ASIDE.sub(" ", text.replace("\u2019", "'")).lower()  # the typographic apostrophe is an apostrophe
    return WORD.findall(text)


def real_word_rate(texts: Iterable[str], known: set[str]) -> float:
    """The share of the words of `texts` that are in `known` (1.0 when they hold no word at all)."""
    found = [word in known for text in texts for word in words(text)]
    return float(np.mean(found)) if found else 1.0


def ks_distance(a: Sequence[float], b: Sequence[float]) -> float:
    """The Kolmogorov-Smirnov statistic: the largest gap between the empirical distribution functions."""
    a, b = np.sort(a), np.sort(b)
    points = np.concatenate([a, b])
    gaps = np.searchsorted(a, points, side="right") / len(a) - np.searchsorted(b, points, side="right") / len(b)
    return float(np.abs(gaps).max())


def draw(sampler: Sampler, params: EvaluateParams) -> list[str]:
    """The `params.samples` samples of the evaluation, with their fixed seeds."""
    requests = [
        SampleRequest(temperature=params.temperature, top_p=params.top_p, max_length=params.max_length, seed=seed)
        for seed in range(params.seed, params.seed + params.samples)
    ]
    return sampler.generate(requests)


def measure(
    samples: Sequence[str],
    train_posts: Sequence[str],
    val_posts: Sequence[str],
    runs: TrainingRuns,
    vocab: Vocab,
    max_length: int,
) -> dict:
    """The evaluation's figures (see the module doc) for `samples` of an account's model."""
    known = {word for post in train_posts for word in words(post)}
    lengths = [len(text) for text in samples]
    account = [len(post) for post in train_posts]
    return {
        "samples": len(samples),
        "real_words": round(real_word_rate(samples, known), 4),
        "real_words_heldout": round(real_word_rate(val_posts, known), 4),
        "copy_rate": round(copy_rate(samples, vocab, runs), 4),
        "eos_rate": round(float(np.mean([n < max_length for n in lengths])), 4),
        "length_median": float(np.median(lengths)),
        "length_median_account": float(np.median(account)),
        "length_ks": round(ks_distance(lengths, account), 4),
    }


def length_histogram(samples: Sequence[str], posts: Sequence[str], max_length: int) -> list[dict]:
    """The share of samples and of posts in each bin of LENGTH_BIN characters (longer posts in the last)."""
    edges = np.arange(0, max_length + LENGTH_BIN, LENGTH_BIN)

    def shares(texts):
        lengths = np.minimum([len(text) for text in texts], max_length)
        return np.histogram(lengths, bins=edges)[0] / len(texts)

    return [
        {"length": int(start), "samples": round(float(s), 4), "account": round(float(p), 4)}
        for start, s, p in zip(edges[:-1], shares(samples), shares(posts), strict=True)
    ]


def run(params: EvaluateParams, bundle_dir: Path, processed: Path, out: Path) -> dict:
    """Evaluate the bundle in `bundle_dir` against the posts in `processed/`; write `out/`; return the metrics."""
    exported = bundle.load(bundle_dir)
    processed = Path(processed)
    for name in ("train.npy", "val.npy", "vocab.json"):
        if not (processed / name).is_file():
            raise UserError(f"{processed / name} not found: run `dvc repro preprocess` first")
    if Vocab.load(processed / "vocab.json") != exported.vocab:
        raise UserError(f"{bundle_dir} was exported for other data than {processed}: run `dvc repro export`")
    train_tokens = np.load(processed / "train.npy")
    train_posts = decode_posts(train_tokens, exported.vocab)
    val_posts = decode_posts(np.load(processed / "val.npy"), exported.vocab)

    samples = draw(exported.sampler(), params)
    metrics = measure(samples, train_posts, val_posts, TrainingRuns(train_tokens), exported.vocab, params.max_length)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    with (out / LENGTHS_FILE).open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["length", "samples", "account"])
        writer.writeheader()
        writer.writerows(length_histogram(samples, train_posts, params.max_length))
    (out / SAMPLES_FILE).write_text("".join(render(text) + "\n\n" for text in samples))
    return metrics


def summary(out: Path) -> str:
    """The evaluation in a few lines, for `tweetbot summary`."""
    m = json.loads((Path(out) / METRICS_FILE).read_text())
    return "\n".join(
        [
            f"Evaluation ({out}, {m['samples']} samples)",
            f"  real words:  {m['real_words']:.1%} of the words written occur in the training posts "
            f"(held-out posts: {m['real_words_heldout']:.1%})",
            f"  copies:      {m['copy_rate']:.1%} of samples hold {RUN} characters in a row of a training post",
            f"  length:      median {m['length_median']:.0f} characters (the account's "
            f"{m['length_median_account']:.0f}), {m['eos_rate']:.0%} ended by themselves",
        ]
    )


POSTS_NEEDED = Path("benchmarks/results/posts_needed.json")  # benchmarks/posts_needed.py measures it


def posts_needed_summary(train_posts: int, table: Path = POSTS_NEEDED) -> str | None:
    """Where an account with `train_posts` training posts stands on the measured posts-needed table (None
    when the table is not there): real words written from scratch and from the base, against a person's."""
    if not Path(table).is_file():
        return None
    rows = json.loads(Path(table).read_text())["rows"]
    sizes = sorted({row["training posts"] for row in rows})
    starts = list(dict.fromkeys(row["start"] for row in rows))
    cell = {(row["training posts"], row["start"]): f"{row['real_words']:.1%}" for row in rows}
    person = {row["training posts"]: f"{row['real_words_heldout']:.1%}" for row in rows}
    below = [size for size in sizes if size <= train_posts]
    where = f"at least the {below[-1]:,} row" if below else f"below the smallest row ({sizes[0]:,})"
    lines = [
        f"Posts needed ({table}: real words at each size, the demo default on the demo's posts)",
        "  posts  " + "".join(f"{start:>18}" for start in starts) + f"{'held-out posts':>18}",
        *(
            f"  {size:>5,}  "
            + "".join(f"{cell.get((size, start), '-'):>18}" for start in starts)
            + f"{person[size]:>18}"
            for size in sizes
        ),
        f"  this account: {train_posts:,} training posts, {where}",
    ]
    return "\n".join(lines)
