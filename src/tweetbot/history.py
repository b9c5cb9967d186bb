"""The versions file: one JSON line per update run, in git (`models/history.jsonl`), printed as a table.

Each line is an event: `promoted` (a new version went live), `not_promoted` (a fine-tune that did not beat the
live model: recorded, never deployed) or `rollback` (an earlier version went live again). A promoted line holds
the bundle version, the image tag, the task definition, and the DVC cache hashes of the checkpoint and
vocabulary (what a fine-tune starts from); models/versions/N.json holds what a rollback puts back. Every line
holds the newest post of each id space then (`seen`), which the next update counts new posts from. The file is
rewritten atomically on every append, so a kill leaves either the old file or the new one.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path

from tweetbot import atomic
from tweetbot.runtime.errors import UserError

HISTORY = Path("models/history.jsonl")
LIVE_EVENTS = ("promoted", "rollback")


def read(path: Path = HISTORY) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def append(row: dict, path: Path = HISTORY) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    atomic.write_text(path, old + json.dumps(row, sort_keys=True) + "\n")


def fingerprint(path: Path = HISTORY) -> str:
    """A hash of the whole history: it changes with every line."""
    return hashlib.sha256(path.read_bytes() if path.exists() else b"").hexdigest()


def live(rows: list[dict]) -> dict | None:
    """The version the service runs: that of the last promotion or rollback."""
    events = [row for row in rows if row["event"] in LIVE_EVENTS]
    return version(rows, events[-1]["version"]) if events else None


def version(rows: list[dict], number: int) -> dict:
    for row in rows:
        if row["event"] == "promoted" and row["version"] == number:
            return row
    known = ", ".join(str(row["version"]) for row in rows if row["event"] == "promoted") or "none yet"
    raise UserError(f"no version {number} in {HISTORY} (versions: {known}): see `tweetbot history`")


def seen(row: dict) -> dict[str, str]:
    """The newest post id of each id space (tweetbot.posts.newest_ids) when line `row` was written: an update counts
    its new posts from the last line's. A line written before ids had spaces names only its newest post, an X one."""
    return row.get("newest_ids") or {"x": row["newest_post_id"]}


def now() -> str:
    """A line's `time`: UTC, to the second."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def deployment(image: dict, deployed: dict) -> dict:
    """What a line records of a deployment, from the image and deploy stages' records (build/*.json)."""
    return {
        "bundle": image["model_version"],
        "image_tag": image["tag"],
        "image": deployed["image"],
        "task_definition": deployed["task_definition"],
    }


def next_version(rows: list[dict]) -> int:
    return 1 + max((row["version"] for row in rows if row["event"] == "promoted"), default=0)


COLUMNS = (
    "version",
    "event",
    "time",
    "newest_post_id",
    "new_posts",
    "val_loss",
    "live_val_loss",
    "bundle",
    "image_tag",
    "task_definition",
)


def revision(task_definition_arn: str) -> str:
    """ "family:3" from a task definition ARN, as the history shows it."""
    return task_definition_arn.rsplit("/", 1)[-1]


def table(rows: list[dict]) -> str:
    """The history as a plain-text table, oldest first; the live version is marked with *."""
    current = live(rows)
    cells = [list(COLUMNS)]
    for row in rows:
        values = [_cell(row.get(column)) for column in COLUMNS]
        values[0] = f"{row['version']}{'*' if row is current else ''}" if row.get("version") else "-"
        values[COLUMNS.index("task_definition")] = revision(row.get("task_definition") or "-")
        cells.append(values)
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in cells
    )


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
