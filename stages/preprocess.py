"""DVC stage `preprocess`: clean the fetched posts, split them, build the vocabulary, encode.

    python stages/preprocess.py data/raw/tweets.jsonl data/processed

Reads the `preprocess:` section of params.yaml; writes train.npy, val.npy, vocab.json and stats.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tweetbot import corpus, params
from tweetbot.runtime.errors import exit_on_user_error


@exit_on_user_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", type=Path, help="the posts fetched (JSON lines)")
    parser.add_argument("out", type=Path, help="the folder for the encoded splits, vocabulary and stats")
    args = parser.parse_args()
    corpus.run(params.load("preprocess"), args.raw, args.out)


if __name__ == "__main__":
    main()
