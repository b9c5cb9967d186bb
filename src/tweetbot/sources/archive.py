"""Posts from an X archive ("Settings > Your account > Download an archive of your data").

The archive holds the posts in `data/tweets.js`, split into `tweets-part1.js`, `tweets-part2.js`... when large
(archives from before 2020 call it `tweet.js`). Each part is a JavaScript assignment:

    window.YTD.tweets.part0 = [ {"tweet": {"id_str": "...", "created_at": "Wed Oct 10 20:19:24 +0000 2018",
        "full_text": "...", "in_reply_to_status_id_str": "...", ...}}, ... ]

We parse the JSON after the first `=` and never evaluate the script. `fetch.path` may name the archive .zip,
the folder it was unpacked into (or its data/ folder), or one part (all its sibling parts are read too).
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

from tweetbot.posts import Post, make_post
from tweetbot.runtime.errors import UserError

PART_NAME = re.compile(r"tweets?(?:-part(\d+))?\.js")  # tweets.js, tweets-part1.js, ... (not deleted-tweets.js)
FIX = "download the archive again, or point fetch.path at its data/tweets.js"


def read_archive(path: Path) -> list[Post]:
    """All posts of the archive at `path`; anything malformed is a UserError naming the file and what."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} not found: set fetch.path to your X archive (.zip, folder or tweets.js)")
    parts = _parts_in_zip(path) if zipfile.is_zipfile(path) else _parts_on_disk(path)
    return [post for name, text in parts for post in parse_part(name, text)]


def _parts_in_zip(path: Path) -> list[tuple[str, str]]:
    with zipfile.ZipFile(path) as archive:
        names = sorted(
            (name for name in archive.namelist() if PART_NAME.fullmatch(name.rsplit("/", 1)[-1])),
            key=_part_number,
        )
        if not names:
            raise UserError(f"{path} holds no data/tweets.js: is it the archive X sent you? {FIX}")
        try:
            return [(f"{path}:{name}", archive.read(name).decode("utf-8-sig")) for name in names]
        except (zipfile.BadZipFile, UnicodeDecodeError, OSError) as error:
            raise UserError(f"{path} is damaged ({error}): {FIX}") from None


def _parts_on_disk(path: Path) -> list[tuple[str, str]]:
    if path.is_dir():
        folders = [path, path / "data"]
        files = [file for folder in folders if folder.is_dir() for file in folder.iterdir()]
        files = [file for file in files if PART_NAME.fullmatch(file.name)]
        if not files:
            raise UserError(f"{path} holds no tweets.js or data/tweets.js: {FIX}")
    elif path.suffix.lower() == ".zip":
        raise UserError(f"{path} is not a valid zip file (truncated download?): {FIX}")
    elif PART_NAME.fullmatch(path.name):
        files = [file for file in path.parent.iterdir() if PART_NAME.fullmatch(file.name)]
    else:
        files = [path]
    try:
        return [(str(file), file.read_text(encoding="utf-8-sig")) for file in sorted(files, key=_part_number)]
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: a part is not UTF-8 text ({error.reason}): {FIX}") from None


def _part_number(name: str | Path) -> int:
    match = PART_NAME.fullmatch(str(name).replace("\\", "/").rsplit("/", 1)[-1])
    return int(match.group(1) or 0) if match else 0


def parse_part(name: str, text: str) -> list[Post]:
    """The posts of one part's text; `name` says where it came from in error messages."""
    prefix, equals, body = text.partition("=")
    if not equals:
        raise UserError(f"{name} has no `=`: expected `window.YTD.tweets.part0 = [...]`; {FIX}")
    try:
        items = json.loads(body)
    except json.JSONDecodeError as error:
        line = prefix.count("\n") + error.lineno
        raise UserError(f"{name} is truncated or damaged (invalid JSON at line {line}: {error.msg}): {FIX}") from None
    if not isinstance(items, list):
        raise UserError(f"{name}: expected a list `[...]` after `=`, found {type(items).__name__}; {FIX}")
    return [_post(name, number, item) for number, item in enumerate(items, start=1)]


def _post(name: str, number: int, item: object) -> Post:
    tweet = item.get("tweet", item) if isinstance(item, dict) else None  # pre-2020 archives: no "tweet" wrapper
    where = f"{name}: post {number}"
    if not isinstance(tweet, dict):
        raise UserError(f"{where} is not an object: {FIX}")
    missing = [key for key in ("id_str", "created_at", "full_text") if key not in tweet]
    if missing:
        raise UserError(f"{where} has no {', '.join(missing)}: {FIX}")
    try:
        return make_post(
            id=tweet["id_str"],
            created_at=tweet["created_at"],
            text=tweet["full_text"],
            source="archive",
            reply=bool(tweet.get("in_reply_to_status_id_str")),
        )
    except ValueError as error:
        raise UserError(f"{where}: {error}: {FIX}") from None
