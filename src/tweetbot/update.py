"""`tweetbot update`: new posts in, a better bot out, or nothing changes. `tweetbot rollback`: an earlier one.

An update drives the pipeline's own DVC stages; nothing is special-cased:

1. fetch runs in this process (the same `fetch.run` as the stage: incremental, `since_id`) and, only if at
   least `update.min_new_posts` posts are newer than the last update saw, is recorded with `dvc commit fetch`.
   Fewer: "nothing to do", and neither dvc.lock nor the history changes.
2. The first update (no history yet) runs `dvc repro deploy` as params.yaml stands and records version 1.
3. Later ones fine-tune: `dvc repro preprocess`, then params.yaml `train.init_from` is set to the live model
   (remapped to the new vocabulary, below; `dvc add`ed, so a clone's `dvc pull` has it and `dvc repro train`
   works there too) and `train.max_steps` to `update.fine_tune_steps`, and `dvc repro train` trains. The new
   checkpoint and the live one are scored on the OLD validation posts (the split is by post id, so they are
   validation posts for both). Only a model better by `update.min_improvement` nats/char goes on:
   `dvc repro deploy` (export, image, deploy) and a `promoted` line in the history.
4. Otherwise a `not_promoted` line, the service keeps its task definition, and the pipeline's record of the
   model goes back to the live one: params.yaml, the init checkpoint, the train entry of dvc.lock and its
   outputs, as they were before the fine-tune (saved in models/update/ first). The new posts and their
   preprocessing stay. So no later `make deploy` can ship the rejected model: the export entry and the bundle
   were never touched, and the train entry again names the live checkpoint. (Such a `make deploy` would see
   train out of date with the new posts and train again as params.yaml says, without this gate: keep the bot
   fresh with `tweetbot update` only.)

The vocabulary is rebuilt by preprocess from the new data: it may gain characters and its order (by frequency)
may change. The live checkpoint is remapped by character: each known character keeps its embedding row and
output column; a NEW character starts as a copy of the unknown symbol's (the live model saw it as UNK), and
fine-tuning teaches it apart. So the embedding and the head grow; nothing the live model learned is lost.

Killed half-way, a re-run redoes what is missing: the posts are on disk, DVC skips stages that finished, a
killed training resumes from its last checkpoint, deploying is idempotent, and the history line is written
last, so the new posts still count as new until it is. The live model's record saved before the fine-tune is
kept until then too, so a rejection after a re-run still puts back the live model, not the killed run's.

The live model's checkpoint and vocabulary come from the DVC cache by the hashes its history line records
(the remote's copy needs `dvc pull` of the commit that recorded it), so they are never retrained.
"""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from tweetbot import atomic, corpus, history, params
from tweetbot.errors import UserError
from tweetbot.params import UpdateParams
from tweetbot.posts import read_posts
from tweetbot.vocab import SPECIALS, UNK, Vocab

RAW = Path("data/raw/tweets.jsonl")
PROCESSED = Path("data/processed")
BEST = Path("models/checkpoints/best.msgpack")
VOCAB = PROCESSED / "vocab.json"
EXPORT_MANIFEST = Path("models/export/manifest.json")
IMAGE_RECORD = Path("build/image.json")
DEPLOY_RECORD = Path("build/deploy.json")
LOCK = Path("dvc.lock")
DVCLIVE = Path("dvclive")  # the train stage's metrics and curves (in git, not in the DVC cache)
INIT = Path("models/init.msgpack")  # the fine-tune's start, `dvc add`ed: params.yaml names it after a fine-tune
INIT_RECORD = INIT.with_name(INIT.name + ".dvc")
LIVE_RECORD = Path("models/update/live.json")  # not in git: what a rejection puts back, until the update ends


def update(p: UpdateParams, say=print) -> str:
    """Run one update; returns what happened: "nothing", "promoted" or "not_promoted"."""
    from tweetbot import fetch

    rows = history.read()
    fetch.run(params.load("fetch"), RAW)
    posts = read_posts(RAW)
    seen = int(rows[-1]["newest_post_id"]) if rows else -1
    new_posts = sum(int(post.id) > seen for post in posts)
    if rows and new_posts < p.min_new_posts:
        say(f"nothing to do: {new_posts} new post(s), update.min_new_posts is {p.min_new_posts}")
        return "nothing"
    dvc("commit", "--force", "fetch")
    row = {"time": _now(), "newest_post_id": max((post.id for post in posts), key=int), "new_posts": new_posts}

    live = history.live(rows)
    if live is None:
        say("no version yet: running the whole pipeline")
        dvc("repro", "deploy")
        return _promote(rows, row)

    dvc("repro", "preprocess")
    live_checkpoint, live_vocab = (
        _from_cache(live["checkpoint_md5"]),
        Vocab.from_json(json.loads(_from_cache(live["vocab_md5"]).read_text())),
    )
    live_record = save_live_record()
    remap_checkpoint(live_checkpoint, live_vocab, Vocab.load(VOCAB), INIT)
    dvc("add", str(INIT))
    set_train_params(init_from=str(INIT), max_steps=p.fine_tune_steps)
    dvc("repro", "train")

    old_val = old_validation_texts(int(live["newest_post_id"]))
    row["val_loss"] = validation_loss(BEST, Vocab.load(VOCAB), old_val)
    row["live_val_loss"] = validation_loss(live_checkpoint, live_vocab, old_val)
    say(f"on {len(old_val)} old validation posts: new {row['val_loss']:.4f}, live {row['live_val_loss']:.4f} nats/char")
    if row["val_loss"] < row["live_val_loss"] - p.min_improvement:
        dvc("repro", "deploy")
        return _promote(rows, row)
    restore_live_record(live_record)
    history.append({**row, "event": "not_promoted", "version": None, "from_version": live["version"]})
    LIVE_RECORD.unlink()
    say(f"not promoted: version {live['version']} stays live, and dvc.lock names it again")
    return "not_promoted"


