"""DVC stage `fetch`: collect the account's posts from the source params.yaml `fetch:` names.

    python stages/fetch.py data/raw/tweets.jsonl

Writes (or, from the X API, extends) the JSON-lines file of posts and its state file beside it
(data/raw/tweets.state.json): see src/tweetbot/fetch.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tweetbot import fetch, params
from tweetbot.runtime.errors import exit_on_user_error


@exit_on_user_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the JSON-lines file of posts to write or extend")
    args = parser.parse_args()
    fetch.run(params.load("fetch"), args.out)


if __name__ == "__main__":
    main()
