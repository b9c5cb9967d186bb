"""The preprocess stage: fetched posts in; cleaned, split, encoded arrays, a vocabulary and statistics out.

Each split is one 1-D uint16 array of the posts oldest first, each followed by EOS, as the model reads them.
A post's split depends on its id alone (a hash), so fetching more posts never moves an old one across, and
the vocabulary is the train split's (characters rarer than `min_char_count` there are UNK).
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from tweetbot.params import PreprocessParams
from tweetbot.posts import Post, read_posts
from tweetbot.runtime.errors import UserError
from tweetbot.runtime.vocab import EOS, LINK, MENTION, UNK, Vocab, render

# A link runs to the next space but leaves trailing punctuation to the sentence ("see https://nasa.gov.").
LINK_PATTERN = re.compile(r"(?:https?://|\bt\.co/)(?:\S*[^\s.,;:!?)\]}'\"’”])?")
MENTION_PATTERN = re.compile(r"(?<![\w@])@[A-Za-z0-9_]+")  # not the @ of an e-mail address
# Removed first, so a LINK or MENTION token (private-use characters) always means what it says.
PRIVATE_USE = re.compile("[\ue000-\uf8ff]")
SPACES = re.compile(r"[^\S\n]+")  # whitespace other than the line break
LINE_BREAKS = re.compile(r" ?\n\s*")  # a line break, the space before it, and all whitespace after it
UNEVEN_SPACE = re.compile(r"[^\S ]|  ")  # what SPACES or LINE_BREAKS would change: not one plain space
ENCODE_CHUNK = 20_000  # posts encoded at a time: bounds the memory of the intermediate arrays

STATS_FILE = "stats.json"
DROP_REASONS = ("retweets", "replies", "empty", "duplicates")


def clean_text(text: str, links: str = "keep", mentions: str = "keep") -> str:
    """The text as the model will see it; `links` and `mentions` are "keep", "drop" or "token".

    Each step runs only on a text it can change (an entity needs "&", a link "http" or "t.co/", NFC and the
    private-use range non-ASCII characters...): the same result, several times faster on a large store.
    """
    if "&" in text:  # X escapes &, < and > in every text it serves; some clients escaped them twice
        while (unescaped := html.unescape(text)) != text:
            text = unescaped
    if not text.isascii():
        text = PRIVATE_USE.sub("", unicodedata.normalize("NFC", text))
    # A token is one symbol: the model learns where a link goes, not the random characters of a t.co address.
    if links != "keep" and ("http" in text or "t.co/" in text):
        text = _replace(LINK_PATTERN, text, links, LINK)
    if mentions != "keep" and "@" in text:
        text = _replace(MENTION_PATTERN, text, mentions, MENTION)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if UNEVEN_SPACE.search(text):
        text = LINE_BREAKS.sub("\n", SPACES.sub(" ", text))
    return text.strip()


def _replace(pattern: re.Pattern, text: str, mode: str, token: str) -> str:
    if mode == "keep":
        return text
    return pattern.sub({"drop": "", "token": token}[mode], text)


def clean_posts(posts: Iterable[Post], params: PreprocessParams) -> tuple[dict[str, str], dict[str, int]]:
    """The cleaned texts by post id, oldest first, and how many posts each filter dropped. Of posts whose cleaned
    texts are the same, the oldest stays: fetching newer posts never changes which copy is kept."""
    texts: dict[str, str] = {}
    seen: set[str] = set()
    dropped = dict.fromkeys(DROP_REASONS, 0)
    for post in sorted(posts, key=_oldest_first):
        text = clean_text(post.text, params.links, params.mentions)
        if params.drop_retweets and post.is_retweet:
            dropped["retweets"] += 1
        elif params.drop_replies and post.is_reply:
            dropped["replies"] += 1
        elif not text:
            dropped["empty"] += 1
        elif text in seen:
            dropped["duplicates"] += 1
        else:
            seen.add(text)
            # Ids are unique within an id space; two files in one store may both have a post 1 (posts.identity)
            key = post.id if post.id not in texts else f"{post.id}@{post.origin}"
            texts[key] = text
    return texts, dropped


def _oldest_first(post: Post) -> tuple:
    return post.created_at, len(post.id), post.id, post.origin


def is_val(post_id: str, seed: int, val_fraction: float) -> bool:
    """Whether the post goes to the validation split: a function of the seed and the id alone."""
    digest = hashlib.sha256(f"{seed}:{post_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < val_fraction * 2**64


def split(texts: dict[str, str], seed: int, val_fraction: float) -> tuple[dict[str, str], dict[str, str]]:
    """The train and val parts of `texts` (by post id), each in the order of `texts`."""
    train, val = {}, {}
    for post_id, text in texts.items():
        (val if is_val(post_id, seed, val_fraction) else train)[post_id] = text
    return train, val


def build_vocab(texts: Iterable[str], min_count: int) -> Vocab:
    """`Vocab.build` of the texts, counting characters with numpy (a store of 300,000 posts is 30M characters)."""
    counts = np.zeros(0, dtype=np.int64)
    for chunk in _chunks(texts):
        points = _code_points("".join(chunk))
        chunk_counts = np.bincount(points)
        if len(chunk_counts) > len(counts):
            counts = np.pad(counts, (0, len(chunk_counts) - len(counts)))
        counts[: len(chunk_counts)] += chunk_counts
    kept = np.flatnonzero(counts >= max(min_count, 1))
    return Vocab(sorted(map(chr, kept.tolist()), key=lambda char: (-counts[ord(char)], char)))


def encode(texts: Iterable[str], vocab: Vocab) -> np.ndarray:
    """The texts as one uint16 array of ids, each text followed by EOS (what `Vocab.encode` gives, text by text)."""
    if len(vocab) > np.iinfo(np.uint16).max + 1:
        raise UserError(f"{len(vocab)} symbols do not fit uint16 ids: raise preprocess.min_char_count")
    table = np.full(max(map(ord, vocab.chars), default=0) + 2, UNK, dtype=np.uint16)  # the last slot: unknown
    for char, index in vocab.index.items():
        table[ord(char)] = index
    parts = []
    for chunk in _chunks(texts):
        points = np.minimum(_code_points("".join(chunk)), len(table) - 1)
        ends = np.cumsum([len(text) for text in chunk])
        parts.append(np.insert(table[points], ends, EOS))  # EOS after each text
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)


def _chunks(texts: Iterable[str]) -> Iterable[list[str]]:
    chunk = []
    for text in texts:
        chunk.append(text)
        if len(chunk) == ENCODE_CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32)


def run(params: PreprocessParams, raw_path: Path, out_dir: Path) -> dict:
    """Clean, split, build the vocabulary, encode, and write everything to `out_dir`; returns the stats."""
    posts = read_posts(raw_path)
    texts, dropped = clean_posts(posts, params)
    if not texts:
        raise UserError(_nothing_left_message(raw_path, len(posts), dropped))
    train, val = split(texts, params.seed, params.val_fraction)
    if not train or not val:
        empty = "val" if not val else "train"
        raise UserError(_empty_split_message(len(texts), params.val_fraction, empty))
    vocab = build_vocab(train.values(), min_count=params.min_char_count)
    train_ids, val_ids = encode(train.values(), vocab), encode(val.values(), vocab)

    val_chars = len(val_ids) - len(val)
    stats = {
        "posts_in": len(posts),
        "posts_kept": len(texts),
        **{f"dropped_{reason}": count for reason, count in dropped.items()},
        "train_posts": len(train),
        "val_posts": len(val),
        "train_chars": len(train_ids) - len(train),  # without the EOS after each post
        "val_chars": val_chars,
        "vocab_size": len(vocab),
        "val_unk_rate": round(int(np.count_nonzero(val_ids == UNK)) / val_chars, 6),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / "train.npy", train_ids)
    np.save(out_dir / "val.npy", val_ids)
    vocab.save(out_dir / "vocab.json")
    (out_dir / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n")
    print(
        f"preprocess: kept {len(texts):,} of {len(posts):,} posts; {len(train):,} train, {len(val):,} val;"
        f" vocabulary {len(vocab)}; unknown rate on val {stats['val_unk_rate']:.2%}"
    )
    return stats


def decode_posts(ids: np.ndarray, vocab: Vocab) -> list[str]:
    """The posts of an encoded split, in order (the inverse of `encode`, with UNK shown as U+FFFD)."""
    ends = np.flatnonzero(ids == EOS)
    starts = np.concatenate([[0], ends + 1])[:-1]
    return [vocab.decode(ids[start:end]) for start, end in zip(starts, ends, strict=True)]


def last_posts(ids: np.ndarray, vocab: Vocab, count: int) -> list[str]:
    """The last `count` posts of an encoded split, reading only its end (the split may be memory-mapped)."""
    tail = 4096
    while True:
        window = np.asarray(ids[-tail:])
        ends = np.flatnonzero(window == EOS)
        if len(ends) > count or tail >= len(ids):
            start = ends[-count - 1] + 1 if len(ends) > count else 0
            return decode_posts(window[start:], vocab)
        tail *= 4


def summary(out_dir: Path, examples: int = 2) -> str:
    """A few readable lines about the processed data, for `tweetbot summary`: counts and the newest posts."""
    out_dir = Path(out_dir)
    stats = json.loads((out_dir / STATS_FILE).read_text())
    train = np.load(out_dir / "train.npy", mmap_mode="r")  # only its last posts are read, whatever its size
    newest = last_posts(train, Vocab.load(out_dir / "vocab.json"), examples)
    dropped = ", ".join(f"{stats[f'dropped_{reason}']:,} {reason}" for reason in DROP_REASONS)
    lines = [
        f"Data ({out_dir})",
        f"  posts:      {stats['posts_kept']:,} kept of {stats['posts_in']:,} (dropped: {dropped})",
        f"  split:      {stats['train_posts']:,} train posts ({stats['train_chars']:,} characters),"
        f" {stats['val_posts']:,} val posts ({stats['val_chars']:,} characters)",
        f"  vocabulary: {stats['vocab_size']} symbols; val characters {stats['val_unk_rate']:.2%} unknown",
        "  newest training posts, cleaned:",
        *("    > " + render(text).replace("\n", "\n      ") for text in newest),
    ]
    return "\n".join(lines)


def _nothing_left_message(raw_path: Path, posts_in: int, dropped: dict[str, int]) -> str:
    if posts_in == 0:
        return f"{raw_path} holds no posts: check the fetch source in params.yaml and run `dvc repro fetch`"
    reasons = ", ".join(f"{count} {reason}" for reason, count in dropped.items() if count)
    return (
        f"no post of {posts_in} survived preprocessing ({reasons} dropped):"
        " set preprocess.drop_retweets / drop_replies to false in params.yaml, or fetch more posts"
    )


def _empty_split_message(posts_kept: int, val_fraction: float, empty: str) -> str:
    if not 0 < val_fraction < 1:
        return f"preprocess.val_fraction is {val_fraction}: set it between 0 and 1 (e.g. 0.1) in params.yaml"
    fix = "raise" if empty == "val" else "lower"
    return (
        f"the {empty} split is empty ({posts_kept} posts kept, preprocess.val_fraction {val_fraction}):"
        f" fetch more posts or {fix} preprocess.val_fraction in params.yaml"
    )
