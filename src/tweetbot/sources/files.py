"""Posts from a file of your own: JSON lines, CSV, or plain text.

- `.jsonl`: one object a line with `id` (string or number), `created_at` (ISO 8601 or the classic
  `Wed Oct 10 20:19:24 +0000 2018`) and `text`; other keys are ignored, except the flags `is_retweet` and
  `is_reply` when they are true or false (so a fetched `tweets.jsonl` reads back as it was).
- `.csv`: a header row naming at least the columns `id`, `created_at` and `text`.
- `.txt`: one document, cut into posts at blank lines (paragraphs). Ids 1, 2, 3... keep the document order,
  so a book becomes a corpus of paragraphs that preprocess splits into train/val by paragraph; every post is
  dated with the file's modification time.

Without a reply flag, a post whose text starts with "@" counts as a reply: on the classic timeline a reply
starts with the handle it answers (the demo set marks its 145 replies no other way).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from tweetbot.posts import Post, make_post
from tweetbot.runtime.errors import UserError

REQUIRED = ("id", "created_at", "text")
SUFFIXES = (".jsonl", ".csv", ".txt")
PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n")


def read_file(path: Path, source: str = "file") -> list[Post]:
    """All posts of a .jsonl, .csv or .txt file, marked with `source`; a bad row is a UserError naming it."""
    path = Path(path)
    readers = {".jsonl": _read_jsonl, ".csv": _read_csv, ".txt": _read_text}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise UserError(
            f"{path}: unknown file type {path.suffix or '(no extension)'!r}: fetch.path must end in "
            f".jsonl, .csv or .txt (an X archive's tweets.js needs fetch.source: archive)"
        )
    if not path.is_file():
        raise UserError(f"{path} not found: set fetch.path in params.yaml to your file")
    try:
        return list(reader(path, source))
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not UTF-8 text (byte {error.start}): save it as UTF-8") from None


def _read_jsonl(path: Path, source: str) -> Iterator[Post]:
    with path.open(encoding="utf-8-sig") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("expected a JSON object")
                yield _post(record, source)
            except ValueError as error:
                raise UserError(f"{path}:{number}: {_short(error)}: fix or remove that line") from None


def _read_csv(path: Path, source: str) -> Iterator[Post]:
    with path.open(encoding="utf-8-sig", newline="") as file:
        rows = csv.DictReader(file)
        missing = [column for column in REQUIRED if column not in (rows.fieldnames or [])]
        if missing:
            raise UserError(
                f"{path}: the header row has no column {', '.join(missing)}: "
                f"the first row must name the columns id, created_at and text"
            )
        for row in rows:
            try:
                if None in row:  # DictReader files surplus cells under the key None
                    raise ValueError("more cells than the header has columns (quote texts holding commas)")
                yield _post(row, source)
            except ValueError as error:
                raise UserError(f"{path}:{rows.line_num}: {_short(error)}: fix or remove that row") from None


def _post(record: dict, source: str) -> Post:
    missing = [key for key in REQUIRED if record.get(key) is None]
    if missing:
        raise ValueError(f"no {', '.join(missing)}")
    text = record["text"]
    reply = record.get("is_reply")
    return make_post(
        id=record["id"],
        created_at=record["created_at"],
        text=text,
        source=source,
        retweet=record.get("is_retweet") is True,
        reply=reply if isinstance(reply, bool) else isinstance(text, str) and text.startswith("@"),
    )


def _read_text(path: Path, source: str) -> Iterator[Post]:
    modified = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
    document = path.read_text(encoding="utf-8-sig")
    paragraphs = [paragraph.strip() for paragraph in PARAGRAPH_BREAK.split(document)]
    for number, paragraph in enumerate(filter(None, paragraphs), start=1):
        yield make_post(id=number, created_at=modified, text=paragraph, source=source)


def _short(error: ValueError) -> str:
    """A JSON decoding error without its line number (the caller names the line)."""
    if isinstance(error, json.JSONDecodeError):
        return f"not valid JSON ({error.msg} at column {error.colno})"
    return str(error)
