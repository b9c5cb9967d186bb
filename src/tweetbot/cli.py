"""The `tweetbot` command: the tools around the pipeline (samples, the service, the deployment, updates).

The stages themselves run through DVC (`dvc repro`, `make deploy`), whose one entry point per stage is
`stages/`. Imports are deferred to the subcommand so `tweetbot --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tweetbot.runtime.errors import UserError, exit_on_user_error
from tweetbot.runtime.sampling import TEMPERATURE, TOP_P
from tweetbot.workspace import BEST, DEPLOY_RECORD, EVALUATION, EXPORT, IMAGE, IMAGE_RECORD, PROCESSED, VOCAB

app = typer.Typer(
    help="Turn an account's posts into a deployed text-generating bot.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # a bug keeps its plain traceback; user errors are one line
    add_completion=False,
)


@app.command()
def sample(
    n: int = typer.Option(5, "--n", min=1, help="how many samples"),
    prime: str = typer.Option("", help="the text every sample starts with"),
    temperature: float = typer.Option(TEMPERATURE, help="lower is safer, higher is wilder; 0 is greedy"),
    top_k: int = typer.Option(0, "--top-k", help="draw only from the k likeliest characters (0: all)"),
    top_p: float = typer.Option(TOP_P, "--top-p", help="draw only from the likeliest characters of this mass"),
    seed: int = typer.Option(0, help="sample i uses seed + i: the same seed gives the same samples"),
    length: int = typer.Option(280, help="the most characters a sample writes after its prime"),
    checkpoint: Path = typer.Option(BEST, help="the trained weights"),
    vocab: Path = typer.Option(VOCAB, help="the vocabulary it was trained with"),
) -> None:
    """Print samples from the best checkpoint, each followed by an empty line."""
    import numpy as np

    from tweetbot.checkpoint import load_checkpoint
    from tweetbot.export import start_carry
    from tweetbot.runtime.sample import Sampler, SampleRequest
    from tweetbot.runtime.vocab import Vocab, render

    model, variables, _ = load_checkpoint(checkpoint)
    if not vocab.is_file():
        raise UserError(f"no vocabulary at {vocab}: run `dvc repro preprocess` or pass --vocab")
    train_tokens = vocab.with_name("train.npy")  # the posts it was trained on, beside their vocabulary
    start = start_carry(model, variables, np.load(train_tokens)) if train_tokens.is_file() else None
    sampler = Sampler(model, variables, Vocab.load(vocab), start)
    requests = [SampleRequest(prime, temperature, top_k, top_p, length, seed + i) for i in range(n)]
    for text in sampler.generate(requests):
        typer.echo(render(prime + text) + "\n")  # link and mention tokens as people read them


@app.command()
def serve(
    bundle: Path = typer.Option(None, help=f"the bundle (default: $TWEETBOT_BUNDLE, else {EXPORT})"),
    host: str = typer.Option("127.0.0.1", help="the address to listen on (0.0.0.0: every interface)"),
    port: int = typer.Option(None, help="the port (default: $PORT, else 8080)"),
) -> None:
    """Serve the bundle over HTTP (service/): GET / answers {"text": ...}; the page is at /app."""
    import dataclasses

    import uvicorn

    from service.app import create_app
    from service.settings import Settings
    from tweetbot.runtime import bundle as bundles

    settings = Settings.from_env()
    settings = dataclasses.replace(settings, bundle=bundle or settings.bundle, port=port or settings.port)
    bundles.load(settings.bundle)  # a missing or broken bundle is one line here, not a start-up traceback
    typer.echo(f"serving {settings.bundle} on http://{host}:{settings.port}/ (the page: /app)")
    uvicorn.run(create_app(settings), host=host, port=settings.port, log_config=None)


@app.command()
def summary(
    processed: Path = typer.Option(PROCESSED, help="the folder preprocess wrote"),
    bundle: Path = typer.Option(EXPORT, help="the bundle export wrote (shown when it exists)"),
    evaluation: Path = typer.Option(EVALUATION, help="the folder evaluate wrote (shown when it exists)"),
) -> None:
    """Print what the pipeline has produced so far: the data (later stages add their own sections)."""
    from tweetbot import corpus

    if not (processed / corpus.STATS_FILE).exists():
        raise UserError(f"{processed} holds no processed data yet: run `dvc repro` first")
    sections = [corpus.summary(processed)]  # each later stage appends its section here
    if (bundle / "manifest.json").exists():
        from tweetbot import export as exporting

        sections.append(exporting.summary(bundle))
    if (evaluation / "metrics.json").exists():
        from tweetbot import evaluate

        sections.append(evaluate.summary(evaluation))
        standing = evaluate.posts_needed_summary(json.loads((processed / corpus.STATS_FILE).read_text())["train_posts"])
        if standing:
            sections.append(standing)
    typer.echo("\n\n".join(sections))


@app.command()
def plan(
    layout: Path = typer.Option(IMAGE, help="the image as an OCI layout"),
    image: Path = typer.Option(IMAGE_RECORD, help="the image record"),
    out: Path = typer.Option(DEPLOY_RECORD, help="the deployment record to write"),
) -> None:
    """Print what the deploy stage (`make deploy`) would change on AWS for params.yaml `deploy:`; change nothing."""
    from deploy import run
    from tweetbot import params

    if not image.is_file():
        raise UserError(f"no image record at {image}: build the image first, `dvc repro deploy/dvc.yaml:image`")
    run.deploy(params.load("deploy"), layout, image, out, apply=False)


@app.command()
def destroy(
    yes: bool = typer.Option(False, "--yes", help="do not ask first (CI)"),
    out: Path = typer.Option(DEPLOY_RECORD, help="the deployment record, removed too"),
) -> None:
    """Remove everything `deploy` created: service, autoscaling, load balancer, security groups, cluster, images..."""
    from deploy import run
    from tweetbot import params

    settings = params.load("deploy")
    if not run.destroy(settings, out, apply=False):
        typer.echo("nothing to remove")
        return
    if not yes and not typer.confirm("Remove all of the above?", default=False):
        raise typer.Exit(1)
    run.destroy(settings, out)


@app.command()
def update() -> None:
    """Fetch new posts; fine-tune, and deploy the result only if it beats the live model (`update:`)."""
    from tweetbot import params
    from tweetbot import update as updating

    updating.update(params.load("update"))


@app.command()
def history() -> None:
    """Print every update: versions promoted, fine-tunes not promoted, rollbacks (models/history.jsonl)."""
    from tweetbot import history as versions

    rows = versions.read()
    typer.echo(versions.table(rows) if rows else "no versions yet: run `tweetbot update`")


@app.command()
def rollback(version: int = typer.Argument(..., help="the version to make live again (`tweetbot history`)")) -> None:
    """Make an earlier version live again: its data, model and image from the DVC cache, no retraining."""
    from tweetbot.rollback import rollback as roll_back

    roll_back(version)


def main() -> None:
    exit_on_user_error(app)()


__all__ = ["app", "main", "UserError"]
