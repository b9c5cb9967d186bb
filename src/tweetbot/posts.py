"""The Post record, the one normalisation every source goes through, and the JSON-lines store of posts.

`data/raw/tweets.jsonl` holds one post a line, newest first:

    {"id":"1013558869728071685","created_at":"2018-07-01T23:04:00Z","text":"...","is_retweet":false,
     "is_reply":false,"source":"x_api","origin":"x_api:nasa"}

`source` is the kind of source (x_api, archive, file, demo, mastodon, bluesky) and `origin` the account or file
the post came from (`x_api:nasa`, `mastodon:alice@mastodon.social`, `bluesky:did:plc:...`, `file:posts.csv`),
so one store can hold several accounts. Stores written before `origin` existed read back with it empty.

Ids are strings, as the sources give them: X and Mastodon ids are decimal numbers beyond 2**53 (a JSON number
would lose digits in most JSON readers), a Bluesky record key (TID) is decoded to its 64-bit number, and other
servers speaking the Mastodon API use letters (base-62 flake ids, ULIDs). Within one source a newer post has a
larger id, where "larger" is Mastodon's documented rule for its string ids: longer, or as long and after in
character order (`id_order`), which for canonical decimals is numeric order. Decimal ids are made canonical
("007" is "7") so the rule holds.

A post is identified by its id within its id space (`identity`): X ids are unique across X, so the X API, an
archive and the demo set (X posts) share one space and the same post from two of them is stored once; any other
origin is a space of its own (two files may both number their rows 1, 2, 3). The store is newest first by time,
then by id; the text is kept as the source gave it (cleaning is preprocess's job).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from tweetbot import atomic
from tweetbot.runtime.errors import UserError

CLASSIC_TIME_FORMAT = "%a %b %d %H:%M:%S %z %Y"  # v1.1 API and archives: Wed Oct 10 20:19:24 +0000 2018
X_SOURCES = frozenset({"x_api", "archive", "demo"})  # their ids are X's, unique across all of X
ID_PATTERN = re.compile(r"[!-~]{1,256}")  # visible ASCII, no spaces: what an id in a URL or a file can be
STORED_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


class Post(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str  # canonical: see `normalise_id`
    created_at: str  # ISO 8601 UTC to the second, e.g. "2018-07-01T23:04:00Z"
    text: str  # as the source gave it
    is_retweet: bool  # a retweet, or a boost / repost
    is_reply: bool
    source: str  # "x_api" | "archive" | "file" | "demo" | "mastodon" | "bluesky"
    origin: str = ""  # the account or file, e.g. "mastodon:alice@mastodon.social"


FIELDS = Post.__struct_fields__
_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Post)


def make_post(
    *,
    id: object,
    created_at: object,
    text: object,
    source: str,
    retweet: bool = False,
    reply: bool = False,
    origin: str = "",
) -> Post:
    """Normalise one post from any source; a bad field raises ValueError saying which (the caller adds where).

    `id` may be a string or an integer; `created_at` ISO 8601, the classic format or a datetime. A text
    starting with "RT @" is a retweet whatever the source said (old API versions and archives mark them so).
    """
    if not isinstance(text, str):
        raise ValueError(f"text is {type(text).__name__}, expected a string")
    return Post(
        id=normalise_id(id),
        created_at=normalise_time(created_at),
        text=text,
        is_retweet=bool(retweet) or text.startswith("RT @"),
        is_reply=bool(reply),
        source=source,
        origin=origin,
    )


def normalise_id(value: object) -> str:
    """A post id as a canonical string: decimals without leading zeros ("007" and 7 are both "7")."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, str):
        value = value.strip()
        if value.isdecimal() and value.isascii():
            return str(int(value))
        if ID_PATTERN.fullmatch(value):
            return value
    if isinstance(value, float):
        raise ValueError(f"id {value!r} is a float, which loses digits: write ids as strings")
    raise ValueError(f"id {value!r} is neither a non-negative whole number nor a string of letters and digits")


def id_order(post_id: str) -> tuple[int, str]:
    """The sort key of an id within its source: longer is newer, then character order (Mastodon's rule)."""
    return len(post_id), post_id


def identity(post: Post) -> tuple[str, str]:
    """What makes a post unique in the store: its id within its id space (see the module docstring)."""
    return ("x" if post.source in X_SOURCES else post.origin or post.source), post.id


