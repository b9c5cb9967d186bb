"""`tweetbot update`: the steps of README "Keep the bot fresh", in order.

The fine-tune is a DVC experiment in a temporary workspace, so the workspace, and dvc.lock with it, stays the
live version's until the new model has won and is applied. Only the fetched posts enter the workspace first: an
experiment checks every output out as dvc.lock names it, over the files on disk, so they are committed to
dvc.lock, and the record saved before the update (tweetbot.record) puts them back unless a new version goes
live. Killed anywhere, a re-run finishes the job: the history line is written last, the saved record kept
until then.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tweetbot import checkpoint, corpus, history, params, record, train
from tweetbot.dvc_cli import cached, dvc, experiment_files, run_experiment
from tweetbot.params import UpdateParams
from tweetbot.posts import Post, newer_than, newest_ids, read_posts
from tweetbot.runtime.vocab import Vocab
from tweetbot.workspace import BEST, DEPLOY_RECORD, IMAGE_RECORD, RAW, VOCAB

INIT = Path("models/init.msgpack")  # the fine-tune's start: the live model and its vocabulary, `dvc add`ed
BEFORE = Path("models/update/before.json")  # not in git: the record before this update, until it ends
EXPERIMENT = "update"  # the fine-tune, as `dvc exp show` names it


def update(p: UpdateParams, say=print) -> str:
    """Run one update; returns what happened: "nothing", "promoted" or "not_promoted"."""
    from tweetbot import fetch

    rows, before = history.read(), record_before_update()
    fetch.run(params.load("fetch"), RAW)  # as the fetch stage runs it: incremental (since_id), merged by id
    posts = read_posts(RAW)  # newest first
    new_posts = sum(newer_than(post, history.seen(rows[-1])) for post in posts) if rows else len(posts)
    if rows and new_posts < p.min_new_posts:
        record.restore(before)  # the posts on disk go back to those dvc.lock names
        BEFORE.unlink()
        say(f"nothing to do: {new_posts} new post(s), update.min_new_posts is {p.min_new_posts}")
        return "nothing"
    dvc("commit", "--force", "fetch")
    row = {"time": history.now(), "newest_post_id": posts[0].id, "new_posts": new_posts}
    row["newest_ids"] = newest_ids(posts)  # what the next update counts its new posts from

    live = history.live(rows)
    if live is None:
        say("no version yet: running the whole pipeline")
        dvc("repro")  # the experiment pipeline, evaluate included (the delivery pipeline needs all but evaluate)
        dvc("repro", str(record.DELIVERY))
        return _promote(rows, row, say)

    live_model = cached(live["checkpoint_md5"]), Vocab.load(cached(live["vocab_md5"]))
    fine_tune(*live_model, p.fine_tune_steps)
    old_val = old_validation_posts([post for post in posts if not newer_than(post, history.seen(live))])
    with experiment_files(EXPERIMENT, BEST, VOCAB) as (new_checkpoint, new_vocab):
        row["val_loss"] = _score(new_checkpoint, Vocab.load(new_vocab), old_val)
    row["live_val_loss"] = _score(*live_model, old_val)
    say(f"on {len(old_val)} old validation posts: new {row['val_loss']:.4f}, live {row['live_val_loss']:.4f} nats/char")
    if row["val_loss"] < row["live_val_loss"] - p.min_improvement:
        dvc("exp", "apply", EXPERIMENT)
        dvc("exp", "remove", EXPERIMENT)
        dvc("repro", str(record.DELIVERY))
        return _promote(rows, row, say)
    dvc("exp", "remove", EXPERIMENT)
    record.restore(before)
    history.append({**row, "event": "not_promoted", "version": None, "from_version": live["version"]})
    BEFORE.unlink()
    say(f"not promoted: version {live['version']} stays live, and dvc.lock names it again")
    return "not_promoted"


def record_before_update() -> record.Snapshot:
    """The record this update found, kept while the history is unchanged: a killed update's re-run puts back the
    record from before it, but after a rollback, say, the record is taken afresh."""
    return record.kept(BEFORE, history.fingerprint())


def fine_tune(live_checkpoint: Path, live_vocab: Vocab, steps: int) -> None:
    """`steps` steps of training from the live model, which the train stage remaps to the new vocabulary, as
    experiment EXPERIMENT of the experiment pipeline. INIT is `dvc add`ed, so a clone can `dvc repro` it."""
    checkpoint.save_naming_vocabulary(live_checkpoint, live_vocab, INIT)
    dvc("add", str(INIT))
    settings = {"train.init_from": INIT, "train.max_steps": steps}
    run_experiment(EXPERIMENT, settings, staged=[record.LOCK, Path(f"{INIT}.dvc")])


def old_validation_posts(old: list[Post]) -> list[str]:
    """The cleaned validation posts among the live model's data: the split is by post id, so they are validation
    posts for both models."""
    p = params.load("preprocess")
    texts, _ = corpus.clean_posts(old, p)
    return list(corpus.split(texts, p.seed, p.val_fraction)[1].values())


def _score(checkpoint_path: Path, vocab: Vocab, texts: list[str]) -> float:
    return train.score(checkpoint_path, corpus.encode(texts, vocab))


def _promote(rows: list[dict], row: dict, say) -> str:
    image, deployed = (json.loads(path.read_text()) for path in (IMAGE_RECORD, DEPLOY_RECORD))
    row |= {"event": "promoted", "version": history.next_version(rows), **history.deployment(image, deployed)}
    row |= {"checkpoint_md5": _md5(BEST), "vocab_md5": _md5(VOCAB)}  # what the next fine-tune starts from
    row.setdefault("val_loss", checkpoint.read(BEST)["meta"]["val_loss"])
    record.save_version(row["version"])
    history.append(row)
    BEFORE.unlink(missing_ok=True)
    say(f"promoted: version {row['version']} is live ({history.revision(row['task_definition'])})")
    return "promoted"


def _md5(path: Path) -> str:
    """The file's hash as dvc.lock records it."""
    return hashlib.md5(path.read_bytes()).hexdigest()
