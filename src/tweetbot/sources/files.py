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

Real exports are messy. A row without an id (missing or empty) gets one derived from its date and text, stable
from one run to the next and in time order (its Unix second, then six digits of a hash of the text). A row that
cannot be read (broken JSON, no or an unreadable date, no text) is skipped. One warning then says how many rows
were skipped and repaired, and where the first few are. A file where such rows are at least as many as good
ones is not the export it claims to be: it is refused with the first problem, as any bad row is with
`fetch.strict: true`.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from msgspec.structs import astuple

from tweetbot.posts import Post, make_post
from tweetbot.runtime.errors import UserError

SUFFIXES = (".jsonl", ".csv", ".txt")
PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n")


def read_file(path: Path, source: str = "file", strict: bool = True, say: Callable[[str], None] = print) -> list[Post]:
    """All posts of a .jsonl, .csv or .txt file, marked with `source`; bad rows as the module docstring says."""
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
    posts, skipped, repaired = [], [], []  # (line number, problem)
    try:
        for number, row in reader(path, source):
            if isinstance(row, str) or (strict and row.id == ""):
                if strict:
                    raise UserError(
                        f"{path}:{number}: {row if isinstance(row, str) else 'no id'}: fix or remove that "
                        f"{_row_word(path)}"
                    )
                skipped.append((number, row))
                continue
            if row.id == "":
                repaired.append(number)
                row = Post(content_id(row.created_at, row.text), *astuple(row)[1:])
            posts.append(row)
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not UTF-8 text (byte {error.start}): save it as UTF-8") from None
    if skipped and len(skipped) >= len(posts):
        number, problem = skipped[0]
        raise UserError(
            f"{path}:{number}: {problem}: fix or remove that {_row_word(path)} ({len(skipped):,} of "
            f"{len(skipped) + len(posts):,} {_row_word(path)}s cannot be read: is it the file you meant?)"
        )
    if skipped or repaired:
        say(_warning(path, skipped, repaired))
    return posts


def _warning(path: Path, skipped: list[tuple[int, str]], repaired: list[int]) -> str:
    word, parts = _row_word(path), []
    if skipped:
        first = ", ".join(f"{number} ({problem})" for number, problem in skipped[:3])
        parts.append(f"skipped {len(skipped):,} {word}{'s' * (len(skipped) > 1)} that cannot be read ({word} {first})")
    if repaired:
        first = ", ".join(map(str, repaired[:5]))
        parts.append(
            f"gave {len(repaired):,} {word}{'s' * (len(repaired) > 1)} without an id one derived from its text "
            f"({word} {first})"
        )
    return f"warning: {path}: {'; '.join(parts)}; fetch.strict: true refuses such a file instead"


def _row_word(path: Path) -> str:
    return "row" if path.suffix.lower() == ".csv" else "line"


def _read_jsonl(path: Path, source: str) -> Iterator[tuple[int, Post | str]]:
    """(line number, the post or what is wrong with the line) for every line that is not blank; a post without
    an id has the id "" (read_file gives it one)."""
    with path.open(encoding="utf-8-sig") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = msgspec.json.decode(line)
                if not isinstance(record, dict):
                    raise ValueError("expected a JSON object")
                yield number, _post(record, source)
            except ValueError as error:
                yield number, _short(error)


def _read_csv(path: Path, source: str) -> Iterator[tuple[int, Post | str]]:
    with path.open(encoding="utf-8-sig", newline="") as file:
        rows = csv.DictReader(file)
        missing = [column for column in ("created_at", "text") if column not in (rows.fieldnames or [])]
        if missing:
            raise UserError(
                f"{path}: the header row has no column {', '.join(missing)}: "
                f"the first row must name the columns id (optional), created_at and text"
            )
        for row in rows:
            try:
                if None in row:  # DictReader files surplus cells under the key None
                    raise ValueError("more cells than the header has columns (quote texts holding commas)")
                yield rows.line_num, _post(row, source)
            except ValueError as error:
                yield rows.line_num, _short(error)


def _post(record: dict, source: str) -> Post:
    missing = [key for key in ("created_at", "text") if record.get(key) is None]
    if missing:
        raise ValueError(f"no {', '.join(missing)}")
    text = record["text"]
    reply = record.get("is_reply")
    post = make_post(
        id=0 if record.get("id") in (None, "") else record["id"],
        created_at=record["created_at"],
        text=text,
        source=source,
        retweet=record.get("is_retweet") is True,
        reply=reply if isinstance(reply, bool) else isinstance(text, str) and text.startswith("@"),
    )
    return Post("", *astuple(post)[1:]) if record.get("id") in (None, "") else post


def content_id(created_at: str, text: str) -> str:
    """A stable id for a post without one, in time order: its Unix second, then six digits of a hash of the text."""
    second = int(datetime.fromisoformat(created_at.replace("Z", "+00:00")).timestamp())
    digits = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") % 10**6
    return f"{second}{digits:06d}"


def _read_text(path: Path, source: str) -> Iterator[tuple[int, Post]]:
    modified = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
    document = path.read_text(encoding="utf-8-sig")
    paragraphs = [paragraph.strip() for paragraph in PARAGRAPH_BREAK.split(document)]
    for number, paragraph in enumerate(filter(None, paragraphs), start=1):
        yield number, make_post(id=number, created_at=modified, text=paragraph, source=source)


def _short(error: ValueError) -> str:
    """A JSON decoding error without its line number (the caller names the line)."""
    if isinstance(error, msgspec.DecodeError):
        return f"not valid JSON ({error})"
    return str(error)