def newest_ids(posts: Iterable[Post]) -> dict[str, str]:
    """The newest id of each id space (`identity`) among `posts`."""
    newest: dict[str, str] = {}
    for post in posts:
        if newer_than(post, newest):
            space, newest[space] = identity(post)
    return newest


def newer_than(post: Post, newest: dict[str, str]) -> bool:
    """Whether `post` is newer than the posts `newest` (`newest_ids`) was taken from: in an id space they did not
    have, or after its newest id there (ids are in time order within a space, never across spaces)."""
    space, post_id = identity(post)
    return space not in newest or id_order(post_id) > id_order(newest[space])


def normalise_time(value: object) -> str:
    """A timestamp as ISO 8601 UTC to the second; a time without a zone is taken as UTC."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        moment = _parse_time(value.strip())
    else:
        raise ValueError(f"created_at {value!r} is not a time")
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.replace(microsecond=0).isoformat() + "Z"  # isoformat: far faster than strftime


def _parse_time(text: str) -> datetime:
    # ISO 8601 first: it is what every API and most exports write, and fromisoformat is fast
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    try:
        return datetime.strptime(text, CLASSIC_TIME_FORMAT)
    except ValueError:
        raise ValueError(f"created_at {text!r} is neither ISO 8601 nor like 'Wed Oct 10 20:19:24 +0000 2018'") from None


def newest_first(posts: Iterable[Post]) -> list[Post]:
    """Unique by identity (a later post replaces an earlier one), newest first: by time, then by id."""
    by_identity = {identity(post): post for post in posts}
    return sorted(by_identity.values(), key=_time_then_id, reverse=True)


def _time_then_id(post: Post) -> tuple[str, int, str]:
    return post.created_at, len(post.id), post.id


def merge_posts(old: Iterable[Post], new: Iterable[Post]) -> list[Post]:
    """Old and new together, unique by identity (the new version wins), newest first."""
    return newest_first([*old, *new])


def read_posts(path: Path) -> list[Post]:
    """The posts of a store written by `write_posts`, newest first; a malformed line is a UserError."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} not found: run `dvc repro fetch` first")
    data = path.read_bytes()
    try:
        posts = _DECODER.decode_lines(data)  # the whole store at C speed
    except (msgspec.ValidationError, msgspec.DecodeError):
        posts = None
    if posts is None or not all(map(_as_written, posts)):
        posts = []  # edited by hand, or damaged: line by line, to name the line that is wrong
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
            try:
                if line.strip():
                    posts.append(_post_from_line(line))
            except ValueError as error:
                raise UserError(f"{path}:{number}: {error}: delete {path} and fetch again") from None
    return newest_first(posts)


def _as_written(post: Post) -> bool:
    """Whether a decoded post is in the canonical form `write_posts` writes (so it needs no normalising)."""
    post_id = post.id
    canonical_decimal = post_id.isdecimal() and post_id.isascii() and (post_id[0] != "0" or post_id == "0")
    return STORED_TIME.fullmatch(post.created_at) is not None and (
        canonical_decimal or normalise_id(post_id) == post_id
    )


def _post_from_line(line: str) -> Post:
    """One stored line checked field by field, for an error message that names what is wrong."""
    try:
        record = msgspec.json.decode(line)
    except msgspec.DecodeError as error:
        raise ValueError(f"not valid JSON ({error})") from None
    if not isinstance(record, dict) or not set(FIELDS) - {"origin"} <= set(record) <= set(FIELDS):
        raise ValueError(f"expected an object with exactly the keys {', '.join(FIELDS)}")
    for flag in ("is_retweet", "is_reply"):
        if not isinstance(record[flag], bool):
            raise ValueError(f"{flag} is {record[flag]!r}, expected true or false")
    for key in ("id", "text", "source", "origin"):
        if not isinstance(record.get(key, ""), str):
            raise ValueError(f"{key} {record[key]!r} must be a string")
    return make_post(
        id=record["id"],
        created_at=record["created_at"],
        text=record["text"],
        source=record["source"],
        retweet=record["is_retweet"],
        reply=record["is_reply"],
        origin=record.get("origin", ""),
    )


def write_posts(path: Path, posts: Iterable[Post]) -> None:
    """Replace the store at `path` with `posts`, unique by identity and newest first, atomically.

    The file is written beside its destination and renamed over it, so a reader (or a kill) sees either the
    old file or the new one, never half of one.
    """
    atomic.write_bytes(Path(path), _ENCODER.encode_lines(newest_first(posts)))
