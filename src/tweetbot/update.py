"""`tweetbot update`: new posts in, a better bot out, or nothing changes. `tweetbot rollback`: an earlier one.

An update drives the pipeline's own DVC stages; nothing is special-cased. Throughout, dvc.lock and the files
beside it (tweetbot.record) describe the live version, so a `make deploy` after any update finds nothing to do:

1. The pipeline's record is saved first (models/update/before.json, not in git). fetch runs in this process
   (the same `fetch.run` as the stage: incremental, `since_id`). Fewer than `update.min_new_posts` posts newer
   than the last update saw: "nothing to do", the fetched posts are put back to those dvc.lock names (a later
   update fetches them again), and neither dvc.lock nor the history changes. Otherwise `dvc commit fetch`.
2. The first update (no history yet) runs the delivery pipeline (`dvc repro deploy/dvc.yaml`) as params.yaml
   stands and records version 1.
3. Later ones fine-tune: `dvc repro preprocess`, then params.yaml `train.init_from` is set to the live model
   (remapped to the new vocabulary, below; `dvc add`ed, so a clone's `dvc pull` has it and `dvc repro train`
   works there too) and `train.max_steps` to `update.fine_tune_steps`, and `dvc repro train` trains. The new
   checkpoint and the live one are scored on the OLD validation posts (the split is by post id, so they are
   validation posts for both). Only a model better by `update.min_improvement` nats/char goes on:
   `dvc repro deploy/dvc.yaml` (export, image, deploy) and a `promoted` line in the history.
4. Otherwise a `not_promoted` line, the service keeps its task definition, and the saved record is put back
   with the data and models it names (`dvc checkout`): the rejected model, and the posts it was tuned on, are
   nowhere a `make deploy` could find them. The next update fetches those posts again and counts them as
   seen: it runs once `update.min_new_posts` more have arrived.

Each promoted version's record is kept in models/versions/N.json (in git). `tweetbot rollback N` puts back
version N's record for every stage but deploy (data, model, bundle and image come from the DVC cache or remote:
no retraining) and runs the deploy stage, so dvc.lock and build/deploy.json describe the live service again.

The vocabulary is rebuilt by preprocess from the new data: it may gain characters and its order (by frequency)
may change. The live checkpoint is remapped by character: each known character keeps its embedding row and
output column; a NEW character starts as a copy of the unknown symbol's (the live model saw it as UNK), and
fine-tuning teaches it apart. So the embedding and the head grow; nothing the live model learned is lost.

Killed half-way, a re-run redoes what is missing: the posts are on disk, DVC skips stages that finished, a
killed training resumes from its last checkpoint, deploying is idempotent, and the history line is written
last, so the new posts still count as new until it is. The record saved before the killed run is kept until
then too (unless the history changed meanwhile, by a rollback say), so a rejection after a re-run still puts
back the live version, not the killed run's.

The live model's checkpoint and vocabulary come from the DVC cache by the hashes its history line records
(dvc.lock names them, so `dvc pull` brings them), so they are never retrained.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path

import numpy as np
import yaml

from tweetbot import atomic, corpus, history, params, record
from tweetbot.params import UpdateParams
from tweetbot.posts import read_posts
from tweetbot.record import dvc
from tweetbot.runtime.errors import UserError
from tweetbot.runtime.vocab import SPECIALS, UNK, Vocab

RAW = Path("data/raw/tweets.jsonl")
PROCESSED = Path("data/processed")
BEST = Path("models/checkpoints/best.msgpack")
VOCAB = PROCESSED / "vocab.json"
EXPORT_MANIFEST = Path("models/export/manifest.json")
IMAGE_RECORD = Path("build/image.json")
DEPLOY_RECORD = Path("build/deploy.json")
INIT = Path("models/init.msgpack")  # the fine-tune's start, `dvc add`ed: params.yaml names it after a fine-tune
VERSIONS = Path("models/versions")  # N.json: version N's record (tweetbot.record), what a rollback puts back
BEFORE = Path("models/update/before.json")  # not in git: the record before this update, until it ends


def update(p: UpdateParams, say=print) -> str:
    """Run one update; returns what happened: "nothing", "promoted" or "not_promoted"."""
    from tweetbot import fetch

    rows = history.read()
    before = record_before_update()
    fetch.run(params.load("fetch"), RAW)
    posts = read_posts(RAW)
    seen = int(rows[-1]["newest_post_id"]) if rows else -1
    new_posts = sum(int(post.id) > seen for post in posts)
    if rows and new_posts < p.min_new_posts:
        record.restore(before)
        BEFORE.unlink()
        say(f"nothing to do: {new_posts} new post(s), update.min_new_posts is {p.min_new_posts}")
        return "nothing"
    dvc("commit", "--force", "fetch")
    row = {"time": _now(), "newest_post_id": max((post.id for post in posts), key=int), "new_posts": new_posts}

    live = history.live(rows)
    if live is None:
        say("no version yet: running the whole pipeline")
        dvc("repro", "evaluate")  # the experiment pipeline's end: the promoted model's evaluation in dvc.lock too
        dvc("repro", str(record.DELIVERY))
        return _promote(rows, row, say)

    dvc("repro", "preprocess")
    live_checkpoint, live_vocab = (
        _from_cache(live["checkpoint_md5"]),
        Vocab.from_json(json.loads(_from_cache(live["vocab_md5"]).read_text())),
    )
    remap_checkpoint(live_checkpoint, live_vocab, Vocab.load(VOCAB), INIT)
    dvc("add", str(INIT))
    set_train_params(init_from=str(INIT), max_steps=p.fine_tune_steps)
    dvc("repro", "train")

    old_val = old_validation_texts(int(live["newest_post_id"]))
    row["val_loss"] = validation_loss(BEST, Vocab.load(VOCAB), old_val)
    row["live_val_loss"] = validation_loss(live_checkpoint, live_vocab, old_val)
    say(f"on {len(old_val)} old validation posts: new {row['val_loss']:.4f}, live {row['live_val_loss']:.4f} nats/char")
    if row["val_loss"] < row["live_val_loss"] - p.min_improvement:
        dvc("repro", "evaluate")  # the experiment pipeline's end: the promoted model's evaluation in dvc.lock too
        dvc("repro", str(record.DELIVERY))
        return _promote(rows, row, say)
    record.restore(before)
    history.append({**row, "event": "not_promoted", "version": None, "from_version": live["version"]})
    BEFORE.unlink()
    say(f"not promoted: version {live['version']} stays live, and dvc.lock names it again")
    return "not_promoted"


def record_before_update() -> record.Snapshot:
    """The pipeline's record as this update found it: what a rejection, or "nothing to do", puts back.

    Saved once per update and kept until it ends, so the re-run of a killed update puts back the record from
    before it, not the killed run's. It holds only while the history is unchanged: after a rollback or another
    update in between, the workspace is another version's, and the record is taken afresh.
    """
    stamp = hashlib.sha256(history.HISTORY.read_bytes() if history.HISTORY.exists() else b"").hexdigest()
    if BEFORE.exists():
        saved = json.loads(BEFORE.read_text())
        if saved["history"] == stamp:
            return saved["record"]
    snapshot = record.snapshot()
    atomic.write_text(BEFORE, json.dumps({"history": stamp, "record": snapshot}))
    return snapshot


def _promote(rows: list[dict], row: dict, say) -> str:
    lock = yaml.safe_load(record.LOCK.read_text())["stages"]
    deployed = json.loads(DEPLOY_RECORD.read_text())
    row |= {
        "event": "promoted",
        "version": history.next_version(rows),
        "bundle": json.loads(EXPORT_MANIFEST.read_text())["version"],
        "image_tag": json.loads(IMAGE_RECORD.read_text())["tag"],
        "image": deployed["image"],
        "task_definition": deployed["task_definition"],
        "checkpoint_md5": _out_md5(lock, "train", str(BEST)),
        "vocab_md5": _out_md5(lock, "preprocess", str(VOCAB)),
    }
    if "val_loss" not in row:
        row["val_loss"] = json.loads(Path("dvclive/metrics.json").read_text())["val_loss"]
    atomic.write_text(_version_file(row["version"]), json.dumps(record.snapshot(), indent=1, sort_keys=True))
    history.append(row)
    BEFORE.unlink(missing_ok=True)
    say(f"promoted: version {row['version']} is live ({history.revision(row['task_definition'])})")
    return "promoted"


def rollback(number: int, say=print) -> dict | None:
    """Make version `number` live again: its record back for every stage but deploy, then the deploy stage."""
    rows = history.read()
    target = history.version(rows, number)
    if history.live(rows)["version"] == number:
        say(f"version {number} is already live")
        return None
    if not _version_file(number).exists():
        raise UserError(f"{_version_file(number)} is missing: version {number}'s record is needed to roll back to it")
    current = record.snapshot()
    saved = json.loads(_version_file(number).read_text())
    record.restore(record.keeping(saved, current, stages=("deploy",), sections=("deploy", "update")))
    try:
        dvc("repro", "--single-item", f"{record.DELIVERY}:deploy")
    except UserError:
        record.restore(current)  # the service still runs the current version: the circuit breaker rolls back
        raise
    deployed = json.loads(DEPLOY_RECORD.read_text())
    row = {key: target[key] for key in ("version", "bundle", "image_tag")}
    row |= {key: deployed[key] for key in ("image", "task_definition")}
    row |= {"event": "rollback", "time": _now(), "newest_post_id": rows[-1]["newest_post_id"], "new_posts": 0}
    history.append(row)
    say(f"version {number} is live again ({history.revision(row['task_definition'])})")
    return row


def _version_file(number: int) -> Path:
    return VERSIONS / f"{number}.json"


def remap_checkpoint(source: Path, old: Vocab, new: Vocab, out: Path) -> None:
    """The checkpoint `source` (vocabulary `old`) with embedding and head rows in the order of `new`."""
    from tweetbot import checkpoint

    record = checkpoint.read(source)
    weights = record["params"]
    rows = [_old_id(old, new, i) for i in range(len(new))]  # for each new id, the old row it starts from
    weights["embed"]["embedding"] = np.asarray(weights["embed"]["embedding"])[rows]
    weights["head"]["kernel"] = np.asarray(weights["head"]["kernel"])[:, rows]
    weights["head"]["bias"] = np.asarray(weights["head"]["bias"])[rows]
    meta = record["meta"]
    meta["model"]["vocab_size"] = meta["vocab_size"] = len(new)
    out.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.save(out, {k: v for k, v in meta.items() if k != "format"}, weights)


def _old_id(old: Vocab, new: Vocab, new_id: int) -> int:
    if new_id < len(SPECIALS):
        return new_id
    return old.index.get(new.chars[new_id - len(SPECIALS)], UNK)


def old_validation_texts(newest_post_id: int) -> list[str]:
    """The cleaned validation posts the live model's data already held (ids up to its newest post)."""
    p = params.load("preprocess")
    texts, _ = corpus.clean_posts(read_posts(RAW), p)
    _, val = corpus.split(texts, p.seed, p.val_fraction)
    return [text for post_id, text in val.items() if int(post_id) <= newest_post_id]


