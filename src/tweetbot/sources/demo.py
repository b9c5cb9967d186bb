"""The built-in demo set: 3,245 public-domain tweets of @NASA in data/demo/ (see data/demo/SOURCE.md).

It is the default source, so the pipeline runs with no credentials and no network. The path is relative to
the repository root, where dvc and the `tweetbot` command run (as params.yaml is).
"""

from __future__ import annotations

from pathlib import Path

from tweetbot.posts import Post
from tweetbot.runtime.errors import UserError
from tweetbot.sources.files import read_file

DEMO_FILE = Path("data/demo/nasa_tweets.jsonl")


def read_demo(path: Path = DEMO_FILE) -> list[Post]:
    """The demo posts, read as a JSON-lines file and marked `"source": "demo"`."""
    if not path.is_file():
        raise UserError(f"{path} not found: run from the repository root (where params.yaml is)")
    return read_file(path, source="demo")
