"""The Post record, the one normalisation every source goes through, and the JSON-lines store of posts.

`data/raw/tweets.jsonl` holds one post a line, newest first, unique by id:

    {"id": "1013558869728071685", "created_at": "2018-07-01T23:04:00Z", "text": "...",
     "is_retweet": false, "is_reply": false, "source": "x_api"}

Ids are decimal strings: X ids exceed 2**53, so a JSON number would lose digits in most JSON readers. X ids
grow with time, so "newest first" is "largest id first". The text is kept as the source gave it (HTML entities
still escaped); cleaning is preprocess's job.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from tweetbot import atomic
from tweetbot.runtime.errors import UserError

CLASSIC_TIME_FORMAT = "%a %b %d %H:%M:%S %z %Y"  # v1.1 API and archives: Wed Oct 10 20:19:24 +0000 2018
FIELDS = ("id", "created_at", "text", "is_retweet", "is_reply", "source")


@dataclass(frozen=True)
class Post:
    id: str  # decimal string
    created_at: str  # ISO 8601 UTC, e.g. "2018-07-01T23:04:00Z"
    text: str  # as the source gave it
    is_retweet: bool
    is_reply: bool
    source: str  # "x_api" | "archive" | "file" | "demo"


def make_post(
    *, id: object, created_at: object, text: object, source: str, retweet: bool = False, reply: bool = False
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
    )


def normalise_id(value: object) -> str:
    """A post id as a canonical decimal string ("007" and 7 are both "7")."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, str) and value.strip().isdecimal() and value.strip().isascii():
        return str(int(value))
    if isinstance(value, float):
        raise ValueError(f"id {value!r} is a float, which loses digits: write ids as strings")
    raise ValueError(f"id {value!r} is not a non-negative whole number")


def normalise_time(value: object) -> str:
    """A timestamp as ISO 8601 UTC to the second; a time without a zone is taken as UTC."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        moment = _parse_time(value.strip())
    else:
        raise ValueError(f"created_at {value!r} is not a time")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str) -> datetime:
    try:
        return datetime.strptime(text, CLASSIC_TIME_FORMAT)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"created_at {text!r} is neither ISO 8601 nor like 'Wed Oct 10 20:19:24 +0000 2018'") from None


def newest_first(posts: Iterable[Post]) -> list[Post]:
    """Unique by id (a later post replaces an earlier one with the same id), largest id first."""
    by_id = {post.id: post for post in posts}
    return sorted(by_id.values(), key=lambda post: int(post.id), reverse=True)


def merge_posts(old: Iterable[Post], new: Iterable[Post]) -> list[Post]:
    """Old and new together, unique by id (the new version wins), newest first."""
    return newest_first([*old, *new])


def read_posts(path: Path) -> list[Post]:
    """The posts of a store written by `write_posts`, newest first; a malformed line is a UserError."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} not found: run `dvc repro fetch` first")
    posts = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                posts.append(_post_from_line(line))
            except ValueError as error:
                raise UserError(f"{path}:{number}: {error}: delete {path} and fetch again") from None
    return newest_first(posts)


def _post_from_line(line: str) -> Post:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(record, dict) or set(record) != set(FIELDS):
        raise ValueError(f"expected an object with exactly the keys {', '.join(FIELDS)}")
    for flag in ("is_retweet", "is_reply"):
        if not isinstance(record[flag], bool):
            raise ValueError(f"{flag} is {record[flag]!r}, expected true or false")
    if not isinstance(record["id"], str):
        raise ValueError(f"id {record['id']!r} must be a string")
    return make_post(
        id=record["id"],
        created_at=record["created_at"],
        text=record["text"],
        source=str(record["source"]),
        retweet=record["is_retweet"],
        reply=record["is_reply"],
    )


def write_posts(path: Path, posts: Iterable[Post]) -> None:
    """Replace the store at `path` with `posts`, unique by id and newest first, atomically.

    The file is written beside its destination and renamed over it, so a reader (or a kill) sees either the
    old file or the new one, never half of one.
    """
    lines = "".join(json.dumps(asdict(post), ensure_ascii=False) + "\n" for post in newest_first(posts))
    atomic.write_text(Path(path), lines)