def validation_loss(checkpoint_path: Path, vocab: Vocab, texts: list[str]) -> float:
    """Mean loss (nats/char) of a checkpoint on `texts`, scored as the train stage scores its val split."""
    from tweetbot.checkpoint import load_checkpoint
    from tweetbot.input_pipeline import eval_lanes
    from tweetbot.train import make_evaluate

    model, variables, meta = load_checkpoint(checkpoint_path)
    train_params = meta["train_params"]
    ids = corpus.encode(texts, vocab).astype(np.int32)
    lanes = eval_lanes(ids, train_params["batch_size"], train_params["seq_length"])
    return float(make_evaluate(model)(variables["params"], *lanes.all_windows()))


def set_train_params(**values) -> None:
    """Set keys of params.yaml `train:` in place, keeping its comments."""
    path = params.PARAMS_FILE
    document = params.load_keeping_comments(path.read_text())
    if all(document["train"].get(key) == value for key, value in values.items()):
        return
    document["train"].update(values)
    atomic.write_text(path, params.dump_keeping_comments(document))
    params.load("train")  # still valid


def _out_md5(lock: dict, stage: str, path: str) -> str:
    return next(out["md5"] for out in lock[stage]["outs"] if out["path"] == path)


def _from_cache(md5: str) -> Path:
    cache = Path(dvc("cache", "dir").stdout.strip())
    path = cache / "files" / "md5" / md5[:2] / md5[2:]
    if not path.is_file():
        raise UserError(f"{md5} is not in the DVC cache {cache}: `dvc pull` the commit that recorded it")
    return path


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