def save_live_record() -> dict:
    """Save what a rejected fine-tune changes: params.yaml, the init record, dvclive/, dvc.lock's train entry.

    Saved once per update: after a kill, the re-run finds the live model's record, not the killed run's.
    """
    if LIVE_RECORD.exists():
        return json.loads(LIVE_RECORD.read_text())
    record = {
        "files": {str(path): path.read_text() for path in _recorded_files()},
        "train": yaml.safe_load(LOCK.read_text())["stages"]["train"],
    }
    atomic.write_text(LIVE_RECORD, json.dumps(record))
    return record


def restore_live_record(record: dict) -> None:
    """Put params.yaml, the init checkpoint, dvc.lock's train entry and its outputs back as `record` has them."""
    for path in _recorded_files():
        if str(path) not in record["files"]:
            path.unlink()
    for name, text in record["files"].items():
        atomic.write_text(Path(name), text)
    lock = yaml.safe_load(LOCK.read_text())
    lock["stages"]["train"] = record["train"]
    atomic.write_text(LOCK, yaml.safe_dump(lock, sort_keys=False))
    dvc("checkout", "--force", "train", *([str(INIT_RECORD)] if INIT_RECORD.exists() else []))
    if not INIT_RECORD.exists():
        INIT.unlink(missing_ok=True)


def _recorded_files() -> list[Path]:
    candidates = [params.PARAMS_FILE, INIT_RECORD, *DVCLIVE.rglob("*")]
    return sorted(path for path in candidates if path.is_file())


def _promote(rows: list[dict], row: dict) -> str:
    lock = yaml.safe_load(LOCK.read_text())["stages"]
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
    history.append(row)
    LIVE_RECORD.unlink(missing_ok=True)
    print(f"promoted: version {row['version']} is live ({row['task_definition'].rsplit('/', 1)[-1]})")
    return "promoted"


def rollback(number: int, deploy_params, say=print) -> dict:
    """Point the service back at version `number`'s task definition (its image is in ECR) and wait."""
    from deploy import rollout, run

    rows = history.read()
    target = history.version(rows, number)
    session = run.Aws(deploy_params.region, apply=True)
    named = run.names(deploy_params.name)
    ecs = session.client("ecs")
    with run.aws_errors_as_user_errors():
        ecs.update_service(cluster=named["cluster"], service=named["service"], taskDefinition=target["task_definition"])
        rollout.wait_for_rollout(ecs, named["cluster"], named["service"], deploy_params.rollout_timeout_s, say)
    row = {key: target[key] for key in ("version", "bundle", "image_tag", "image", "task_definition")}
    row |= {"event": "rollback", "time": _now(), "newest_post_id": rows[-1]["newest_post_id"], "new_posts": 0}
    history.append(row)
    say(f"version {number} is live again ({rollout.revision(target['task_definition'])})")
    return row


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
    """Set keys of params.yaml `train:` in place, keeping its comments (DVC's own YAML library)."""
    from ruamel.yaml import YAML

    yaml_rt = YAML()
    path = params.PARAMS_FILE
    document = yaml_rt.load(path.read_text())
    if all(document["train"].get(key) == value for key, value in values.items()):
        return
    document["train"].update(values)
    with path.open("w") as file:
        yaml_rt.dump(document, file)
    params.load("train")  # still valid


def _out_md5(lock: dict, stage: str, path: str) -> str:
    return next(out["md5"] for out in lock[stage]["outs"] if out["path"] == path)


def _from_cache(md5: str) -> Path:
    cache = Path(dvc("cache", "dir").stdout.strip())
    path = cache / "files" / "md5" / md5[:2] / md5[2:]
    if not path.is_file():
        raise UserError(f"{md5} is not in the DVC cache {cache}: `dvc pull` the commit that recorded it")
    return path


def dvc(*args: str) -> subprocess.CompletedProcess:
    """Run DVC with the project's venv first on PATH (the stage commands call `python`)."""
    import os

    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
    dvc_bin = shutil.which("dvc", path=bin_dir) or "dvc"
    result = subprocess.run([dvc_bin, *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        detail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or ["no output"]
        print(result.stdout, result.stderr, sep="\n", file=sys.stderr)
        raise UserError(f"`dvc {' '.join(args)}` failed: {detail[0]}")
    return result


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
