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
EXPORT = Path("models/export")


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


@app.command()
def train(
    data: Path = typer.Option(PROCESSED, help="the folder of train.npy, val.npy and vocab.json"),
    checkpoints: Path = typer.Option(Path("models/checkpoints"), help="the folder for best and last checkpoints"),
    live: Path = typer.Option(Path("dvclive"), help="DVCLive's folder for metrics and loss curves"),
) -> None:
    """Train the character RNN of params.yaml `train:`; a killed run resumes from its last checkpoint."""
    from tweetbot import params
    from tweetbot import train as training

    training.run(params.load("train"), data, checkpoints, live)


@app.command()
def sample(
    n: int = typer.Option(5, "--n", min=1, help="how many samples"),
    prime: str = typer.Option("", help="the text every sample starts with"),
    temperature: float = typer.Option(1.0, help="lower is safer, higher is wilder; 0 is greedy"),
    top_k: int = typer.Option(0, "--top-k", help="draw only from the k likeliest characters (0: all)"),
    top_p: float = typer.Option(1.0, "--top-p", help="draw only from the likeliest characters of this mass"),
    seed: int = typer.Option(0, help="sample i uses seed + i: the same seed gives the same samples"),
    length: int = typer.Option(280, help="the most characters a sample writes after its prime"),
    checkpoint: Path = typer.Option(Path("models/checkpoints/best.msgpack"), help="the trained weights"),
    vocab: Path = typer.Option(PROCESSED / "vocab.json", help="the vocabulary it was trained with"),
) -> None:
    """Print samples from the best checkpoint, each followed by an empty line."""
    from tweetbot.checkpoint import load_checkpoint
    from tweetbot.sample import Sampler, SampleRequest
    from tweetbot.vocab import Vocab, render

    model, variables, _ = load_checkpoint(checkpoint)
    if not vocab.is_file():
        raise UserError(f"no vocabulary at {vocab}: run `dvc repro preprocess` or pass --vocab")
    sampler = Sampler(model, variables, Vocab.load(vocab))
    requests = [SampleRequest(prime, temperature, top_k, top_p, length, seed + i) for i in range(n)]
    for text in sampler.generate(requests):
        typer.echo(render(prime + text) + "\n")  # link and mention tokens as people read them


@app.command()
def export(
    checkpoint: Path = typer.Option(Path("models/checkpoints/best.msgpack"), help="the best checkpoint"),
    processed: Path = typer.Option(PROCESSED, help="the folder of vocab.json and train.npy"),
    out: Path = typer.Option(EXPORT, help="the bundle folder to write"),
) -> None:
    """Pack the best checkpoint into the service's bundle, if it beats the unigram baseline (`export:`)."""
    from tweetbot import export as exporting
    from tweetbot import params

    manifest = exporting.run(params.load("export"), checkpoint, processed, out)
    typer.echo(f"exported model {manifest['version']} to {out}")


@app.command()
def serve(
    bundle: Path = typer.Option(None, help="the bundle (default: $TWEETBOT_BUNDLE, else models/export)"),
    host: str = typer.Option("127.0.0.1", help="the address to listen on (0.0.0.0: every interface)"),
    port: int = typer.Option(None, help="the port (default: $PORT, else 8080)"),
) -> None:
    """Serve the bundle over HTTP (service/): GET / answers {"text": ...}; the page is at /app."""
    import dataclasses

    import uvicorn

    from service.app import create_app
    from service.settings import Settings
    from tweetbot import bundle as bundles

    settings = Settings.from_env()
    settings = dataclasses.replace(settings, bundle=bundle or settings.bundle, port=port or settings.port)
    bundles.load(settings.bundle)  # a missing or broken bundle is one line here, not a start-up traceback
    typer.echo(f"serving {settings.bundle} on http://{host}:{settings.port}/ (the page: /app)")
    uvicorn.run(create_app(settings), host=host, port=settings.port, log_config=None)


@app.command()
def summary(processed: Path = typer.Option(PROCESSED, help="the folder preprocess wrote")) -> None:
    """Print what the pipeline has produced so far: the data (later stages add their own sections)."""
    from tweetbot import corpus

    if not (processed / corpus.STATS_FILE).exists():
        raise UserError(f"{processed} holds no processed data yet: run `dvc repro` first")
    sections = [corpus.summary(processed)]  # each later stage appends its section here
    if (EXPORT / "manifest.json").exists():
        from tweetbot import export as exporting

        sections.append(exporting.summary(EXPORT))
    typer.echo("\n\n".join(sections))


@app.command()
def deploy(
    plan: bool = typer.Option(False, "--plan", help="print what would change and change nothing"),
    layout: Path = typer.Option(Path("build/image"), help="the image as an OCI layout"),
    image: Path = typer.Option(Path("build/image.json"), help="the image record"),
    out: Path = typer.Option(Path("build/deploy.json"), help="the deployment record to write"),
) -> None:
    """Push the image to ECR and roll it out on ECS Fargate (params.yaml `deploy:`); `dvc repro` runs this."""
    from deploy import run
    from tweetbot import params

    run.deploy(params.load("deploy"), layout, image, out, apply=not plan)


@app.command()
def destroy(
    yes: bool = typer.Option(False, "--yes", help="do not ask first (CI)"),
    out: Path = typer.Option(Path("build/deploy.json"), help="the deployment record, removed too"),
) -> None:
    """Remove everything `deploy` created: service, autoscaling, task definitions, cluster, role, logs, images."""
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
    from tweetbot import update as updating

    updating.rollback(version)


def main() -> None:
    exit_on_user_error(app)()


__all__ = ["app", "main", "UserError"]
