"""The `tweetbot` command: one subcommand per stage, plus the tools around them.

Each subcommand reads its own `params.yaml` section and calls the same library function as the stage script in
`stages/`. Imports are deferred to the subcommand so `tweetbot --help` stays fast and the service image does not
need the pipeline's dependencies.
"""

from __future__ import annotations

from pathlib import Path

import typer

from tweetbot.errors import UserError, exit_on_user_error

app = typer.Typer(
    help="Turn an account's posts into a deployed text-generating bot.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # a bug keeps its plain traceback; user errors are one line
    add_completion=False,
)

RAW = Path("data/raw/tweets.jsonl")
PROCESSED = Path("data/processed")


@app.command()
def fetch(out: Path = typer.Option(RAW, help="the JSON-lines file of posts to write or extend")) -> None:
    """Collect the account's posts from the source that params.yaml `fetch:` names."""
    from tweetbot import fetch as fetching
    from tweetbot import params

    fetching.run(params.load("fetch"), out)


@app.command()
def preprocess(
    raw: Path = typer.Option(RAW, help="the posts fetched"),
    out: Path = typer.Option(PROCESSED, help="the folder for the encoded splits and the vocabulary"),
) -> None:
    """Clean the posts, split train/val by post, build the vocabulary and encode."""
    from tweetbot import corpus, params

    corpus.run(params.load("preprocess"), raw, out)


def main() -> None:
    exit_on_user_error(app)()


__all__ = ["app", "main", "UserError"]
