"""`tweetbot rollback N`: version N live again, from its record (README "Keep the bot fresh"), no retraining."""

from __future__ import annotations

import json

from tweetbot import history, record
from tweetbot.dvc_cli import dvc
from tweetbot.runtime.errors import UserError
from tweetbot.workspace import DEPLOY_RECORD, IMAGE_RECORD


def rollback(number: int, say=print) -> dict | None:
    """Version `number`'s record back for every stage but deploy (its data, model, bundle and image come from the
    DVC cache or remote), then the deploy stage, so the lock files describe the live service again."""
    rows = history.read()
    history.version(rows, number)  # a known version
    if history.live(rows)["version"] == number:
        say(f"version {number} is already live")
        return None
    current = record.snapshot()
    record.restore(record.keeping(record.version(number), current, stages=("deploy",), sections=("deploy", "update")))
    try:
        dvc("repro", "--single-item", f"{record.DELIVERY}:deploy")
    except UserError:
        record.restore(current)  # the service still runs the current version: the circuit breaker rolls back
        raise
    image, deployed = (json.loads(path.read_text()) for path in (IMAGE_RECORD, DEPLOY_RECORD))
    row = {"event": "rollback", "version": number, "time": history.now(), **history.deployment(image, deployed)}
    row |= {"newest_post_id": rows[-1]["newest_post_id"], "newest_ids": history.seen(rows[-1]), "new_posts": 0}
    history.append(row)
    say(f"version {number} is live again ({history.revision(deployed['task_definition'])})")
    return row
